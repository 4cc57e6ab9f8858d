"""Finding experiments: bundled, from KEXP_EXPERIMENTS_PATH, from entry points.

The CLI runs in this process (`here`): what is tested is how kexp finds and
loads experiment files, not how Python starts. An entry point's distribution
goes on `sys.path` (`_on_path`) where a fresh process would get it from PYTHONPATH.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import run_cli, run_cli_here

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


@pytest.fixture
def here(tmp_path: Path):
    """`run_cli_here`, then this process is left as the test found it.

    kexp keeps a folder's experiment as `kexp.experiments.NAME` in `sys.modules`
    and puts its folder on `sys.path`; an entry point's package is imported under
    its own name. Every module imported from the test's files and every path
    added is taken out again, so the next test (in this worker) finds its own
    experiment files, not these.
    """
    path, modules = list(sys.path), set(sys.modules)
    yield run_cli_here
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]
    importlib.invalidate_caches()


def _on_path(folder: Path) -> None:
    """Puts `folder` on `sys.path` as an installation (or PYTHONPATH) would: its dist-info's entry points count.

    The `here` fixture takes it off again.
    """
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()


def test_experiments_path_adds_a_users_experiment(tmp_path: Path, here):
    folder = tmp_path / "my_experiments"
    folder.mkdir()
    (folder / "line_fit.py").write_text(CUSTOM)
    env = {"KEXP_EXPERIMENTS_PATH": str(folder)}
    listing = here("list", env=env)
    found = _listing(listing.stdout)
    assert found["line_fit"].startswith("Fits a line y = 2x + 1 with one Dense unit")
    assert "lstm_sine" in found
    bad = here("run", "line_fit", "--set", "data.n=2", "--logdir", str(tmp_path / "logs"), env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "kexp: error: data.n: received 2; allowed: a value >= 8"
    proc = here("run", "line_fit", "--logdir", str(tmp_path / "logs"), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1].removeprefix("run_dir: "))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["metrics"]["test_loss"] < 1e-3


def test_entry_point_group_adds_an_installed_packages_experiment(tmp_path: Path, here):
    # A real distribution on the path: a package module plus dist-info metadata
    # declaring the entry point, as `pip install` of such a project leaves it.
    (tmp_path / "line_pkg").mkdir()
    (tmp_path / "line_pkg" / "__init__.py").write_text("")
    (tmp_path / "line_pkg" / "line_exp.py").write_text(CUSTOM)
    dist = tmp_path / "line_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: line-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[kexp.experiments]\nline_from_ep = line_pkg.line_exp\n")
    _on_path(tmp_path)
    listing = here("list")
    assert listing.returncode == 0, listing.stderr
    assert _listing(listing.stdout)["line_from_ep"].startswith("Fits a line y = 2x + 1")
    shown = here("show", "line_from_ep")
    assert "data.n = 256" in shown.stdout


BROKEN = {
    "syntax error": ('"""Broken."""\nx = 1\ndef f(:\n    pass\n', "SyntaxError: invalid syntax (line 3)"),
    "import error": ("import no_such_module_xyz\n",
                     "ModuleNotFoundError: No module named 'no_such_module_xyz'"),
    "exception at import": ('raise RuntimeError("boom\\nsecond line")\n', "RuntimeError: boom second line"),
    "sys.exit at import": ("import sys\nsys.exit(3)\n",
                           "called sys.exit(3) at import; allowed: a module that defines CONFIG and run without exiting"),
    "no CONFIG": ("def run(config, harness):\n    return {}\n",
                  "defines no CONFIG; allowed: a module with CONFIG and run(config, harness)"),
    "no run": ("from kexp.config import ExperimentConfig\nCONFIG = ExperimentConfig(data=None, model=None)\n",
               "defines no run; allowed: a module with CONFIG and run(config, harness)"),
    "CONFIG not an ExperimentConfig": ('CONFIG = {"train": {}}\ndef run(config, harness):\n    return {}\n',
                                       "CONFIG is {'train': {}} (dict); allowed: a kexp.config.ExperimentConfig"),
    "run not callable": ("from kexp.config import ExperimentConfig\n"
                         "CONFIG = ExperimentConfig(data=None, model=None)\nrun = 5\n",
                         "run is 5 (int); allowed: a function run(config, harness)"),
}


@pytest.mark.parametrize("command", ["run", "show"])
@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_experiment_file_exits_2_with_one_line_naming_it(case, command, tmp_path: Path, here):
    source, message = BROKEN[case]
    folder = tmp_path / "my_experiments"
    folder.mkdir()
    path = folder / "bad.py"
    path.write_text(source)
    logdir = tmp_path / "logs"
    extra = ["--logdir", str(logdir)] if command == "run" else []
    proc = here(command, "bad", *extra, env={"KEXP_EXPERIMENTS_PATH": str(folder)})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"kexp: error: experiment 'bad' ({path}): {message}"
    assert not logdir.exists()
    # Listing still works and reads the docstring only.
    listing = here("list", env={"KEXP_EXPERIMENTS_PATH": str(folder)})
    assert listing.returncode == 0, listing.stderr
    assert "bad" in [line.split()[0] for line in listing.stdout.splitlines()]


def test_runs_lists_the_runs_of_an_experiment_that_exits_at_import(tmp_path: Path, here):
    # Like any experiment file that fails to import: its runs are listed, without comparisons to its defaults.
    folder = tmp_path / "my_experiments"
    folder.mkdir()
    (folder / "bad.py").write_text(BROKEN["sys.exit at import"][0])
    run_dir = tmp_path / "logs" / "bad" / "20260101-000000-abcdef"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"experiment": "bad", "run_id": run_dir.name, "status": "ok",
                                                      "metrics": {"loss": 0.5}, "config": {}}))
    proc = here("runs", "--logdir", str(tmp_path / "logs"), "--json", env={"KEXP_EXPERIMENTS_PATH": str(folder)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [entry["run_id"] for entry in json.loads(proc.stdout)] == [run_dir.name]


def test_entry_point_whose_module_is_gone_exits_2(tmp_path: Path, here):
    # Metadata left behind by an uninstalled or broken package.
    dist = tmp_path / "gone_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gone-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[kexp.experiments]\ngone = gone_pkg.gone_exp\n")
    _on_path(tmp_path)
    listing = here("list")
    assert listing.returncode == 0, listing.stderr
    assert _listing(listing.stdout)["gone"] == "(unreadable experiment entry point)"
    proc = here("show", "gone")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("kexp: error: experiment 'gone': entry point 'gone_pkg.gone_exp': "
                                   "ModuleNotFoundError: No module named 'gone_pkg'")


def _entry_point_package(root: Path, package: str, modules: dict[str, str], entry_points: str) -> None:
    (root / package).mkdir()
    (root / package / "__init__.py").write_text("")
    for name, source in modules.items():
        (root / package / f"{name}.py").write_text(source)
    dist = root / f"{package}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[kexp.experiments]\n{entry_points}\n")


RELATIVE = '''"""Imports its data from a sibling module with a relative import."""
from kexp.config import ExperimentConfig

from .signals import SLOPE

CONFIG = ExperimentConfig(data=None, model=None)


def run(config, harness):
    return {"slope": SLOPE}
'''


def test_entry_point_experiment_uses_relative_imports(tmp_path: Path, here):
    _entry_point_package(tmp_path, "rel_pkg", {"signals": "SLOPE = 2.5\n", "rel_exp": RELATIVE},
                         "rel_from_ep = rel_pkg.rel_exp")
    _on_path(tmp_path)
    shown = here("show", "rel_from_ep")
    assert shown.returncode == 0, shown.stderr[-2000:]
    proc = here("run", "rel_from_ep", "--logdir", str(tmp_path / "logs"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "slope: 2.5" in proc.stdout


def test_entry_point_naming_an_attribute_is_refused_with_a_message(tmp_path: Path, here):
    _entry_point_package(tmp_path, "attr_pkg", {"attr_exp": RELATIVE}, "attr_ep = attr_pkg.attr_exp:run")
    _on_path(tmp_path)
    proc = here("show", "attr_ep")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("kexp: error: experiment 'attr_ep': entry point 'attr_pkg.attr_exp:run': names an "
                                   "attribute; allowed: a module ('attr_pkg.attr_exp'), whose CONFIG and run make "
                                   "the experiment")


def test_experiments_path_experiment_imports_a_helper_beside_it(tmp_path: Path, here):
    folder = tmp_path / "my_experiments"
    folder.mkdir()
    (folder / "_helpers.py").write_text("SLOPE = 4.0\n")
    (folder / "uses_helper.py").write_text(RELATIVE.replace("from .signals import SLOPE", "from _helpers import SLOPE"))
    env = {"KEXP_EXPERIMENTS_PATH": str(folder)}
    assert "_helpers" not in _listing(here("list", env=env).stdout)  # a helper is not an experiment
    proc = here("run", "uses_helper", "--logdir", str(tmp_path / "logs"), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "slope: 4" in proc.stdout


def test_a_name_defined_twice_warns_once_naming_both(tmp_path: Path):
    # A fresh process: kexp warns once per process, and this pytest process may have warned already.
    folder = tmp_path / "my_experiments"
    folder.mkdir()
    (folder / "xor.py").write_text(RELATIVE)
    proc = run_cli("list", env={"KEXP_EXPERIMENTS_PATH": str(folder)})
    assert proc.returncode == 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kexp: warning: experiment 'xor' is defined twice; using ")
    assert "experiments/xor.py" in lines[0] and f"ignoring {folder / 'xor.py'}" in lines[0]


def test_bundled_experiments_import_only_the_author_api():
    """Issue 24: an experiment file imports from `kexp`'s `__all__`, `kexp.models`, `kexp.data` and the
    `kexp.study` modules `kexp.study.__all__` declares; nothing else of kexp (engine, store, cli)."""
    import ast

    import kexp
    import kexp.data
    import kexp.study
    from kexp import registry

    packages = {"kexp.models": None, "kexp.data": kexp.data.__all__, "kexp.study": kexp.study.__all__}
    found = []
    for path in sorted(registry.bundled_dir().glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("kexp"):
                continue
            names = [alias.name for alias in node.names]
            found.append(node.module)
            if node.module == "kexp":
                assert set(names) <= set(kexp.__all__), (path.name, names)
                continue
            package = next((p for p in packages if node.module == p or node.module.startswith(p + ".")), None)
            assert package is not None, f"{path.name} imports {node.module}, outside the author API"
            declared = packages[package]
            if declared is not None:
                module = node.module.removeprefix(package).lstrip(".").split(".")[0]
                assert all(n in declared for n in names) if not module else module in declared, (path.name, node.module)
    assert "kexp" in found and any(module.startswith("kexp.study") for module in found), found


def test_looking_an_experiment_up_again_parses_no_file_again(monkeypatch, tmp_path):
    """Issue 24: `kexp run` looks its experiment up several times; each file is parsed once per version."""
    import ast

    from kexp import registry

    folder = tmp_path / "exps"
    folder.mkdir()
    exp = folder / "doc_exp.py"
    exp.write_text('"""First description."""\n')
    monkeypatch.setenv("KEXP_EXPERIMENTS_PATH", str(folder))
    parsed = []
    real_parse = ast.parse
    monkeypatch.setattr(ast, "parse", lambda source, *a, **k: (parsed.append(1), real_parse(source, *a, **k))[1])
    for _ in range(4):
        assert registry.get("doc_exp").description == "First description."
    first = len(parsed)
    assert first <= len(registry.discover())  # at most once per experiment file, not once per lookup
    exp.write_text('"""Second, longer description."""\n')  # an edited file is read again
    assert registry.get("doc_exp").description == "Second, longer description."
    assert len(parsed) == first + 1


def test_store_and_config_import_no_engine_or_cli_and_modules_keep_their_size():
    """Issue 24's shape, held: kexp.store and the configs never import kexp.engine or kexp.cli (anywhere in a
    module, lazily too); no module over 400 lines, no function over 80; at most 12 modules directly in kexp/."""
    import ast

    import kexp

    root = Path(kexp.__file__).parent
    for path in [*sorted((root / "store").glob("*.py")), root / "config.py", root / "config_values.py"]:
        tree = ast.parse(path.read_text())
        imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        assert not [m for m in imported if m.startswith(("kexp.engine", "kexp.cli"))], path.name
    too_long = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 400:
            too_long.append(f"{path.relative_to(root)}: {len(text.splitlines())} lines")
        too_long += [f"{path.relative_to(root)}:{node.name}: {node.end_lineno - node.lineno + 1} lines"
                     for node in ast.walk(ast.parse(text)) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and node.end_lineno - node.lineno + 1 > 80]
    assert too_long == []
    assert len(list(root.glob("*.py"))) <= 12
