"""Each core experiment meets its quality bar at default settings (slow; CI runs them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import REPO, read_events

import kexp
from kexp import quality, registry


def _run(name: str, logdir: Path, *overrides: str) -> dict:
    results = kexp.run(name, list(overrides), logdir=logdir, verbose=0)
    assert results["status"] == "ok"
    on_disk = json.loads((Path(results["run_dir"]) / "results.json").read_text())
    assert on_disk["metrics"] == results["metrics"]
    return results


def _heart_mlp(results: dict) -> None:
    metrics = results["metrics"]
    # Outside the training square the approximation breaks down.
    assert metrics["outside_rel_mse"] > 100 * metrics["test_rel_mse"]


def _xor(results: dict) -> None:
    run_dir = Path(results["run_dir"])
    assert (run_dir / "decision_boundaries.png").exists()
    # Each of the two fits logs to its own TensorBoard folder.
    for fit in ("single_layer", "two_layer"):
        assert len(read_events(run_dir / fit / "train")["epoch_loss"]) == results["config"]["train"]["epochs"]


def _classifier(results: dict) -> None:
    metrics = results["metrics"]
    assert metrics["train_accuracy"] >= metrics["test_accuracy"] - 0.02
    assert 0 < metrics["test_loss"] < 0.5
    assert {"confusion_matrix", "misclassified"} <= set(read_events(Path(results["run_dir"]) / "plots"))


def _gan_gaussian_1d(results: dict) -> None:
    run_dir = Path(results["run_dir"])
    history = read_events(run_dir / "train")
    assert {"epoch_d_loss", "epoch_g_loss", "epoch_learning_rate_d_optimizer"} <= set(history)
    # The generated distribution along training, not only at the end.
    epochs = results["config"]["train"]["epochs"]
    steps = [step for step, _ in read_events(run_dir / "plots")["gan_1d_along_training"]]
    assert steps == [0, max(1, epochs // 2), epochs]


def _dcgan_digits(results: dict) -> None:
    run_dir = Path(results["run_dir"])
    epochs = results["config"]["train"]["epochs"]
    sample_steps = [step for step, _ in read_events(run_dir / "plots")["samples"]]
    assert sample_steps[-1] == epochs and len(sample_steps) >= 10
    assert (run_dir / "samples" / f"epoch_{epochs:03d}.png").exists()
    assert len(read_events(run_dir / "dcgan" / "train")["epoch_d_loss"]) == epochs
    assert kexp.load_model(run_dir, fit="dcgan").generator.output_shape[1:] == (16, 16, 1)


# What each run shows beyond its declared bars. lstm_sine runs in test_lstm_sine.py, char_rnn and
# rnn_memory (minutes at defaults) in test_sequence_experiments.py, the training studies in test_studies.py.
EXTRA_CHECKS = {
    "heart_mlp": _heart_mlp, "xor": _xor, "softmax": _classifier, "mlp": _classifier, "lenet": _classifier,
    "gan_gaussian_1d": _gan_gaussian_1d, "dcgan_digits": _dcgan_digits,
}


def test_every_bundled_experiment_declares_bars_and_is_run_by_a_quality_test():
    bundled = sorted(n for n, spec in registry.discover().items() if spec.path.parent == registry.bundled_dir())
    studies = ["cnn_zoo", "regularization", "optimizers", "transfer", "linear_regression"]
    assert sorted([*EXTRA_CHECKS, "lstm_sine", "char_rnn", "rnn_memory", *studies]) == bundled
    for name in bundled:
        expected = registry.load(name).EXPECTED
        quality.check_declaration(expected, name)
        assert expected


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXTRA_CHECKS))
def test_experiment_meets_its_declared_bars(name, logdir):
    results = _run(name, logdir)
    assert quality.failures(registry.load(name).EXPECTED, results["metrics"]) == []
    EXTRA_CHECKS[name](results)
    # Every fit runs a compiled call's batches in one loop: heart_mlp's 313-step epochs and the GANs' own steps too.
    assert {fit: settings["fused_steps"] for fit, settings in results["fits"].items()} == {
        fit: True for fit in results["fits"]}


def test_readme_table_states_each_experiments_declared_bars():
    text = (REPO / "README.md").read_text()
    for name, spec in registry.discover().items():
        if spec.path.parent != registry.bundled_dir():
            continue
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"README experiments table has no row for {name}"
        for metric, bar in registry.load(name).EXPECTED.items():
            pattern = rf"`{metric}` [^|(]*\({re.escape(quality.describe(bar))}[);]"
            assert re.search(pattern, row), f"{name}: README row lacks `{metric}` ... ({quality.describe(bar)})"


@pytest.mark.parametrize("mu, sigma", [(1e6, 1e-3), (1e6, 1e-300), (1e6, 61.04), (4.0, 1.25)])
def test_gan_1d_figure_draws_a_histogram_whatever_the_span_of_its_float32_grid(mu, sigma):
    # Below gan_gaussian_1d's sigma limit (library callers) the float32 grid collapses to a few values or one:
    # its 60 bins then collided ("Too many bins for data range"). At and above the limit the bins are the grid's.
    import numpy as np

    from kexp import plots

    grid = np.linspace(mu - 4 * sigma, mu + 4 * sigma, 400, dtype="float32")
    samples = np.random.default_rng(0).normal(mu, sigma, 1000).astype("float32")
    with np.errstate(all="ignore"):  # the density of a collapsed grid divides by zero; only the histogram matters
        figure = plots.gan_1d_figure([("end", grid, samples, np.full(400, 0.5))], mu, sigma)
    bars = figure.axes[0].patches
    assert bars and sum(bar.get_height() * bar.get_width() for bar in bars) == pytest.approx(1.0, rel=1e-3)
    if sigma >= 61.04:
        assert len(bars) == 60
    assert plots.to_png(figure)
