"""Matplotlib figures rendered off-screen (Agg), as PNG bytes or files."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np  # matplotlib imports it anyway

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from kexp.errors import WriteError  # noqa: E402


def to_png(fig: Any, dpi: int = 100) -> bytes:
    """Returns the figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save(fig: Any, path: Path, dpi: int = 100) -> bytes:
    """Writes the figure to `path` as PNG, closes it and returns the bytes.

    Raises:
        WriteError: Naming `path`, when it cannot be written.
    """
    data = to_png(fig, dpi=dpi)
    plt.close(fig)
    try:
        Path(path).write_bytes(data)
    except OSError as err:
        Path(path).unlink(missing_ok=True)  # no half-written PNG
        raise WriteError(path, err) from None
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


def confusion_figure(matrix: Any, class_names: Any, title: str = "") -> Any:
    """Returns a confusion-matrix heat map (rows: true class, columns: predicted)."""
    matrix = np.asarray(matrix)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > threshold else "black")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def image_grid(images: Any, titles: Any = None, ncols: int = 10, title: str = "") -> Any:
    """Returns a grid of images (values in [0, 1]; one channel shown grey), each under its title if given.

    The images are tiled into one picture drawn once (titles as text over
    it): a grid of 100 subplots took 1.3 s to draw and save, which
    `dcgan_digits` paid at every tenth epoch.
    """
    images = np.clip(np.asarray(images, dtype="float32"), 0, 1)
    if images.ndim == 3:
        images = images[..., None]
    count = len(images)
    ncols = max(1, min(ncols, count))
    nrows = max(1, -(-count // ncols))
    height, width = (images.shape[1], images.shape[2]) if count else (1, 1)
    channels = images.shape[-1] if count else 1
    # White gutters between tiles; taller ones above each tile hold its title.
    gap = max(1, width // 8)
    top = max(gap, height // 2) if titles is not None else gap
    cell_h, cell_w = top + height, gap + width
    mosaic = np.ones((nrows * cell_h + gap, ncols * cell_w + gap, channels), dtype="float32")
    for k, image in enumerate(images):
        row, col = divmod(k, ncols)
        y, x = row * cell_h + top, col * cell_w + gap
        mosaic[y:y + height, x:x + width] = image
    # 1.2 inches a column, the figure cut to the mosaic: a tile's size in points is known, and so is the largest
    # title that fits over it (7 pt titles on 100 tiles were unreadable at the figure's size).
    inches = 1.2 / cell_w
    head = 0.5 if title else 0.0
    fig = plt.figure(figsize=(mosaic.shape[1] * inches, mosaic.shape[0] * inches + head))
    ax = fig.add_axes((0, 0, 1, 1 - head / fig.get_figheight()))
    ax.imshow(mosaic[..., 0] if channels == 1 else mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if titles is not None:
        titles = [str(text) for text in list(titles)[:count]]
        # At most 14 pt, 60% of the band above a tile, and as wide as a tile (a character is ~0.6 em wide).
        points = 72 * inches  # per mosaic pixel
        size = min(14.0, 0.6 * top * points, cell_w * points / (0.6 * max(map(len, titles), default=1)))
        for k, text in enumerate(titles):
            row, col = divmod(k, ncols)
            ax.text(col * cell_w + gap + width / 2, row * cell_h + top - 0.5, text, ha="center", va="bottom",
                    fontsize=size)
    if title:
        fig.suptitle(title, y=1 - 0.1 * head / fig.get_figheight(), va="top", fontsize=14)
    return fig


def surface_comparison_figure(
    x: Any, y: Any, truth: Any, learned: Any, *, level: float, box: float, title: str = ""
) -> Any:
    """Returns true vs learned surface on a grid, and their level-`level` curves overlaid.

    Args:
        x: 1-D grid coordinates along x.
        y: 1-D grid coordinates along y.
        truth: True values, shape `(len(y), len(x))`.
        learned: Model values, same shape.
        level: The level set drawn in the third panel (the heart: f = 1).
        box: Half-width of the training square, drawn as a dashed outline.
        title: Figure title.

    Returns:
        The matplotlib figure.
    """
    # float32 copies: a model under a mixed policy predicts bfloat16/float16, which matplotlib's contours refuse.
    truth, learned = np.asarray(truth, dtype=np.float32), np.asarray(learned, dtype=np.float32)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    # One colour scale for both surfaces, so differences show as colour.
    levels = np.linspace(float(np.min(truth)), float(np.percentile(truth, 99)), 30)
    for ax, values, name in ((axes[0], truth, "true f(x, y)"), (axes[1], learned, "learned f̂(x, y)")):
        image = ax.contourf(x, y, np.clip(values, levels[0], levels[-1]), levels=levels, cmap="viridis")
        fig.colorbar(image, ax=ax)
        ax.set_title(name)
    axes[2].contour(x, y, truth, levels=[level], colors="C0", linewidths=2)
    axes[2].contour(x, y, learned, levels=[level], colors="C3", linestyles="--", linewidths=2)
    axes[2].plot([], [], color="C0", label=f"true f = {level:g}")
    axes[2].plot([], [], color="C3", linestyle="--", label=f"learned f̂ = {level:g}")
    axes[2].legend(loc="lower left", fontsize="small")
    axes[2].set_title("the heart: level curves")
    for ax in axes:
        ax.plot([-box, box, box, -box, -box], [-box, -box, box, box, -box], "w--" if ax is not axes[2] else "k--",
                linewidth=1)
        ax.set_aspect("equal")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def decision_boundary_figure(panels: Any, points: Any, labels: Any, *, extent: float = 0.5) -> Any:
    """Returns one panel per classifier: its P(class 1) over the plane and the data points.

    Args:
        panels: `[(title, predict_fn), ...]`; `predict_fn(xy) -> probabilities` of shape `(n,)`.
        points: `(n, 2)` inputs.
        labels: `(n,)` 0/1 labels.
        extent: Margin around the points.

    Returns:
        The matplotlib figure.
    """
    points, labels = np.asarray(points), np.asarray(labels).ravel()
    lo, hi = points.min() - extent, points.max() + extent
    axis = np.linspace(lo, hi, 200, dtype="float32")
    gx, gy = np.meshgrid(axis, axis)
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.4), squeeze=False)
    for ax, (title, predict) in zip(axes[0], panels):
        prob = np.asarray(predict(grid), dtype=np.float32).reshape(gx.shape)  # (a mixed policy's bfloat16 too)
        image = ax.contourf(gx, gy, prob, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.8)
        ax.contour(gx, gy, prob, levels=[0.5], colors="k", linewidths=1.5)
        ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="RdBu_r", edgecolors="k", s=120, vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_aspect("equal")
        fig.colorbar(image, ax=ax, label="P(class 1)")
    fig.tight_layout()
    return fig


def gan_1d_figure(snapshots: Any, mu: float, sigma: float) -> Any:
    """Returns one panel per snapshot: data density, generator density and D(x) (Goodfellow et al., fig. 1).

    Args:
        snapshots: `[(title, x_grid, generated_samples, d_of_x), ...]`.
        mu: Data mean.
        sigma: Data standard deviation.

    Returns:
        The matplotlib figure.
    """
    fig, axes = plt.subplots(1, len(snapshots), figsize=(5 * len(snapshots), 3.8), squeeze=False, sharey=True)
    for ax, (title, grid, samples, d_of_x) in zip(axes[0], snapshots):
        pdf = np.exp(-0.5 * ((grid - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        ax.plot(grid, pdf, color="k", linestyle=":", label="data density")
        # float64 edges, repeats dropped: 61 float32 edges over a span of a few float32 steps collide ("Too many bins").
        edges = np.unique(np.linspace(float(grid[0]), float(grid[-1]), 61))
        ax.hist(np.clip(samples, edges[0], edges[-1]), bins=edges if edges.size > 1 else 1, density=True,
                color="C2", alpha=0.5, label="generator density")
        ax.plot(grid, d_of_x, color="C0", label="D(x)")
        ax.axhline(0.5, color="C0", linewidth=0.5, linestyle="--")
        ax.set(title=title, xlabel="x", ylim=(0, max(1.05, 1.2 * pdf.max())))
    axes[0][0].legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig


def gradient_norm_figure(curves: Any, length: int, networks: Sequence[str] = ()) -> Any:
    """Returns two panels: weight-gradient norm over training, and input-gradient norm per time step after it.

    Args:
        curves: `{name: (steps, weight_norms, input_norms)}` (`kexp.study.gradients.GradientNormRecorder`).
        length: Time steps per sequence.
        networks: Every network a run may train, in order: each keeps its color whichever ones this run trained.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2))
    bases = list(dict.fromkeys([*networks, *(name.removesuffix("_clipped") for name in curves)]))
    for name, (steps, weight_norms, input_norms) in curves.items():
        # Its clipped run dashed.
        style = {"color": f"C{bases.index(name.removesuffix('_clipped'))}",
                 "linestyle": "--" if name.endswith("_clipped") else "-"}
        # A resumed fit's recorder saw only the steps after the resume.
        label = name if not steps or steps[0] == 0 else f"{name} (from step {steps[0]}: resumed)"
        # Measured once per compiled call: with few calls, markers show that the line joins a few points.
        left.plot(steps, weight_norms, label=label, marker="o" if len(steps) <= 20 else None, markersize=3, **style)
        if input_norms is not None:
            right.plot(range(length), input_norms, label=name, **style)
    _style(left, "optimizer step (measured after each compiled call)", "|d loss / d weights| (probe batch)",
           "gradient norm over training", "log", legend=True)
    _style(right, "input time step t", "|d loss / d x_t| (probe batch)",
           "after training: how much the loss feels step t", "log", legend=True)
    fig.tight_layout()
    return fig


def _style(axes: Any, xlabel: str, ylabel: str, title: str, yscale: str = "linear", legend: bool = False) -> None:
    """Labels one panel; `legend` adds a small legend of its labelled lines; an `epoch` axis gets whole ticks."""
    if xlabel == "epoch":
        axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))  # even for one
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.set_yscale(yscale)
    if legend:
        axes.legend(fontsize="small")


def linear_regression_figure(losses: Any, errors: Any, first_epoch: int, names: Any, lstsq_errors: Any) -> Any:
    """Returns two panels: training loss per epoch, and each parameter's absolute error per epoch.

    Args:
        losses: Training loss of each epoch.
        errors: `(epochs, parameters)` absolute errors of the estimates after each recorded epoch.
        first_epoch: The epoch (from 1) of the first row of `errors`.
        names: Parameter names.
        lstsq_errors: The closed-form solution's error per parameter (dashed lines).
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    left.plot(range(1, len(losses) + 1), losses, marker="o")
    _style(left, "epoch", "training loss (MSE)", "loss", yscale="log")
    epochs = range(first_epoch, first_epoch + len(errors))
    for i, name in enumerate(names):
        right.plot(epochs, [row[i] for row in errors], marker="o", color=f"C{i}", label=f"{name}: gradient descent")
        right.axhline(max(float(lstsq_errors[i]), 1e-12), color=f"C{i}", linestyle="--",
                      label=f"{name}: least squares")
    _style(right, "epoch", "|estimate - true value|", "parameter error", yscale="log", legend=True)
    fig.tight_layout()
    return fig


def loss_curves_figure(curves: Any) -> Any:
    """Returns two panels: each variant's loss against examples seen, and against training seconds.

    Args:
        curves: `{name: [(examples_seen, seconds, loss), ...]}` (`kexp.study.recorders.LossCurveRecorder`).
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    for i, (name, points) in enumerate(curves.items()):
        examples, seconds, losses = zip(*points)
        left.plot(examples, losses, marker=".", color=f"C{i}", label=name)
        right.plot(seconds, losses, marker=".", color=f"C{i}", label=name)
    _style(left, "examples seen", "training loss (whole training set)", "loss against examples", "log", legend=True)
    _style(right, "training seconds (first epoch's tracing included; log scale from 0.01)",
           "training loss (whole training set)", "loss against wall time", "log")
    # The fast optimizers finish in a fraction of a second, single-example SGD in seconds.
    right.set_xscale("symlog", linthresh=0.01)
    right.set_xlim(left=0)
    fig.tight_layout()
    return fig


def variants_figure(accuracies: Any, curves: Any, title: str = "", curve_label: str = "test accuracy",
                    chance: float | None = None) -> Any:
    """Returns two panels: accuracies per variant (mean, bars of ± sample std, dots per seed), and a curve per variant.

    Args:
        accuracies: `{variant: {series: values}}`, e.g. `{"l2": {"train": [...], "test": [...]}}`,
            one value per seed.
        curves: `{variant: per-epoch values}` (e.g. the mean validation accuracy over seeds).
        title: Figure title.
        curve_label: What the curves are.
        chance: Accuracy of guessing, drawn as a dotted line in both panels.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    names = list(accuracies)
    series = list(dict.fromkeys(label for per in accuracies.values() for label in per))
    width = 0.8 / len(series)
    positions = np.arange(len(names))
    for k, label in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * width
        values = [np.asarray(accuracies[n].get(label, []), dtype=float) for n in names]
        left.bar(positions + offset, [v.mean() if v.size else 0 for v in values], width=width, label=label,
                 color=f"C{k}", yerr=[v.std(ddof=1) if v.size > 1 else 0 for v in values], capsize=3, alpha=0.8)
        for p, v in zip(positions, values):
            left.plot([p + offset] * v.size, v, "k.", markersize=4)
    low = min([float(np.min(v)) for per in accuracies.values() for v in per.values() if len(v)]
              + ([chance] if chance is not None else []))
    left.set_xticks(positions, names)
    left.set_ylim(max(0.0, low - 0.1), 1.0)
    _style(left, "", "accuracy", "accuracy (mean ± std over seeds; dots: seeds)", legend=True)
    for i, (name, values) in enumerate(curves.items()):
        right.plot(range(1, len(values) + 1), values, color=f"C{i}", label=name)
    if chance is not None:
        for axes in (left, right):
            axes.axhline(chance, color="grey", linestyle=":", label="chance")
    _style(right, "epoch", curve_label, f"{curve_label} along training (mean over seeds)", legend=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def zoo_figure(curves: Any, points: Any) -> Any:
    """Returns two panels: each model's validation accuracy per epoch, and test accuracy against throughput.

    A model keeps its colour and marker in both panels; a legend names them, not text beside the points,
    which piled into one blob where the models score alike (0.95-1.0 at the defaults).

    Args:
        curves: `{model: validation accuracy per epoch}`.
        points: `{model: (examples_per_s, test_accuracy, params)}`.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    names = list(dict.fromkeys([*curves, *points]))
    style = {name: {"color": f"C{i % 10}", "marker": "osD^vP*Xph"[i % 10]} for i, name in enumerate(names)}
    for name, values in curves.items():
        left.plot(range(1, len(values) + 1), values, label=name, markersize=4, **style[name])
    _style(left, "epoch", "validation accuracy", "validation accuracy along training", legend=True)
    left.set_ylim(max(0.0, min(min(v) for v in curves.values()) - 0.05), 1.0)
    for name, (throughput, accuracy, params) in points.items():
        right.plot([throughput], [accuracy], linestyle="none", markersize=9, alpha=0.85,
                   label=f"{name} ({params:,} params)", **style[name])
    right.margins(0.1)  # no marker cut by the frame
    speeds = [p[0] for p in points.values() if p[0] > 0]
    if speeds and max(speeds) >= 10 * min(speeds):  # a log axis only where throughputs span a decade
        right.set_xscale("log")
    _style(right, "training examples per second (steady epochs)", "test accuracy", "accuracy against cost")
    right.legend(fontsize="small", framealpha=0.9)
    fig.tight_layout()
    return fig
