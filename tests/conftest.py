"""Test session set-up: two logical CPU devices, quiet TensorFlow, shared fixtures (helpers: `helpers.py`, `runkit.py`).

The logical devices must be configured before anything touches TensorFlow's
devices, so it happens here, at import, once per session. Tests under
`MirroredStrategy` then get two replicas on a CPU-only machine.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from kexp.engine.strategy import configure_cpu_devices  # noqa: E402
import schedule  # noqa: E402
from runkit import KILLABLE, killed_run, made_once  # noqa: E402

configure_cpu_devices(2)


@pytest.hookimpl(trylast=True)  # after `-m` deselected: the shares are of the tests that run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Orders the tests so that the xdist workers finish together instead of some waiting on a long test."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    items[:] = schedule.order(items, workers, schedule.load_seconds(Path(__file__).parent / "durations.txt"))


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    """An empty folder for run folders."""
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def killable(tmp_path):
    folder = tmp_path / "exps"
    folder.mkdir()
    (folder / "killable.py").write_text(KILLABLE)
    return {"KEXP_EXPERIMENTS_PATH": str(folder)}


@pytest.fixture(scope="session")
def killed_at_2(tmp_path_factory) -> Path:
    """A killable run killed after epoch 2's logs, before its state: made once (`made_once`); tests copy it."""
    def make(folder: Path) -> None:
        (folder / "exps").mkdir()
        (folder / "exps" / "killable.py").write_text(KILLABLE)
        killed_run(folder / "logs", {"KEXP_EXPERIMENTS_PATH": str(folder / "exps")})

    (run_dir,) = (made_once(tmp_path_factory, "killed_at_2", make) / "logs" / "killable").iterdir()
    return run_dir


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a real full disk (needs root, as CI and the dev machines have)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
