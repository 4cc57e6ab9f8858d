"""Internal: the names kexp gives and accepts for run and fit folders. No TensorFlow here."""

from __future__ import annotations

import re
from typing import Any, Mapping

from kexp.errors import UsageError

__all__ = ["check_name", "run_label"]

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def check_name(name: Any, what: str) -> str:
    """Checks that a run or fit name is a single path component and returns it.

    Raises:
        UsageError: (a `ValueError`) for anything but letters, digits, `_`,
            `-` and `.` not leading: names stay inside the logdir.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 200:
        raise UsageError(f"{what}: received {str(name)[:80]!r}; allowed: letters, digits, '_', '-' and "
                         "'.' (not first), at most 200 characters: one folder name")
    return name


# Characters a label keeps; others become `-`. `=`, `,` and `+` read as in `--set` and stay shell-safe.
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")
_LABEL_MAX = 60


def run_label(settings: Mapping[str, Any]) -> str:
    """Returns a readable folder label from the settings that differ from an experiment's defaults.

    Example: `{"model.units": 128, "train.epochs": 5}` gives `units=128+epochs=5`;
    no settings give `defaults`. Long labels are cut at a setting boundary
    and end `+N-more`.

    Args:
        settings: `section.key` to value (lists as comma-joined text or sequences).
    """
    parts = []
    for key, value in settings.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, float):
            value = repr(value)  # the shortest text that reads back as this float: 1.0000001 stays itself
        parts.append(_LABEL_UNSAFE.sub("-", f"{key.rpartition('.')[2]}={value}"))
    if not parts:
        return "defaults"
    label = "+".join(parts)
    kept = len(parts)
    while len(label) > _LABEL_MAX and kept > 1:
        kept -= 1
        label = "+".join(parts[:kept]) + f"+{len(parts) - kept}-more"
    return label[:_LABEL_MAX].lstrip(".") or "settings"
