"""Each core experiment meets its quality bar at default settings (slow; CI runs them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kexp
from conftest import read_events


def _run(name: str, logdir: Path, *overrides: str) -> dict:
    results = kexp.run(name, list(overrides), logdir=logdir, verbose=0)
    assert results["status"] == "ok"
    on_disk = json.loads((Path(results["run_dir"]) / "results.json").read_text())
    assert on_disk["metrics"] == results["metrics"]
    return results


@pytest.mark.slow
def test_heart_mlp_approximates_inside_its_square_only(logdir):
    metrics = _run("heart_mlp", logdir)["metrics"]
    assert metrics["heart_iou"] >= 0.97
    assert metrics["test_rel_mse"] <= 0.01
    # Outside the training square the approximation breaks down.
    assert metrics["outside_rel_mse"] > 100 * metrics["test_rel_mse"]


@pytest.mark.slow
def test_xor_needs_two_layers(logdir):
    results = _run("xor", logdir)
    assert results["metrics"]["single_layer_accuracy"] <= 0.75
    assert results["metrics"]["two_layer_accuracy"] == 1.0
    run_dir = Path(results["run_dir"])
    assert (run_dir / "decision_boundaries.png").exists()
    # Each of the two fits logs to its own TensorBoard folder.
    for fit in ("single_layer", "two_layer"):
        assert len(read_events(run_dir / fit / "train")["epoch_loss"]) == results["config"]["train"]["epochs"]


@pytest.mark.slow
@pytest.mark.parametrize("name, bar", [("softmax", 0.95), ("mlp", 0.97), ("lenet", 0.97)])
def test_digit_classifiers_meet_their_bars(logdir, name, bar):
    results = _run(name, logdir)
    metrics = results["metrics"]
    assert metrics["test_accuracy"] >= bar
    assert metrics["train_accuracy"] >= metrics["test_accuracy"] - 0.02
    assert 0 < metrics["test_loss"] < 0.5
    run_dir = Path(results["run_dir"])
    assert {"confusion_matrix", "misclassified"} <= set(read_events(run_dir / "plots"))


@pytest.mark.slow
def test_gan_gaussian_1d_matches_the_data_and_d_goes_to_one_half(logdir):
    results = _run("gan_gaussian_1d", logdir)
    metrics = results["metrics"]
    assert metrics["mean_error"] <= 0.1
    assert 0.8 <= metrics["std_ratio"] <= 1.2
    assert 0.4 <= metrics["d_mid"] <= 0.6
    history = read_events(Path(results["run_dir"]) / "train")
    assert {"epoch_d_loss", "epoch_g_loss"} <= set(history)


@pytest.mark.slow
def test_dcgan_digits_covers_every_class(logdir):
    results = _run("dcgan_digits", logdir)
    metrics = results["metrics"]
    assert metrics["classes_covered"] == 10
    assert metrics["class_entropy"] >= 2.1
    assert metrics["confident_fraction"] >= 0.6
    assert metrics["judge_test_accuracy"] >= 0.95
    run_dir = Path(results["run_dir"])
    epochs = results["config"]["train"]["epochs"]
    sample_steps = [step for step, _ in read_events(run_dir / "plots")["samples"]]
    assert sample_steps[-1] == epochs and len(sample_steps) >= 10
    assert (run_dir / "samples" / f"epoch_{epochs:03d}.png").exists()
    assert len(read_events(run_dir / "dcgan" / "train")["epoch_d_loss"]) == epochs
