"""Comparisons of model variants inside one run, over several seeds.

The training studies (`cnn_zoo`, `regularization`, `optimizers`, `transfer`)
train several variants of one model, some of them over several seeds, and
report each as mean ± spread. This module holds what they share: seeding a
variant's fit, summarizing repeats, the end-of-run table (printed, kept as
Markdown and CSV, and shown in TensorBoard's Text tab) and per-epoch curves
taken from each fit's history.
"""

from __future__ import annotations

import csv
import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from kexp.study import tables
from kexp.store import layout

if TYPE_CHECKING:
    from kexp.engine.harness import Harness


def reseed(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow (`keras.utils.set_random_seed`) before a variant's fit.

    Every variant of one repeat starts from the same seed, so variants differ
    only in what is compared.
    """
    import keras

    keras.utils.set_random_seed(int(seed) % 2**32)


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Returns the mean and the sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=float)
    spread = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), spread


def describe(values: Sequence[float], digits: int = 3) -> str:
    """Returns `mean ± spread` (sample standard deviation), or the value alone for one repeat."""
    mean, spread = mean_spread(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def write_table(harness: Harness, name: str, header: Sequence[str], rows: Sequence[Sequence[Any]],
                title: str = "", shows: Sequence[str] = ()) -> str:
    """Prints a comparison table and keeps it as `NAME.md`, `NAME.csv` and a TensorBoard text entry.

    Args:
        harness: The run's harness.
        name: File stem and TensorBoard tag.
        header: Column names.
        rows: One row per variant.
        title: A line printed above the table.
        shows: The run's metrics (keys of what `run` returns) the table or
            title prints; `kexp run`'s closing summary leaves them out, so
            it does not print the same numbers again. `results.json` keeps
            every metric.

    Returns:
        The Markdown table.
    """
    text = tables.write(harness.run_dir, name, header, rows)
    tables.mark_shown(harness.run_dir, name, shows)
    if harness.is_chief:
        harness.images.write_text(name, (f"{title}\n\n" if title else "") + text)
    if title:
        print(title)
    print(text, flush=True)
    return text


def history_curve(harness: Harness, fit: str, key: str) -> list[float]:
    """Returns one logged quantity of a fit per epoch, from its `history.csv` (all epochs, resumed or not).

    Args:
        harness: The run's harness.
        fit: The fit's name.
        key: A history column such as `val_accuracy` or `loss`; NaN where an epoch has none.
    """
    path = layout.fit_log_dir(harness.run_dir, fit) / layout.HISTORY
    if not path.exists():  # a worker other than the chief keeps no CSV: this process's epochs
        return [float(v) for v in harness.history[fit].history.get(key, [])]
    with open(path, newline="") as handle:
        return [float(row[key]) if row.get(key) not in (None, "") else math.nan for row in csv.DictReader(handle)]


def summary_metrics(prefix: str, values: Sequence[float]) -> Mapping[str, float]:
    """Returns `{PREFIX: mean, PREFIX_spread: sample std}` for `results.json` (spread only over repeats)."""
    mean, spread = mean_spread(values)
    return {prefix: mean, f"{prefix}_spread": spread} if len(values) > 1 else {prefix: mean}


def mean_curve(curves: Sequence[Sequence[float]]) -> np.ndarray:
    """Returns the mean per epoch of several runs' curves, NaN-padded where a run stopped early (diverged)."""
    length = max((len(c) for c in curves), default=0)
    padded = np.full((len(curves), length), np.nan)
    for row, curve in zip(padded, curves):
        row[:len(curve)] = curve
    with np.errstate(all="ignore"):
        return np.nanmean(padded, axis=0) if len(curves) else padded[0:0].ravel()
