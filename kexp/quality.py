"""Internal: quality bars: what an experiment declares it reaches, checked against its metrics.

Each experiment file declares its bars once, as `EXPECTED`:

    EXPECTED = {
        "test_accuracy": (">=", 0.97),
        "std_ratio": ("between", 0.8, 1.2),
    }

The slow quality tests, the README's experiments table (checked by a test)
and `kexp runs` all read them from there. No TensorFlow here.
"""

from __future__ import annotations

import math
from typing import Mapping

Bar = tuple  # (op, value) or ("between", low, high)

_SYMBOLS = {">=": "≥", "<=": "≤", "==": "=", ">": ">", "<": "<"}


# A default run shorter than this has its bars checked by the README's test command; longer ones by `kexp check`
# (and `pytest -m quality`). Experiments declare their time as `EXPECTED_TIME_S`. Ten seconds on the README's
# machine is 15-45 s on the 2-core CI machine while the other test worker runs: longer bars would take the
# README's test command past its 12 minutes.
QUICK_RUN_SECONDS = 10


def is_quick(module: object) -> bool:
    """Returns whether an experiment module's default run is quick enough for the default test tier."""
    seconds = getattr(module, "EXPECTED_TIME_S", None)
    return seconds is not None and seconds < QUICK_RUN_SECONDS


def meets(bar: Bar, value: float) -> bool:
    """Returns whether `value` meets one bar (a missing or non-finite value never does)."""
    if value is None or not math.isfinite(value):
        return False
    op, *limits = bar
    if op == "between":
        return limits[0] <= value <= limits[1]
    return {">=": value >= limits[0], "<=": value <= limits[0], "==": value == limits[0],
            ">": value > limits[0], "<": value < limits[0]}[op]


def failures(expected: Mapping[str, Bar], metrics: Mapping[str, float]) -> list[str]:
    """Returns one line per bar that `metrics` misses, e.g. `test_accuracy 0.95 (bar ≥ 0.97)`."""
    missed = []
    for name, bar in expected.items():
        value = metrics.get(name)
        if not meets(bar, value):
            missed.append(f"{name} {value if value is None else f'{value:.6g}'} (bar {describe(bar)})")
    return missed


def describe(bar: Bar) -> str:
    """Returns a bar as the README writes it: `≥ 0.97`, `≤ 1e-3`, `= 10`, `0.8–1.2`."""
    op, *limits = bar
    if op == "between":
        return f"{_number(limits[0])}–{_number(limits[1])}"
    return f"{_SYMBOLS[op]} {_number(limits[0])}"


def check_declaration(expected: object, where: str) -> None:
    """Raises `ValueError` naming `where` unless `expected` is a well-formed `EXPECTED` mapping."""
    if not isinstance(expected, Mapping):
        raise ValueError(f"{where}: EXPECTED is {type(expected).__name__}; allowed: a dict of metric: bar")
    for name, bar in expected.items():
        ok = isinstance(bar, tuple) and bar and (
            (bar[0] in _SYMBOLS and len(bar) == 2) or (bar[0] == "between" and len(bar) == 3))
        if not ok or not all(isinstance(v, (int, float)) for v in bar[1:]):
            raise ValueError(f"{where}: EXPECTED[{name!r}] is {bar!r}; allowed: (op, value) with op one of "
                             f"{', '.join(_SYMBOLS)}, or ('between', low, high)")


def _number(value: float) -> str:
    if isinstance(value, float) and value and (abs(value) < 1e-2 or abs(value) >= 1e5):
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:g}"
