"""Finding experiments: bundled, from KEXP_EXPERIMENTS_PATH, from entry points."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from conftest import run_cli

CUSTOM = textwrap.dedent('''
    """Fits a line y = 2x + 1 with one Dense unit (a user's own experiment)."""
    import dataclasses

    from kexp.config import ExperimentConfig, TrainConfig, param


    @dataclasses.dataclass(frozen=True)
    class LineData:
        n: int = param(256, ge=8, help="examples")


    @dataclasses.dataclass(frozen=True)
    class LineModel:
        units: int = param(1, ge=1)


    CONFIG = ExperimentConfig(data=LineData(), model=LineModel(),
                              train=TrainConfig(epochs=30, learning_rate=0.05))


    def run(config, harness):
        import keras
        import numpy as np

        x = np.linspace(-1, 1, config.data.n, dtype="float32")[:, None]
        y = 2 * x + 1
        model = harness.fit(lambda: keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]),
                            (x, y), loss="mse")
        return harness.evaluate(model, (x, y))
''')


def _listing(stdout: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in stdout.splitlines())


def test_experiments_path_adds_a_users_experiment(tmp_path: Path):
    folder = tmp_path / "my_experiments"
    folder.mkdir()
    (folder / "line_fit.py").write_text(CUSTOM)
    env = {"KEXP_EXPERIMENTS_PATH": str(folder)}
    listing = run_cli("list", env=env)
    found = _listing(listing.stdout)
    assert found["line_fit"].startswith("Fits a line y = 2x + 1 with one Dense unit")
    assert "lstm_sine" in found
    bad = run_cli("run", "line_fit", "--set", "data.n=2", "--logdir", str(tmp_path / "logs"), env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "kexp: error: data.n: received 2; allowed: a value >= 8"
    proc = run_cli("run", "line_fit", "--logdir", str(tmp_path / "logs"), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1].removeprefix("run_dir: "))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["metrics"]["test_loss"] < 1e-3


def test_entry_point_group_adds_an_installed_packages_experiment(tmp_path: Path):
    # A real distribution on the path: a package module plus dist-info metadata
    # declaring the entry point, as `pip install` of such a project leaves it.
    (tmp_path / "line_pkg").mkdir()
    (tmp_path / "line_pkg" / "__init__.py").write_text("")
    (tmp_path / "line_pkg" / "line_exp.py").write_text(CUSTOM)
    dist = tmp_path / "line_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: line-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[kexp.experiments]\nline_from_ep = line_pkg.line_exp\n")
    listing = run_cli("list", env={"PYTHONPATH": str(tmp_path)})
    assert listing.returncode == 0, listing.stderr
    assert _listing(listing.stdout)["line_from_ep"].startswith("Fits a line y = 2x + 1")
    shown = run_cli("show", "line_from_ep", env={"PYTHONPATH": str(tmp_path)})
    assert "data.n = 256" in shown.stdout
