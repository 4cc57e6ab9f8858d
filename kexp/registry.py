"""Finds experiments by name.

Experiments are Python files, one per experiment, found in:

1. the `experiments/` folder that ships inside kexp (package `kexp.experiments`);
2. every folder in the `KEXP_EXPERIMENTS_PATH` environment variable
   (separated by `os.pathsep`), so a project can add its own without editing kexp;
3. modules registered under the `kexp.experiments` entry-point group
   (`name = "package.module"` in the project's `pyproject.toml`).

An earlier source wins on a name clash. Listing reads only the module
docstrings (with `ast`), so `kexp list` imports neither TensorFlow nor the
experiment modules themselves.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import os
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

from kexp.errors import UsageError

ENV_PATH = "KEXP_EXPERIMENTS_PATH"
ENTRY_POINT_GROUP = "kexp.experiments"


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """Where an experiment lives and what it says about itself.

    Attributes:
        name: The name used on the command line.
        path: The module's source file.
        description: First line of the module docstring.
    """

    name: str
    path: Path
    description: str


def bundled_dir() -> Path:
    """Returns the folder of the experiments shipped with kexp."""
    spec = importlib.util.find_spec("kexp.experiments")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("kexp is installed without its experiments package")
    return Path(list(spec.submodule_search_locations)[0])


def _search_dirs() -> list[Path]:
    dirs = [bundled_dir()]
    for entry in os.environ.get(ENV_PATH, "").split(os.pathsep):
        if entry.strip():
            dirs.append(Path(entry).expanduser())
    return dirs


def _entry_point_files() -> dict[str, Path]:
    found = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        spec = importlib.util.find_spec(ep.value)
        if spec is not None and spec.origin:
            found[ep.name] = Path(spec.origin)
    return found


def _describe(path: Path) -> str:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return "(unreadable experiment file)"
    doc = ast.get_docstring(tree) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def discover() -> dict[str, ExperimentSpec]:
    """Returns every experiment that can be found, by name.

    Returns:
        Mapping of name to `ExperimentSpec`, sorted by name.
    """
    files: dict[str, Path] = {}
    for folder in _search_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.py")):
            if not path.name.startswith("_"):
                files.setdefault(path.stem, path)
    for name, path in _entry_point_files().items():
        files.setdefault(name, path)
    return {
        name: ExperimentSpec(name, path, _describe(path)) for name, path in sorted(files.items())
    }


def get(name: str) -> ExperimentSpec:
    """Returns the spec of one experiment.

    Raises:
        UsageError: For an unknown name, listing the closest known names.
    """
    found = discover()
    if name in found:
        return found[name]
    close = difflib.get_close_matches(name, found, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see 'kexp list'"
    raise UsageError(f"unknown experiment {name!r}; {hint}")


def load(name: str) -> ModuleType:
    """Imports an experiment module and checks its shape.

    An experiment module defines `CONFIG` (an `ExperimentConfig`) and
    `run(config, harness) -> dict[str, float]`.

    Raises:
        UsageError: For an unknown name.
        TypeError: For a module that lacks `CONFIG` or `run`.
    """
    spec = get(name)
    module_name = f"kexp.experiments.{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    import_spec = importlib.util.spec_from_file_location(module_name, spec.path)
    module = importlib.util.module_from_spec(import_spec)
    # Registered before executing so that dataclasses in the module resolve.
    sys.modules[module_name] = module
    try:
        import_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    for attr in ("CONFIG", "run"):
        if not hasattr(module, attr):
            raise TypeError(f"experiment {name!r} ({spec.path}) defines no {attr}")
    return module
