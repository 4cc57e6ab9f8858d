"""What the figures and the closing summary show (issue 25): readable labels, one row of honest sweep panels,
each number printed once.

The figure functions are called directly and their matplotlib Figures
inspected (scales, limits, lines, text sizes and extents after drawing);
one tiny real `kexp run` checks the summary.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from helpers import run_cli_here

from kexp.cli import sweep_plots
from kexp.study import plots, tables


def _sweep(grid: dict[str, list[str]], metrics_of) -> dict:
    """A `sweep.json` of the product of `grid`, each point's metrics from `metrics_of(settings)`."""
    import itertools

    points = []
    for index, combo in enumerate(itertools.product(*grid.values())):
        settings = dict(zip(grid, combo))
        points.append({"index": index, "settings": settings, "metrics": metrics_of(settings)})
    return {"experiment": "demo", "grid": grid, "points": points}


def _bar_lines(ax) -> list[float]:
    """The y of every horizontal dashed line in a panel (the quality bar's)."""
    return [line.get_ydata()[0] for line in ax.lines
            if line.get_linestyle() == "--" and len(set(line.get_ydata())) == 1]


def test_sweep_figure_is_one_row_a_panel_per_metric_with_log_scale_bar_and_honest_limits():
    # lstm_sine's sweep after 3 epochs: test_mse 0.0117 and 0.0095 against a bar of 1e-3 (a decade below),
    # a first-quarter rollout error of 0.0036 and 0.0029 (close: 24% apart), no bar on it.
    values = {"lstm": {"test_mse": 0.0117, "rollout_mse_first_quarter": 0.0036, "fraction": -0.4},
              "simple": {"test_mse": 0.0095, "rollout_mse_first_quarter": 0.0029, "fraction": 0.3}}
    sweep = _sweep({"model.cell": ["lstm", "simple"]}, lambda s: values[s["model.cell"]])
    metrics = ["test_mse", "rollout_mse_first_quarter", "fraction"]
    fig = sweep_plots.grid_sweep_figure(sweep, ["model.cell"], metrics, {"test_mse": ("<=", 1e-3)})
    axes = fig.axes
    assert len(axes) == 3
    assert {ax.get_subplotspec().get_geometry()[:2] for ax in axes} == {(1, 3)}, "one row of three panels"
    assert [ax.get_title() for ax in axes] == metrics
    test_mse, quarter, fraction = axes
    # Values and bar span more than a decade: log; the bar is a dashed line, named in the legend.
    assert test_mse.get_yscale() == "log"
    assert _bar_lines(test_mse) == [1e-3]
    assert [t.get_text() for t in test_mse.get_legend().get_texts()] == ["bar ≤ 1e-3"]
    low, high = test_mse.get_ylim()
    assert low < 1e-3 < 0.0117 < high
    # Close values: linear, and the range at least half the values' size, so 24% apart is not the whole panel.
    assert quarter.get_yscale() == "linear" and _bar_lines(quarter) == [] and quarter.get_legend() is None
    low, high = quarter.get_ylim()
    assert high - low >= 0.5 * 0.0036 and low >= 0
    assert (0.0036 - 0.0029) / (high - low) < 0.45
    # Values of both signs: linear, the values' own range.
    assert fraction.get_yscale() == "linear" and fraction.get_ylim()[0] < -0.4 < 0.3 < fraction.get_ylim()[1]
    # One point per cell: two dots, unjoined (no order), and no box (six more lines: box, whiskers, caps, median).
    for ax in axes:
        (dots,) = [line for line in ax.lines if line.get_linestyle() != "--"]
        assert (len(dots.get_xdata()), dots.get_linestyle()) == (2, "None")


