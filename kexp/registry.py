"""Internal: finds experiments by name.

Experiments are Python files, one per experiment, found in:

1. the `experiments/` folder that ships inside kexp (package `kexp.experiments`);
2. every folder in the `KEXP_EXPERIMENTS_PATH` environment variable
   (separated by `os.pathsep`), so a project can add its own without editing kexp;
3. modules registered under the `kexp.experiments` entry-point group
   (`name = "package.module"` in the project's `pyproject.toml`).

An earlier source wins on a name clash, with one warning on stderr naming
both files. A bundled experiment is imported as `kexp.experiments.NAME`; one
from a folder with that folder first on `sys.path` (so it can import a helper
file beside it); an entry point's module under its own name with
`importlib.import_module` (so relative imports and sibling modules work).
Listing reads only the module
docstrings (with `ast`), so `kexp list` imports neither TensorFlow nor the
experiment modules themselves.
"""

from __future__ import annotations

import ast
import functools
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
        error: Why an entry point's module cannot be found ("" when it can);
            `load` reports it.
        module: The module name an entry point names ("" for files).
    """

    name: str
    path: Path
    description: str
    error: str = ""
    module: str = ""


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


def _entry_point_files() -> dict[str, tuple[Path | str, str]]:
    """Returns each entry point's `(module file or why it cannot be found, module name)`."""
    found: dict[str, tuple[Path | str, str]] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.attr:
            found[ep.name] = (f"entry point {ep.value!r}: names an attribute; allowed: a module "
                              f"('{ep.module}'), whose CONFIG and run make the experiment", ep.module)
            continue
        try:
            # Imports the module's parent packages (not the module itself),
            # which may fail like any import: a stale or broken installation.
            spec = importlib.util.find_spec(ep.value)
        except (Exception, SystemExit) as err:
            found[ep.name] = (f"entry point {ep.value!r}: {_describe_error(err)}", ep.value)
            continue
        if spec is not None and spec.origin and spec.origin not in ("built-in", "frozen"):
            found[ep.name] = (Path(spec.origin), ep.value)
        else:
            found[ep.name] = (f"entry point {ep.value!r}: no such module file", ep.value)
    return found


def _describe(path: Path) -> str:
    """Returns the first line of an experiment file's docstring, parsing each version of a file once."""
    try:
        stat = path.stat()
    except OSError:
        return "(unreadable experiment file)"
    return _first_doc_line(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _first_doc_line(path: str, mtime_ns: int, size: int) -> str:
    # (mtime_ns, size): an edited file is parsed again; `kexp run` looks an experiment up several times.
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return "(unreadable experiment file)"
    doc = ast.get_docstring(tree) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def discover() -> dict[str, ExperimentSpec]:
    """Returns every experiment that can be found, by name.

    Returns:
        Mapping of name to `ExperimentSpec`, sorted by name.
    """
    files: dict[str, tuple[Path | str, str]] = {}

    def add(name: str, source: Path | str, module: str) -> None:
        if name not in files:
            files[name] = (source, module)
        elif name not in _WARNED:
            _WARNED.add(name)
            kept = files[name][1] or files[name][0]
            print(f"kexp: warning: experiment {name!r} is defined twice; using {kept}, "
                  f"ignoring {module or source}", file=sys.stderr)

    for folder in _search_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.py")):
            if not path.name.startswith("_"):
                add(path.stem, path, "")
    for name, (source, module) in _entry_point_files().items():
        add(name, source, module)
    found = {}
    for name, (source, module) in sorted(files.items()):
        if isinstance(source, str):  # an entry point whose module cannot be used
            found[name] = ExperimentSpec(name, Path(), "(unreadable experiment entry point)", error=source,
                                         module=module)
        else:
            found[name] = ExperimentSpec(name, source, _describe(source), module=module)
    return found


_WARNED: set[str] = set()  # names already warned about in this process


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
        UsageError: For an unknown name, or a module that cannot be imported
            (syntax error, missing import, exception at import) or lacks a
            proper `CONFIG` or `run`: one line naming the file and the error.
    """
    spec = get(name)
    if spec.error:
        raise UsageError(f"experiment {name!r}: {spec.error}")
    where = f"experiment {name!r} ({spec.path})"
    bundled = spec.path.parent == bundled_dir()
    if spec.module or bundled:
        module_name = spec.module or f"kexp.experiments.{name}"
        try:
            module = importlib.import_module(module_name)
        except (Exception, SystemExit) as err:
            raise UsageError(f"{where}: {_describe_error(err)}") from None
        _check_module(module, where)
        return module
    module_name = f"kexp.experiments.{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    # Its folder first on the path, as for a script: a helper beside it imports.
    folder = str(spec.path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import_spec = importlib.util.spec_from_file_location(module_name, spec.path)
    if import_spec is None or import_spec.loader is None:
        raise UsageError(f"{where}: not an importable Python file")
    module = importlib.util.module_from_spec(import_spec)
    # Registered before executing so that dataclasses in the module resolve.
    sys.modules[module_name] = module
    try:
        try:
            import_spec.loader.exec_module(module)
        except (Exception, SystemExit) as err:
            # A user's experiment file is input like any other: its error is
            # one line naming the file, not a traceback through kexp. A
            # sys.exit() at import would otherwise end kexp with the module's
            # code and no message; KeyboardInterrupt still passes through.
            raise UsageError(f"{where}: {_describe_error(err)}") from None
        _check_module(module, where)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _check_module(module: ModuleType, where: str) -> None:
    """Raises UsageError unless the module has an `ExperimentConfig` CONFIG and a callable run."""
    from kexp.config import ExperimentConfig
    from kexp.config_values import shown

    for attr in ("CONFIG", "run"):
        if not hasattr(module, attr):
            raise UsageError(f"{where}: defines no {attr}; allowed: a module with CONFIG and run(config, harness)")
    if not isinstance(module.CONFIG, ExperimentConfig):
        raise UsageError(
            f"{where}: CONFIG is {shown(module.CONFIG)} ({type(module.CONFIG).__name__}); "
            "allowed: a kexp.config.ExperimentConfig"
        )
    if hasattr(module, "EXPECTED"):
        from kexp import quality

        try:
            quality.check_declaration(module.EXPECTED, where)
        except ValueError as err:
            raise UsageError(str(err)) from None
    seconds = getattr(module, "EXPECTED_TIME_S", None)
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not 0 < seconds < 10**7):
        raise UsageError(f"{where}: EXPECTED_TIME_S is {shown(seconds)}; allowed: the seconds a default run "
                         "takes, a number > 0")
    if not callable(module.run):
        raise UsageError(
            f"{where}: run is {shown(module.run)} ({type(module.run).__name__}); "
            "allowed: a function run(config, harness)"
        )


def _describe_error(err: BaseException) -> str:
    """Returns `Type: message` on one line, with the line number of a syntax error.

    A `SystemExit` (the module called `sys.exit`) is described as that call.
    """
    if isinstance(err, SystemExit):
        code = " ".join(repr(err.code).split())
        text = f"called sys.exit({code}) at import; allowed: a module that defines CONFIG and run without exiting"
    elif isinstance(err, SyntaxError):
        text = f"{type(err).__name__}: {err.msg}" + (f" (line {err.lineno})" if err.lineno else "")
    else:
        message = " ".join(str(err).split())  # one line, whatever the exception says
        text = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
