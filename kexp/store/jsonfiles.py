"""Internal: reading the JSON files of run and sweep folders, refusing anything kexp would not have written.

Any file in a run folder may have been edited, swapped for a FIFO or a link,
or grown past reason; these readers never block, never read without limit,
and raise only `CorruptFile` (exit 2, one line).
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from kexp.errors import UsageError

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "CorruptFile", "parse_json", "read_json", "regular_file_problem"]

# JSON kexp writes is a few KiB (a 1,000-point sweep.json is under 1 MiB) and a few levels deep;
# anything past these limits is not a file kexp wrote, and reading it could exhaust memory or the stack.
MAX_JSON_BYTES = 16 * 2**20
MAX_JSON_DEPTH = 32

_REQUIRED = object()


class CorruptFile(UsageError):
    """A JSON file of a run or sweep folder that is not as kexp writes it (exit 2).

    Attributes:
        path: The file.
        reason: What is wrong with it, e.g. `not a regular file` or `not valid JSON (...)`.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def regular_file_problem(path: Path) -> str:
    """Returns why `path` is not a readable regular file (following links), or "" when it is one.

    Opening a FIFO blocks until a writer comes, and a device can be endless:
    readers of run folders check this before they open anything.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken link" if os.path.islink(path) else "missing"
    except OSError as err:
        return f"not readable ({err.strerror or err})"
    return "" if stat.S_ISREG(mode) else "not a regular file"


def read_json(path: Path, *, missing: Any = _REQUIRED, null_nonfinite: bool = False) -> Any:
    """Reads a JSON file of a run or sweep folder, refusing anything kexp would not have written.

    Never blocks (a FIFO), never reads more than `MAX_JSON_BYTES`, and never
    raises anything but `CorruptFile` for a file that is there.

    Args:
        path: The file.
        missing: Returned when there is no such file (not even a broken link);
            without it, a missing file is a `CorruptFile` too.
        null_nonfinite: Read NaN, Infinity and out-of-range numbers as None
            (what kexp writes for them) instead of refusing the file; for
            `results.json` files other tools wrote.

    Returns:
        The parsed JSON value.

    Raises:
        CorruptFile: Naming the file and the reason.
    """
    path = Path(path)
    problem = regular_file_problem(path)
    if problem == "missing" and missing is not _REQUIRED:
        return missing
    if problem:
        raise CorruptFile(path, problem)
    try:
        # O_NONBLOCK: a file swapped for a FIFO after the check above still cannot block the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise CorruptFile(path, "not a regular file")
            data = handle.read(MAX_JSON_BYTES + 1)
    except OSError as err:
        raise CorruptFile(path, f"not readable ({err.strerror or err})") from None
    if len(data) > MAX_JSON_BYTES:
        raise CorruptFile(path, f"larger than {MAX_JSON_BYTES // 2**20} MiB")
    try:
        return parse_json(data.decode("utf-8"), null_nonfinite=null_nonfinite)
    except UnicodeDecodeError as err:
        raise CorruptFile(path, f"not valid UTF-8 ({err.reason} at byte {err.start})") from None
    except ValueError as err:
        raise CorruptFile(path, str(err)) from None


def parse_json(text: str, *, null_nonfinite: bool = False) -> Any:
    """Parses JSON text from a file or variable anyone may have written.

    Args:
        text: The JSON text.
        null_nonfinite: Read NaN, Infinity and numbers out of float range as
            None; otherwise they are refused (kexp writes them as null).

    Returns:
        The parsed value, nested at most `MAX_JSON_DEPTH` levels.

    Raises:
        ValueError: `not valid JSON (...)`, `nested deeper than N levels` or
            `holds a non-finite number (...)`; never RecursionError.
    """
    def nonfinite(token: str) -> None:
        if null_nonfinite:
            return None
        raise _NonFinite(token)

    def number(token: str) -> float | None:
        value = float(token)
        return value if math.isfinite(value) else nonfinite(token)

    try:
        value = json.loads(text, parse_constant=nonfinite, parse_float=number)
    except _NonFinite as err:
        raise ValueError(f"holds a non-finite number ({_clip(str(err))}); allowed: finite numbers "
                         "(kexp writes null for NaN and infinities)") from None
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as err:  # JSONDecodeError, and integers of more digits than Python converts
        raise ValueError(f"not valid JSON ({_clip(str(err))})") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


class _NonFinite(Exception):
    pass


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (a value may be nested near the stack's limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                return level
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
