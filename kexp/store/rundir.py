"""Internal: run folders and the files in them that other tools read.

A run folder is `LOGDIR/NAME/RUN_ID/`, created fresh for each run and never
reused. JSON files are written atomically (temp file, then rename) so that a
reader never sees a truncated `results.json`.
"""

from __future__ import annotations

import errno
import json
import math
import os
import platform
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from kexp.errors import UsageError, WriteError
# Reading JSON lives in jsonfiles; its names stay importable from here, where callers found them first.
from kexp.store.jsonfiles import (MAX_JSON_BYTES, MAX_JSON_DEPTH, CorruptFile, parse_json,  # noqa: F401
                                  read_json, regular_file_problem)


def check_logdir(logdir: str | os.PathLike) -> None:
    """Checks, without creating anything, that run folders could be made under `logdir`.

    The command line calls it before TensorFlow loads, so that a logdir under
    a file or in a read-only place fails at once; `create_run_dir` still
    checks by writing.

    Raises:
        UsageError: When the nearest existing folder on the way is not a
            folder, or is not writable.
    """
    path = Path(logdir).absolute()
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    reason = ("Not a directory" if not path.is_dir()
              else "Permission denied" if not os.access(path, os.W_OK | os.X_OK) else "")
    if reason:
        raise _unwritable(logdir, f"{reason}: {str(path)!r}")


def _unwritable(logdir: str | os.PathLike, reason: str) -> UsageError:
    return UsageError(f"--logdir {str(logdir)!r}: not writable ({reason}); allowed: a folder you can write to")


def create_run_dir(logdir: str | os.PathLike, name: str, prefix: str = "", label: str = "") -> Path:
    """Creates and returns a new, unique run folder `logdir/name/RUN_ID`.

    RUN_ID is `[prefix]YYYYMMDD-HHMMSS-LABEL` when a label is given (`+run2`, `+run3`,
    ... added on a clash: not `-2`, which would read as part of a value), so that TensorBoard's run list says what each run was,
    and `[prefix]YYYYMMDD-HHMMSS-xxxxxx` (random hex) otherwise.

    Args:
        logdir: The root of run folders.
        name: The experiment.
        prefix: Put before the RUN_ID (`sweep-` for a sweep's folder).
        label: What tells the run apart (`kexp.store.names.run_label`), a single folder name.

    Raises:
        UsageError: When `logdir` cannot be written to.
    """
    parent = Path(logdir).absolute() / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".probe-", delete=True)
        probe.close()
    except OSError as err:
        raise _unwritable(logdir, str(err.strerror or err)) from None
    clash = 0
    while True:
        stamp = prefix + time.strftime("%Y%m%d-%H%M%S") + "-"
        run_id = stamp + (label + (f"+run{clash + 1}" if clash else "") if label else secrets.token_hex(3))
        run_dir = parent / run_id
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            clash += 1
            continue
        except FileNotFoundError:
            # Another process removed the empty experiment folder meanwhile
            # (`remove_run_dir`); make it again.
            parent.mkdir(parents=True, exist_ok=True)


def why_unwritable(folder: Path) -> OSError:
    """Returns the `OSError` a small write in `folder` meets now, to name a failure reported without one.

    TensorFlow's event writers fail with `Could not initialize events writer`
    or a bare `OpError`, whatever the cause; a test write of 64 KiB (fsynced,
    then removed) gets the operating system's reason: `No space left on
    device`, `Read-only file system`, `Permission denied`.

    Args:
        folder: The folder a write failed in.
    """
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
        try:
            os.write(fd, bytes(65536))
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        return err
    return OSError(errno.EIO, "TensorFlow's writer failed; a test write there succeeded")


def remove_run_dir(run_dir: Path) -> None:
    """Removes a run folder that must not stay (bad input), and its experiment folder if that is now empty."""
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        Path(run_dir).parent.rmdir()
    except OSError:
        pass  # other runs live there


def write_json(path: Path, data: Any) -> None:
    """Writes `data` as JSON atomically and durably; non-finite floats become null.

    Raises:
        WriteError: Naming `path`, when it cannot be written (disk full, say).
    """
    write_text(path, json.dumps(_finite(data), indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Writes `text` (UTF-8) atomically and durably: a temp file, fsynced, renamed over `path`.

    Raises:
        WriteError: Naming `path`, when it cannot be written (disk full, say).
    """
    path = Path(path)
    remove_temp_files(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        # mkstemp creates 0600; give the file the permissions open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise WriteError(path, err) from None
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_temp_files(path: Path) -> None:
    """Removes the temp files that writers of `path` killed mid-write left beside it."""
    path = Path(path)
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Flushes a folder's entries (a rename in it) to disk, where the platform allows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not fsync folders
    finally:
        os.close(fd)


class RunLock:
    """An exclusive `fcntl.flock` lock on a run folder, held while a process trains in it.

    The lock is taken on the folder itself, so taking it writes nothing
    (a resume that fails leaves the folder byte for byte as it was), and it
    goes with the process: a killed process frees it, and no stale lock file
    ever blocks a resume.

    Args:
        run_dir: The run folder.
        what: How to name the folder in the error (e.g. `--resume 'PATH'`).

    Raises:
        UsageError: When another process holds the lock.
    """

    def __init__(self, run_dir: Path, what: str) -> None:
        import fcntl

        self._fd = os.open(run_dir, os.O_RDONLY)
        # A few tries: `in_use` (kexp runs) holds a shared lock for an instant.
        for attempt in range(_LOCK_TRIES):
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError:
                if attempt + 1 < _LOCK_TRIES:
                    time.sleep(0.05)
        os.close(self._fd)
        raise UsageError(f"{what}: in use by another kexp process (its run folder is locked); "
                         "allowed: a run folder no process is training in")

    def release(self) -> None:
        """Releases the lock (closing the descriptor releases it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


_LOCK_TRIES = 10


def in_use(run_dir: Path) -> bool:
    """Returns whether a process holds the folder's `RunLock` (trains in it now).

    Takes a shared lock for an instant, which `RunLock` waits out.
    """
    import fcntl

    try:
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def versions() -> dict[str, str]:
    """Returns the versions of Python, TensorFlow, Keras and kexp."""
    import keras
    import tensorflow as tf

    from kexp import __version__

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "kexp": __version__,
    }
