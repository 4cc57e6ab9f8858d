"""Exceptions that the CLI turns into exit codes.

Kept free of TensorFlow so that every layer, `kexp list` included, can raise
and catch them cheaply.
"""

from __future__ import annotations

from pathlib import Path


class UsageError(ValueError):
    """Bad usage, configuration or input: exit code 2 with a one-line message.

    Raised before a run folder exists, or, when raised during a run (for
    example a data set that is not available offline), the runner removes the
    half-made run folder before the CLI reports it.
    """


class ConfigError(UsageError):
    """An override or config value that is unknown, mistyped or impossible."""


class RunError(RuntimeError):
    """The run itself failed in a way the user can act on (e.g. its results could not be saved): exit code 1."""


class WriteError(RunError):
    """A run's file could not be written (disk full, say): exit code 1, naming the file.

    Attributes:
        path: The file that failed.
        os_error: The `OSError` it failed with.
    """

    def __init__(self, path: object, err: OSError, note: str = "") -> None:
        super().__init__(f"could not write {path} ({err.strerror or err}){note}")
        self.path = path
        self.os_error = err


class RunPruned(RunError):
    """A `kexp search` trial stopped by the study's pruner: the run ends with status `pruned` (exit code 0).

    Attributes:
        epoch: The fit's epoch (from 1) after which the pruner stopped it.
    """

    def __init__(self, fit: str, epoch: int) -> None:
        super().__init__(f"pruned by the search after epoch {epoch} of fit {fit!r}")
        self.epoch = epoch


def tag_run_dir(err: BaseException, run_dir: Path | None) -> None:
    """Records on `err` the run folder it leaves behind, for whoever reports it (the CLI prints `run_dir: PATH`).

    The folder is kept as the error's `run_dir` attribute, which a library
    user may read too; `run_dir_of` is the one reader inside kexp.

    Args:
        err: An error leaving a run (`RunInterrupted`, `RunError`, any other).
        run_dir: The run folder, or None where there is none to name (a
            worker of a multi-worker run other than the chief).
    """
    err.run_dir = run_dir  # type: ignore[attr-defined]


def run_dir_of(err: BaseException) -> Path | None:
    """Returns the run folder `tag_run_dir` recorded on `err`.

    Args:
        err: Any error.

    Returns:
        The folder, or None for an error raised before any run folder
        existed (or not tagged at all).
    """
    run_dir = getattr(err, "run_dir", None)
    return Path(run_dir) if run_dir is not None else None
