"""Internal: the figures of `kexp bench --sweep` and `kexp sweep`, rendered off-screen (Agg).

They plot what those commands measured (throughput against settings, each
metric across a sweep's points); `kexp.study.plots.save` writes them.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")  # no display: figures only become PNG files
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402


def sweep_figure(sweep: Any) -> Any:
    """Returns the four panels of `kexp bench --sweep`: batch, width, replicas, rollout horizon."""
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    panels = (("batch_size", "batch size", True), ("width", "hidden width", True), ("replicas", "replicas", False))
    for ax, (key, label, log) in zip(axes, panels):
        rows = sweep[key]
        values = [r[key] for r in rows]
        ax.plot(values, [r["harness_examples_per_s"] for r in rows], "o-")
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # minor labels overlapped
        # Label exactly the measured settings.
        ax.set_xticks(values, [str(v) for v in values])
        ax.set_xlabel(label)
        ax.set_ylabel("examples/s (harness)")
        ax.set_title(f"tutorial 000's FNN: throughput vs {label}")
    rows = sweep["rollout"]
    axes[3].plot([r["horizon_pi"] for r in rows], [r["seconds"] for r in rows], "o-")
    axes[3].set_xlabel("rollout horizon (multiples of pi)")
    axes[3].set_ylabel("seconds")
    axes[3].set_title("lstm_sine rollout time vs horizon")
    fig.tight_layout()
    return fig


def grid_sweep_figure(sweep: Any, keys: Any, metrics: Any, bars: Any = None) -> Any:
    """Returns `kexp sweep`'s figure: one row of panels, one per metric, every finished point a dot.

    The x axis is the first swept key with several values (a number axis
    when its values are numbers, log when they span a decade); points that
    differ in the other keys get a colour each (and a line through a number
    axis). Three or more points at one x get a box; fewer are drawn alone.
    A metric's quality bar is a dashed line with its passing side shaded.
    The y axis is log where the values and bar, all positive, span more
    than a decade; either way its range is at least a sensible share of the
    values (`_y_limits`), so that two close points do not fill the panel.

    Args:
        sweep: The `sweep.json` content: `grid`, `points`, `experiment`.
        keys: The swept keys, in grid order.
        metrics: The metrics to draw, one panel each.
        bars: `{metric: bar}` (the experiment's `EXPECTED`); None for none.
    """
    done = [p for p in sweep["points"] if p["metrics"]]
    varied = [k for k in keys if len(sweep["grid"][k]) > 1] or list(keys[:1])
    x_key, others = varied[0], varied[1:]
    values = sweep["grid"][x_key]
    numbers = _as_numbers(values)
    positions = numbers or list(range(len(values)))
    log_x = bool(numbers) and min(numbers) > 0 and max(numbers) >= 10 * min(numbers)
    series = {p["index"]: ", ".join(f"{k}={p['settings'][k]}" for k in others) for p in done}
    # The series in grid order, whichever points finished.
    labels = [label for _, label in sorted({tuple(sweep["grid"][k].index(p["settings"][k]) for k in others):
                                            series[p["index"]] for p in done}.items())]
    gaps = np.diff(sorted(set(positions)))
    box_width = (lambda x: 0.4 * x) if log_x else (lambda x: 0.4 * (gaps.min() if gaps.size else 1.0))
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.0, 3.8 * len(metrics)), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        # A diverged point's metric may be missing or not finite: it has no place on the axis.
        points = [(positions[values.index(p["settings"][x_key])], float(p["metrics"][metric]), series[p["index"]])
                  for p in done if isinstance(p["metrics"].get(metric), (int, float))
                  and math.isfinite(p["metrics"][metric])]
        _draw_points(ax, points, labels, numbers is not None, box_width)
        bar = (bars or {}).get(metric)
        ax.set_yscale(_y_scale([y for _, y, _ in points], bar))
        ax.set_ylim(*_y_limits([y for _, y, _ in points], bar, ax.get_yscale() == "log"))
        if ax.get_yscale() == "linear":  # each tick its own number: an offset ("1e-5") sat on the title
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
        if bar:
            _draw_bar(ax, bar)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if not numbers:
            ax.set_xlim(-0.5, len(values) - 0.5)
        ax.set_xticks(positions, values)
        ax.set(xlabel=x_key, title=metric)
        if bar or len(labels) > 1:
            ax.legend(fontsize="small")
    fig.suptitle(f"kexp sweep {sweep['experiment']}: {len(done)} of {len(sweep['points'])} points finished")
    fig.tight_layout()
    return fig


def _draw_points(ax: Any, points: list, labels: list, ordered: bool, box_width: Callable[[float], float]) -> None:
    """Draws each series' points (a line through them on an ordered axis) and a box where an x has three or more."""
    for k, label in enumerate(labels):
        mine = sorted((x, y) for x, y, s in points if s == label)
        if mine:
            ax.plot(*zip(*mine), "o-" if ordered and len(mine) > 1 else "o", color=f"C{k}", label=label or None)
    for x in dict.fromkeys(x for x, _, _ in points):
        group = [y for xx, y, _ in points if xx == x]
        if len(group) > 2:  # a box needs a spread: one or two points are drawn as they are
            ax.boxplot(group, positions=[x], widths=[box_width(x)], manage_ticks=False, showfliers=False, zorder=0,
                       boxprops={"color": "0.6"}, whiskerprops={"color": "0.6"}, capprops={"color": "0.6"},
                       medianprops={"color": "0.4"})


def _bar_values(bar: Any) -> list[float]:
    return [float(v) for v in bar[1:]] if bar else []


def _y_scale(ys: list[float], bar: Any) -> str:
    """Returns "log" where the values and the bar are all positive and span more than a decade."""
    every = ys + _bar_values(bar)
    return "log" if every and min(every) > 0 and max(every) > 10 * min(every) else "linear"


def _y_limits(ys: list[float], bar: Any, log: bool) -> tuple[float, float]:
    """Returns y limits holding the values and the bar, spanning at least a factor 4 (log) or half the largest.

    Without that floor two close points (0.0029 and 0.0036, say) would sit
    at the panel's bottom and top, a small difference drawn as a huge one.
    A linear range is widened towards zero, never past it.
    """
    every = ys + _bar_values(bar) or [0.0, 1.0]
    low, high = min(every), max(every)
    if log:
        pad = max(1.25, (4 * low / high) ** 0.5)
        return low / pad, high * pad
    floor = 0.5 * max(abs(low), abs(high)) or 1.0
    if high - low < floor:
        low, high = (max(0.0, high - floor), high) if low >= 0 else (low, min(0.0, low + floor))
    margin = 0.08 * (high - low) or 0.5
    return low - margin, high + margin


def _draw_bar(ax: Any, bar: Any) -> None:
    """Draws a quality bar: a dashed line (two for `between`) and its passing side shaded."""
    from kexp import quality

    op, *limits = bar
    low, high = ax.get_ylim()
    label = f"bar {quality.describe(bar)}"
    if op == "between":
        ax.axhspan(limits[0], limits[1], color="C2", alpha=0.12, label=label)
    elif op in (">=", ">"):
        ax.axhspan(limits[0], high, color="C2", alpha=0.12, label=label)
    elif op in ("<=", "<"):
        ax.axhspan(low, limits[0], color="C2", alpha=0.12, label=label)
    for k, limit in enumerate(limits):
        # `==` shades nothing: its line carries the legend entry.
        shaded = op in ("between", ">=", ">", "<=", "<")
        ax.axhline(limit, color="C2", linestyle="--", linewidth=1.2, label=None if shaded or k else label)
    ax.set_ylim(low, high)


def _as_numbers(values: Any) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None