def test_an_equality_bar_is_a_named_line_without_a_legend_warning():
    import warnings

    sweep = _sweep({"model.cell": ["lstm", "simple"]}, lambda s: {"classes": 10.0 if s["model.cell"] == "lstm" else 9.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels found to put in legend"
        (ax,) = sweep_plots.grid_sweep_figure(sweep, ["model.cell"], ["classes"], {"classes": ("==", 10)}).axes
    assert _bar_lines(ax) == [10]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["bar = 10"]


def test_sweep_figure_boxes_groups_of_three_colours_series_and_logs_a_numeric_key():
    # train.learning_rate spans two decades (a log x axis, a line per cell); the seeds give 3 points per x.
    grid = {"train.learning_rate": ["0.001", "0.01", "0.1"], "model.cell": ["lstm", "gru"],
            "train.seed": ["0", "1", "2"]}
    rng = np.random.default_rng(0)
    sweep = _sweep(grid, lambda s: {"loss": float(s["train.learning_rate"]) * (1 + rng.random())})
    sweep["points"][4]["metrics"] = {}  # a point that did not finish
    sweep["points"][5]["metrics"] = {"loss": float("nan")}  # one that diverged
    (ax,) = sweep_plots.grid_sweep_figure(sweep, list(grid), ["loss"]).axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "train.learning_rate"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"model.cell={c}, train.seed={s}" for c in ("lstm", "gru") for s in "012"]
    # 18 points less the 2 without a finite loss; every x keeps three or more: a box each (median lines grey).
    series = [line for line in ax.lines if line.get_label() in labels]
    assert sum(len(line.get_xdata()) for line in series) == 16
    medians = [line for line in ax.lines if line.get_color() == "0.4"]
    assert len(medians) == 3


def test_generated_digit_labels_are_readable_and_fit_their_tiles():
    # dcgan_digits' figure: 100 generated 16x16 digits, each under "DIGIT (PROBABILITY)" from the judge.
    rng = np.random.default_rng(0)
    titles = [f"{k // 10} (0.{rng.integers(10, 99)})" for k in range(100)]
    fig = plots.image_grid(rng.random((100, 16, 16)), titles, ncols=10, title="generated samples")
    (ax,) = fig.axes
    assert {text.get_fontsize() for text in ax.texts} == {14.0}, "were 7 pt: unreadable at the figure's size"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    # One tile's width in display pixels: 16 image pixels of the mosaic.
    x0, _ = ax.transData.transform((0, 0))
    x1, _ = ax.transData.transform((16, 0))
    widths = [text.get_window_extent(renderer).width for text in ax.texts]
    assert max(widths) <= 1.02 * abs(x1 - x0), "a label overlaps its neighbours"
    # Long titles shrink to their tile instead of overlapping.
    long = plots.image_grid(rng.random((4, 16, 16)), ["airplane→automobile"] * 4, ncols=4)
    assert long.axes[0].texts[0].get_fontsize() < 9


def test_zoo_figure_names_each_net_in_a_legend_not_beside_its_point():
    # cnn_zoo at its defaults: seven nets within 0.95-0.99, where text beside each point piled up.
    names = ["lenet", "alexnet", "vgg", "vgg_bn", "nin", "googlenet", "resnet"]
    accuracy = [0.972, 0.969, 0.978, 0.981, 0.958, 0.975, 0.986]
    speed = [2200, 1700, 560, 540, 900, 600, 1100]
    params = [61706, 120000, 375000, 376000, 80000, 59000, 75000]
    curves = {n: [a - 0.3, a] for n, a in zip(names, accuracy)}
    fig = plots.zoo_figure(curves, {n: (s, a, p) for n, s, a, p in zip(names, speed, accuracy, params)})
    left, right = fig.axes
    assert len(right.texts) == 0
    assert [t.get_text() for t in right.get_legend().get_texts()] == [
        f"{n} ({p:,} params)" for n, p in zip(names, params)]
    markers = [line.get_marker() for line in right.lines]
    assert len(set(markers)) == 7 and markers == [line.get_marker() for line in left.lines]
    assert right.get_xscale() == "linear", "throughput spans 4x, not a decade"


def test_take_shown_returns_what_tables_printed_once(tmp_path):
    tables.mark_shown(tmp_path, "comparison", ["a_x", "b_x"])
    tables.mark_shown(tmp_path, "comparison", ["a_y"])
    assert tables.take_shown(tmp_path) == {"comparison": ["a_x", "b_x", "a_y"]}
    assert tables.take_shown(str(tmp_path)) == {}


def test_run_prints_a_number_in_its_table_once(tmp_path):
    """rnn_memory's table shows every metric: the summary counts them instead of listing them again."""
    proc = run_cli_here("run", "rnn_memory", "--set", "model.cells=simple", "--set", "model.compare_clipping=false",
                        "--set", "data.length=10", "--set", "data.train_size=256", "--set", "data.test_size=100",
                        "--set", "model.units=4", "--set", "train.epochs=1", "--logdir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    metrics = json.loads((Path(lines[-1].removeprefix("run_dir: ")) / "results.json").read_text())["metrics"]
    assert set(metrics) == {"mse_baseline", "mse_simple_rnn"}
    assert [line for line in lines if line.startswith(("mse_simple_rnn:", "mse_baseline:"))] == []
    row = next(line for line in lines if line.startswith("| simple_rnn |"))
    assert row.split(" | ")[1] == f"{metrics['mse_simple_rnn']:.4g}"
    assert ("(2 metrics are not listed here: the comparison table above shows them; results.json has every metric)"
            in lines)
    # The contracts stay: the bar, the status line and run_dir last.
    # The bars of the cells these settings leave out are named as not measured, not as missed with a value None.
    bar_line = next(line for line in lines if line.startswith("quality bar: "))
    assert bar_line.startswith(("quality bar: met (mse_simple_rnn ≥ 0.1).", "quality bar: missed: mse_simple_rnn "))
    assert bar_line.endswith(". Not measured by these settings: mse_lstm, mse_gru, mse_lstm_clipped, mse_gru_clipped, "
                             "mse_simple_rnn_clipped")
    assert "None" not in bar_line
    assert any(line.startswith("status: ") for line in lines)
    assert lines[-1].startswith("run_dir: ")


def test_gradient_figure_marks_its_points_when_there_are_few():
    """A fit of few compiled calls has few measurements: markers keep two points from reading as a smooth curve."""
    few = {"lstm": ([0, 75], [1.0, 0.5], np.ones(10)), "lstm_clipped": ([0, 75], [1.0, 0.4], None)}
    many = {"lstm": (list(range(0, 3075, 75)), list(np.linspace(1, 2, 41)), np.ones(10))}
    networks = ("simple_rnn", "gru", "lstm")
    (left, _), (left_many, _) = (plots.gradient_norm_figure(curves, 10, networks).axes for curves in (few, many))
    assert [line.get_marker() for line in left.get_lines()] == ["o", "o"]
    assert [line.get_linestyle() for line in left.get_lines()] == ["-", "--"]
    assert [line.get_marker() for line in left_many.get_lines()] == ["None"]
    assert "after each compiled call" in left.get_xlabel()
    # An LSTM keeps its color whichever networks the run trained.
    (_, right_many) = plots.gradient_norm_figure({"simple_rnn": many["lstm"], "lstm": many["lstm"]}, 10, networks).axes
    assert left.get_lines()[0].get_color() == right_many.get_lines()[1].get_color() == "C2"
