"""Internal: `kexp tensorboard`: TensorBoard over a folder of runs, with a note when it mixes experiments."""

from __future__ import annotations

import importlib.util
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from kexp.errors import UsageError

__all__ = ["command", "several_experiments_note"]


def several_experiments_note(logdir: str) -> str:
    """Returns a note when `logdir` holds the runs of several experiments, else "".

    TensorBoard lists every run (and each run's train/ and validation/) of
    every experiment below its logdir, and unticks runs past a few dozen: one
    experiment's folder is what compares its runs.

    Args:
        logdir: The folder TensorBoard is asked to serve.
    """
    root = Path(logdir)
    experiments = sorted(folder.name for folder in _subfolders(root)
                         if any((run / "config.json").is_file() for run in _subfolders(folder)))
    if len(experiments) < 2:
        return ""
    shown = ", ".join(experiments[:5]) + (", ..." if len(experiments) > 5 else "")
    return (f"kexp: note: {logdir} holds runs of {len(experiments)} experiments ({shown}); TensorBoard lists "
            f"every run of each. To compare one experiment's runs: kexp tensorboard --logdir "
            f"{shlex.quote(not_an_option(os.path.join(logdir, experiments[0])))}")


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [path for path in folder.iterdir() if path.is_dir()]
    except OSError:
        return []


def command(logdir: str, port: int) -> int:
    """Runs TensorBoard on 127.0.0.1 over `logdir` until Ctrl-C or SIGTERM; returns the exit code.

    Args:
        logdir: The folder of runs.
        port: The port (0: any free one).

    Raises:
        UsageError: A missing folder or a port in use.
    """
    stopped = threading.Event()
    # Set first (a shell's background job even inherits SIGINT ignored): a
    # stop during start-up stops it as soon as it is up.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    if not os.path.isdir(logdir):
        raise UsageError(f"--logdir {logdir!r}: not a folder; allowed: a folder of runs (default ./logs)")
    note = several_experiments_note(logdir)
    if note:
        print(note, file=sys.stderr, flush=True)
    from kexp.engine.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    from tensorboard import program

    from kexp.cli.hparams_columns import plugins

    # TensorBoard's own plugins, its HParams tab showing each experiment's bar metrics first.
    board = program.TensorBoard(plugins=plugins())
    # TensorBoard's "auto" prints a note about its fast loader; pick the loader here instead.
    fast = "true" if importlib.util.find_spec("tensorboard_data_server") else "false"
    board.configure(logdir=os.path.abspath(logdir), host="127.0.0.1", port=port, load_fast=fast)
    try:
        url = board.launch()
    except program.TensorBoardServerException as err:
        raise UsageError(f"--port {port}: {err.msg}; allowed: a free port (0: any free one)") from None
    print(f"TensorBoard on {os.path.abspath(logdir)} at {url} (Ctrl-C stops it)", flush=True)
    while not stopped.wait(1.0):
        pass
    print("TensorBoard stopped", flush=True)
    return 0


def not_an_option(path: str) -> str:
    """Returns a relative `path` that a command it is pasted into cannot read as an option (`-x` -> `./-x`)."""
    return f"./{path}" if path.startswith("-") else path
