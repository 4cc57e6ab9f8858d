"""Run folders and the files in them that other tools read.

A run folder is `LOGDIR/NAME/RUN_ID/`, created fresh for each run and never
reused. JSON files are written atomically (temp file, then rename) so that a
reader never sees a truncated `results.json`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from kexp.errors import UsageError


def create_run_dir(logdir: str | os.PathLike, name: str) -> Path:
    """Creates and returns a new, unique run folder `logdir/name/RUN_ID`.

    Raises:
        UsageError: When `logdir` cannot be written to.
    """
    parent = Path(logdir).absolute() / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".probe-", delete=True)
        probe.close()
    except OSError as err:
        raise UsageError(
            f"--logdir {str(logdir)!r}: not writable ({err.strerror or err}); "
            "allowed: a folder you can write to"
        ) from None
    while True:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
        run_dir = parent / run_id
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue


def write_json(path: Path, data: Any) -> None:
    """Writes `data` as JSON atomically; non-finite floats become null."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the permissions open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(_finite(data), out, indent=2, sort_keys=False, allow_nan=False)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
