"""Each core experiment meets its quality bar at default settings (slow; CI runs them)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from helpers import REPO, read_events, tier_marks

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


def _classifier_figures(results: dict) -> None:
    assert {"confusion_matrix", "misclassified"} <= set(read_events(Path(results["run_dir"])))


def _classifier(results: dict) -> None:
    metrics = results["metrics"]
    assert metrics["train_accuracy"] >= metrics["test_accuracy"] - 0.02
    assert 0 < metrics["test_loss"] < 0.5
    _classifier_figures(results)


def _gan_gaussian_1d(results: dict) -> None:
    run_dir = Path(results["run_dir"])
    history = read_events(run_dir / "train")
    assert {"epoch_d_loss", "epoch_g_loss", "epoch_learning_rate_d_optimizer"} <= set(history)
    # The generated distribution along training, not only at the end.
    epochs = results["config"]["train"]["epochs"]
    steps = [step for step, _ in read_events(run_dir)["gan_1d_along_training"]]
    assert steps == [0, max(1, epochs // 2), epochs]


def _dcgan_digits(results: dict) -> None:
    run_dir = Path(results["run_dir"])
    epochs = results["config"]["train"]["epochs"]
    sample_steps = [step for step, _ in read_events(run_dir)["samples"]]
    assert sample_steps[-1] == epochs and len(sample_steps) >= 10
    assert (run_dir / "samples" / f"epoch_{epochs:03d}.png").exists()
    assert len(read_events(run_dir / "dcgan" / "train")["epoch_d_loss"]) == epochs
    assert kexp.load_model(run_dir, fit="dcgan").generator.output_shape[1:] == (16, 16, 1)


def _optimizers(results: dict) -> None:
    run_dir = Path(results["run_dir"])
    names = ["gd", "sgd", "minibatch", "momentum", "rmsprop", "adam"]
    n = results["fits"]["gd"]["train_examples"]
    assert {name: results["fits"][name]["global_batch_size"] for name in names} == {
        "gd": n, "sgd": 1, "minibatch": 32, "momentum": 32, "rmsprop": 32, "adam": 32}
    epochs = results["config"]["train"]["epochs"]
    with open(run_dir / "comparison.csv", newline="") as handle:
        rows = {row["optimizer"]: row for row in csv.DictReader(handle)}
    assert list(rows) == names
    assert int(rows["gd"]["steps"]) == epochs and int(rows["sgd"]["steps"]) == epochs * n
    for name in names:  # one TensorBoard folder per optimizer, one point per epoch
        assert len(read_events(run_dir / name / "train")["epoch_loss"]) == epochs
    assert (run_dir / "loss_curves.png").exists()


# What each run shows beyond its declared bars.
EXTRA_CHECKS = {
    "heart_mlp": _heart_mlp, "xor": _xor, "softmax": _classifier, "mlp": _classifier, "lenet": _classifier,
    "gan_gaussian_1d": _gan_gaussian_1d, "dcgan_digits": _dcgan_digits,
}
# What a run shows at any settings: checked at the smoke settings too (an experiment whose bars are `quality`).
SHAPE_CHECKS = {"lenet": _classifier_figures, "gan_gaussian_1d": _gan_gaussian_1d, "optimizers": _optimizers}
# Experiments whose default run is tested in a file of its own (with claims beyond the bars), and that test.
OWN_DEFAULT_RUN_TEST = {
    "lstm_sine": ("test_lstm_sine.py", "test_lstm_sine_default_run_meets_quality_bar"),
    "char_rnn": ("test_sequence_experiments.py", "test_char_rnn_beats_the_best_ngram_and_closes_its_brackets"),
    "rnn_memory": ("test_sequence_experiments.py", "test_rnn_memory_gated_cells_remember_where_a_simple_rnn_cannot"),
    "linear_regression": ("test_studies.py", "test_linear_regression_recovers_the_weights_as_well_as_least_squares"),
    "optimizers": ("test_studies.py", "test_optimizers_share_one_example_budget_and_show_the_tradeoff"),
    "transfer": ("test_studies.py", "test_transfer_fine_tuning_beats_training_from_scratch_on_few_labels"),
    "cnn_zoo": ("test_studies.py", "test_cnn_zoo_every_family_learns_the_digits_and_batch_norm_starts_faster"),
    "regularization": ("test_studies.py", "test_regularization_keeps_the_mlp_from_learning_the_noise"),
}


def _bundled() -> list[str]:
    return sorted(n for n, spec in registry.discover().items() if spec.path.parent == registry.bundled_dir())


def test_every_bundled_experiment_declares_bars_and_time_and_its_default_run_is_tested_in_its_tier():
    # The experiments come from the registry: a new one without a default-run test fails here.
    assert sorted([*EXTRA_CHECKS, *OWN_DEFAULT_RUN_TEST]) == _bundled()
    for name in _bundled():
        module = registry.load(name)
        quality.check_declaration(module.EXPECTED, name)
        assert module.EXPECTED and module.EXPECTED_TIME_S > 0
    for name, (file, test) in OWN_DEFAULT_RUN_TEST.items():
        # Marked by the experiment's own tier: quick ones in the README's test command, the others `quality`.
        assert f'@bars_tier("{name}")\ndef {test}(' in (REPO / "tests" / file).read_text(), (name, file, test)


@pytest.mark.parametrize("name", [pytest.param(n, marks=tier_marks(n)) for n in EXTRA_CHECKS])
def test_experiment_meets_its_declared_bars(name, logdir):
    results = _run(name, logdir)
    assert quality.failures(registry.load(name).EXPECTED, results["metrics"]) == []
    EXTRA_CHECKS[name](results)
    _every_fit_fused(results)


def _every_fit_fused(results: dict) -> None:
    # Every fit runs a compiled call's batches in one loop: heart_mlp's 313-step epochs and the GANs' own steps too.
    assert {fit: settings["fused_steps"] for fit, settings in results["fits"].items()} == {
        fit: True for fit in results["fits"]}


@pytest.mark.parametrize("name", [n for n in _bundled() if not quality.is_quick(registry.load(n))])
def test_a_slow_experiment_trains_at_its_smoke_settings(name, logdir):
    # Its bars need the defaults (kexp check, pytest -m quality); here it must train, record and save.
    module = registry.load(name)
    results = _run(name, logdir, *(f"{key}={value}" for key, value in module.SMOKE_SETTINGS.items()))
    run_dir = Path(results["run_dir"])
    assert set(module.EXPECTED) <= set(results["metrics"])
    # Its figures (or, for char_rnn, its text samples) went to the folder and to TensorBoard.
    # The run's root also holds kexp's own text, the HParams session and the final metrics.
    logged = {tag for tag in read_events(run_dir)
              if tag != "config" and not tag.startswith(("model_summary", "metrics/", "_hparams_/"))}
    assert logged and (list(run_dir.rglob("*.png")) or list(run_dir.glob("*.txt"))), logged
    assert results["models"] and all((run_dir / path).is_file() for path in results["models"].values())
    assert set(results["models"]) == set(results["fits"])
    if name in SHAPE_CHECKS:
        SHAPE_CHECKS[name](results)
    if name in EXTRA_CHECKS:
        _every_fit_fused(results)


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

    from kexp.study import plots

    grid = np.linspace(mu - 4 * sigma, mu + 4 * sigma, 400, dtype="float32")
    samples = np.random.default_rng(0).normal(mu, sigma, 1000).astype("float32")
    with np.errstate(all="ignore"):  # the density of a collapsed grid divides by zero; only the histogram matters
        figure = plots.gan_1d_figure([("end", grid, samples, np.full(400, 0.5))], mu, sigma)
    bars = figure.axes[0].patches
    assert bars and sum(bar.get_height() * bar.get_width() for bar in bars) == pytest.approx(1.0, rel=1e-3)
    if sigma >= 61.04:
        assert len(bars) == 60
    assert plots.to_png(figure)
