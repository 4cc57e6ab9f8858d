"""Internal: the figures of `kexp bench --sweep` and `kexp sweep`, rendered off-screen (Agg).

They plot what those commands measured (throughput against settings, a
metric per swept key); `kexp.study.plots.save` writes them.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: figures only become PNG files
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


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


def grid_sweep_figure(sweep: Any, keys: Any, metrics: Any) -> Any:
    """Returns `kexp sweep`'s figure: one panel per (metric, swept key), every finished point a dot.

    The mean over the points that share a key's value is a line through
    numeric values and a mark at each category; values or metrics spanning
    a decade or more get a log axis.
    """
    done = [p for p in sweep["points"] if p["metrics"]]
    fig, axes = plt.subplots(len(metrics), len(keys), figsize=(4.2 * len(keys), 3.2 * len(metrics)), squeeze=False)
    for col, key in enumerate(keys):
        values = sweep["grid"][key]
        numbers = _as_numbers(values)
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            xs, ys = [], []
            for p in done:
                if metric in p["metrics"] and p["metrics"][metric] is not None:
                    position = values.index(p["settings"][key])
                    xs.append(numbers[position] if numbers else position)
                    ys.append(p["metrics"][metric])
            ax.plot(xs, ys, "o", alpha=0.6)
            positions = numbers or list(range(len(values)))
            means = [(x, sum(y for xx, y in zip(xs, ys) if xx == x) / xs.count(x)) for x in positions if x in xs]
            if means:
                # A line only where values have an order; categories get a mark per mean.
                ax.plot(*zip(*means), "-" if numbers else "_", color="C1", markersize=30, label="mean")
            if numbers and min(numbers) > 0 and max(numbers) >= 10 * min(numbers):
                ax.set_xscale("log")
                ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            if ys and min(ys) > 0 and max(ys) >= 10 * min(ys):
                ax.set_yscale("log")
            if not numbers:
                ax.set_xlim(-0.5, len(values) - 0.5)
            ax.set_xticks(positions, values)
            ax.set_xlabel(key)
            ax.set_ylabel(metric)
    fig.suptitle(f"kexp sweep {sweep['experiment']}: {len(done)} of {len(sweep['points'])} points finished")
    fig.tight_layout()
    return fig


def _as_numbers(values: Any) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None
