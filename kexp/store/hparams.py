"""Internal: a run's config as flat `section.key` values, as TensorBoard's HParams tab and `kexp runs` show it.

Every run of one experiment logs every key of its resolved config (not only
the ones `--set` changed), so its runs share one set of HParams columns and
line up in the table and the parallel-coordinates view. No TensorFlow here.
"""

from __future__ import annotations

from typing import Any, Mapping

HParamValue = bool | int | float | str


def flatten(config: Mapping[str, Any]) -> dict[str, HParamValue]:
    """Returns `{"section.key": value}` for a config as written to `config.json`.

    Args:
        config: `{section: {key: value}}`; sections that are None are skipped.

    Returns:
        Values TensorBoard's HParams plugin takes (bool, int, float, str):
        lists become `"a,b"` strings (as `--set` writes them), None `"None"`.
    """
    flat: dict[str, HParamValue] = {}
    for section, values in config.items():
        if not isinstance(values, Mapping):
            continue
        for key, value in values.items():
            flat[f"{section}.{key}"] = _scalar(value)
    return flat


def differences(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, HParamValue]:
    """Returns the flat values of `config` that differ from `defaults` (or that `defaults` lacks)."""
    base = flatten(defaults)
    return {key: value for key, value in flatten(config).items() if key not in base or base[key] != value}


def _scalar(value: Any) -> HParamValue:
    if isinstance(value, (list, tuple)):
        return ",".join(str(_scalar(v)).lower() if isinstance(v, bool) else str(_scalar(v)) for v in value)
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
