"""Matplotlib figures rendered off-screen (Agg), as PNG bytes or files."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 6.0, height: float = 4.0) -> tuple[Any, Any]:
    """Returns a new `(figure, axes)` sized `width x height` inches per panel."""
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=True)


def to_png(fig: Any, dpi: int = 100) -> bytes:
    """Returns the figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save(fig: Any, path: Path, dpi: int = 100) -> bytes:
    """Writes the figure to `path` as PNG, closes it and returns the bytes."""
    data = to_png(fig, dpi=dpi)
    Path(path).write_bytes(data)
    plt.close(fig)
    return data


def forecast_figure(
    x_context: Any, y_context: Any, x: Any, truth: Any, forecast: Any, title: str = ""
) -> Any:
    """Returns a figure: truth vs forecast, and the squared error along the horizon.

    Args:
        x_context: x of the known samples the forecast started from.
        y_context: Their values.
        x: x of the forecast samples.
        truth: True values at `x`.
        forecast: Forecast values at `x`.
        title: Figure title.

    Returns:
        The matplotlib figure.
    """
    import numpy as np

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, height_ratios=(2, 1))
    # Half a horizon of context is enough to see the hand-over from data to forecast.
    shown = max(1, len(x) // 2)
    top.plot(x_context[-shown:], y_context[-shown:], color="0.6", label="context (known)")
    top.plot(x, truth, color="C0", label="truth")
    top.plot(x, forecast, color="C1", linestyle="--", label="rollout forecast")
    top.set_ylabel("f(x)")
    top.legend(loc="upper right", fontsize="small")
    top.set_title(title)
    err = (np.asarray(forecast) - np.asarray(truth)) ** 2
    bottom.semilogy(x, np.maximum(err, 1e-12), color="C3", linewidth=0.8, label="squared error")
    running = np.cumsum(err) / np.arange(1, len(err) + 1)
    bottom.semilogy(x, np.maximum(running, 1e-12), color="k", label="running MSE")
    bottom.set_xlabel("x (never seen in training)")
    bottom.set_ylabel("error")
    bottom.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig
