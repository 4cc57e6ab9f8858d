"""Internal: `kexp run NAME --config FILE`: a JSON file of settings, applied as `--set` values are.

The file is `{section: {key: value}}`, as a run folder's `config.json` holds
it (a search's best settings written the same way): each value becomes the
`--set section.key=VALUE` text that gives it, so it meets the same checks
(known keys, types, limits) and `--set` values given with it win. No
TensorFlow here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kexp.errors import UsageError

__all__ = ["config_file_overrides"]


def config_file_overrides(path: str | Path) -> list[str]:
    """Returns the `section.key=VALUE` overrides a `--config` file holds, in file order.

    Args:
        path: The JSON file.

    Raises:
        UsageError: `--config 'PATH': why; allowed: ...` for a file that is
            missing, not JSON, or not `{section: {key: value}}` of numbers,
            strings, booleans and lists of them.
    """
    from kexp.store.jsonfiles import CorruptFile, read_json

    allowed = "allowed: a JSON file of {section: {key: value}}, as a run folder's config.json"
    try:
        data = read_json(Path(path))
    except CorruptFile as err:
        raise UsageError(f"--config {str(path)!r}: {err.reason}; {allowed}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--config {str(path)!r}: holds a JSON {type(data).__name__}; {allowed}")
    overrides = []
    for section, values in data.items():
        if not isinstance(values, dict):
            raise UsageError(f"--config {str(path)!r}: {section!r} holds {_kind(values)}, not keys; {allowed}")
        for key, value in values.items():
            overrides.append(f"{section}.{key}={_as_set_text(path, f'{section}.{key}', value)}")
    return overrides


def _as_set_text(path: str | Path, key: str, value: Any) -> str:
    """The `--set` text of a JSON value: true/false, numbers as Python reads them back, lists comma-joined."""
    items = value if isinstance(value, list) else [value]
    texts = []
    for item in items:
        if isinstance(item, bool):
            texts.append(str(item).lower())
        elif isinstance(item, (int, float, str)):
            texts.append(repr(item) if isinstance(item, float) else str(item))
        else:
            raise UsageError(f"--config {str(path)!r}: {key} holds {_kind(item)}; allowed: a number, a string, "
                             "true/false, or a list of them")
    return ",".join(texts)


def _kind(value: Any) -> str:
    return "null" if value is None else f"a JSON {type(value).__name__}"
