"""Exceptions that the CLI turns into exit codes.

Kept free of TensorFlow so that every layer, `kexp list` included, can raise
and catch them cheaply.
"""


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
