"""The training studies (cnn_zoo, regularization, optimizers, transfer, linear_regression) and what they share.

Fast tests cover the shared parts (`Harness.overrides`, the recorders, the
comparison helpers) and each study's refusals; the slow ones check each
study's declared bars and outputs, at defaults where those take under two
minutes on 2 cores, else at the reduced settings each test names.
"""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import bars_tier, finish, read_events, run_cli_here, signal_at, start_run

import kexp
from kexp.study import compare
from kexp import quality, registry
from kexp.study.recorders import LayerWeightsRecorder, LossCurveRecorder
from kexp.config import TrainConfig
from kexp.errors import ConfigError, UsageError


def _table(run_dir: Path, name: str = "comparison") -> list[dict[str, str]]:
    with open(run_dir / f"{name}.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# -- shared parts ---------------------------------------------------------------------------------------------


def test_overrides_change_a_fit_and_are_recorded_then_restored(logdir):
    x = np.random.default_rng(0).normal(size=(40, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    with kexp.open_run("own", logdir=logdir, train=TrainConfig(epochs=1, batch_size=8), verbose=0) as run:
        with run.overrides(batch_size=40, optimizer="sgd", learning_rate=0.5) as settings:
            assert settings.batch_size == 40 and run.train.optimizer == "sgd"
            run.fit(lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]), (x, y), loss="mse",
                    name="full_batch")
        run.fit(lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]), (x, y), loss="mse",
                name="configured")
        assert run.train == TrainConfig(epochs=1, batch_size=8)
    fits = json.loads((Path(run.run_dir) / "results.json").read_text())["fits"]
    assert fits["full_batch"]["global_batch_size"] == 40
    assert fits["full_batch"]["optimizers"]["optimizer"] == {"class": "SGD", "learning_rate": 0.5}
    assert fits["configured"]["global_batch_size"] == 8
    assert fits["configured"]["optimizers"]["optimizer"]["class"] == "Adam"
    assert fits["configured"]["examples_per_s"] > 0


def test_overrides_refuse_unknown_names_and_values_out_of_limits(logdir):
    with kexp.open_run("own", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
        with pytest.raises(UsageError, match=r"^Harness.overrides: received batch, lr; allowed: .*batch_size"):
            with run.overrides(batch=4, lr=0.1):
                pass
        with pytest.raises(UsageError, match=r"^Harness.overrides: received seed, shuffle; allowed: the settings"):
            with run.overrides(shuffle=False, seed=7):  # the run's data order is fixed when it opens
                pass
        with pytest.raises(ConfigError, match=r"^train.batch_size: received 0; allowed"):
            with run.overrides(batch_size=0):
                pass
        assert run.train == TrainConfig(epochs=1)


def test_loss_curve_and_weight_recorders_follow_every_epoch(logdir):
    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    y = (x @ np.array([[2.0], [-1.0]]) + 0.5).astype("float32")
    curve = LossCurveRecorder(x, y, keras.losses.MeanSquaredError(), len(x))
    weights = LayerWeightsRecorder("head")
    with kexp.open_run("own", logdir=logdir, train=TrainConfig(epochs=4, batch_size=16, learning_rate=0.1,
                                                                   optimizer="sgd"), verbose=0) as run:
        model = run.fit(lambda: kexp.models.mlp((2,), 1, hidden=()), (x, y), loss="mse", callbacks=[curve, weights])
    examples, seconds, losses = zip(*curve.points)
    assert examples == (0, 64, 128, 192, 256)
    assert seconds[0] == 0 and all(b > a for a, b in zip(seconds, seconds[1:]))
    assert losses[-1] < losses[0] / 10
    assert losses[-1] == pytest.approx(float(np.mean((model.predict(x, verbose=0) - y) ** 2)), rel=1e-4)
    assert len(weights.values) == 4 and weights.values[-1].shape == (3,)  # two weights, then the bias
    np.testing.assert_allclose(weights.values[-1], np.concatenate([w.ravel() for w in model.get_layer("head")
                                                                   .get_weights()]))
    assert compare.history_curve(run, "model", "loss") == pytest.approx(model.history.history["loss"])


def test_mean_spread_and_its_description():
    assert compare.mean_spread([0.9, 0.92, 0.94]) == pytest.approx((0.92, 0.02))
    assert compare.describe([0.9, 0.92, 0.94]) == "0.920 ± 0.020"
    assert compare.describe([0.5]) == "0.500" and compare.mean_spread([0.5]) == (0.5, 0.0)
    assert compare.summary_metrics("acc", [0.9, 0.92, 0.94]) == pytest.approx({"acc": 0.92, "acc_spread": 0.02})
    assert compare.summary_metrics("acc", [0.5]) == {"acc": 0.5}


@pytest.mark.parametrize("name, setting, message", [
    ("optimizers", {"model.optimizers": "adam,sgd"},
     "model.optimizers: received adam,sgd; allowed: a list with adam and gd and one more optimizer"),
    ("regularization", {"data.train_size": 5000},
     "data.train_size: received 5000 (with data.validation_size 300); allowed: the two together at most the 1437 "
     "examples of the digits training split"),
    ("regularization", {"model.variants": "l2,dropout"}, "model.variants: received l2,dropout; allowed: none and"),
    ("transfer", {"data.labels_per_class": 500}, "data.labels_per_class: received 500; allowed: at most"),
    ("transfer", {"model.variants": "finetune"}, "model.variants: received finetune; allowed: a list with scratch"),
    ("cnn_zoo", {"data.image_size": 4}, "data.image_size: received 4 (images 4x4); allowed: 8 or more"),
    ("cnn_zoo", {"model.models": "resnet,vgg"}, "model.models: received resnet,vgg; allowed: a list with vgg and vgg_bn"),
    ("linear_regression", {"data.num_examples": 2}, "data.num_examples: received 2; allowed: more than the 2"),
])
def test_studies_refuse_settings_they_cannot_run_and_leave_no_folder(logdir, name, setting, message):
    with pytest.raises(UsageError) as caught:
        kexp.run(name, {**setting, "train.epochs": 1}, logdir=logdir, verbose=0)
    assert str(caught.value).startswith(message)
    assert not any(p.is_dir() for p in (logdir / name).glob("*")), "a refused run left its folder behind"


def test_a_refused_study_exits_2_with_one_line(tmp_path):
    # In this process (`run_cli_here`): the CLI's exit code and stderr, without a TensorFlow import.
    proc = run_cli_here("run", "transfer", "--set", "data.labels_per_class=500", "--logdir", str(tmp_path / "logs"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("kexp: error")]
    assert errors == ["kexp: error: data.labels_per_class: received 500; allowed: at most 139 (the rarest of the "
                      "digits 5-9 in the digits training split)"], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


# -- each study's claims (slow) ---------------------------------------------------------------------------------


def _bars_met(name: str, results: dict) -> dict:
    assert results["status"] == "ok"
    assert quality.failures(registry.load(name).EXPECTED, results["metrics"]) == []
    return results["metrics"]


@bars_tier("linear_regression")
def test_linear_regression_recovers_the_weights_as_well_as_least_squares(logdir):
    # Defaults (about 6 s).
    results = kexp.run("linear_regression", logdir=logdir, verbose=0)
    metrics = _bars_met("linear_regression", results)
    assert metrics["distance_to_lstsq"] < metrics["lstsq_weight_error"]  # gradient descent found the optimum
    assert metrics["train_mse"] == pytest.approx(0.01 ** 2, rel=0.2)  # down to the noise
    run_dir = Path(results["run_dir"])
    rows = _table(run_dir, "parameters")
    assert [(r["parameter"], float(r["true"])) for r in rows] == [("w1", 2.0), ("w2", -3.4), ("b", 4.2)]
    assert max(float(r["gd_error"]) for r in rows) == pytest.approx(metrics["weight_error"], rel=1e-3)
    assert (run_dir / "convergence.png").exists() and "parameters" in read_events(run_dir)


@bars_tier("optimizers")
def test_optimizers_share_one_example_budget_and_show_the_tradeoff(logdir):
    # Defaults (about 16 s).
    results = kexp.run("optimizers", logdir=logdir, verbose=0)
    metrics = _bars_met("optimizers", results)
    run_dir = Path(results["run_dir"])
    rows = {r["optimizer"]: r for r in _table(run_dir)}
    assert list(rows) == ["gd", "sgd", "minibatch", "momentum", "rmsprop", "adam"]
    n = results["fits"]["gd"]["train_examples"]
    assert {name: results["fits"][name]["global_batch_size"] for name in rows} == {
        "gd": n, "sgd": 1, "minibatch": 32, "momentum": 32, "rmsprop": 32, "adam": 32}
    epochs = results["config"]["train"]["epochs"]
    assert int(rows["gd"]["steps"]) == epochs and int(rows["sgd"]["steps"]) == epochs * n
    # Full-batch GD takes the fewest steps and ends highest; every other optimizer ends lower.
    assert all(metrics["loss_gd"] > metrics[f"loss_{name}"] for name in rows if name != "gd")
    for name in rows:  # one TensorBoard folder per optimizer, one point per epoch
        assert len(read_events(run_dir / name / "train")["epoch_loss"]) == epochs
    assert (run_dir / "loss_curves.png").exists()


@bars_tier("transfer")
def test_transfer_fine_tuning_beats_training_from_scratch_on_few_labels(logdir):
    # Defaults (3 seeds, 10 labels per digit 5-9) with the two variants the bar compares (about 50 s; the
    # augmented ones run in test_transfer_variants_with_augmentation_run_and_are_tabled).
    results = kexp.run("transfer", {"model.variants": "scratch,finetune"}, logdir=logdir, verbose=0)
    metrics = _bars_met("transfer", results)
    assert metrics["pretrain_test_accuracy"] > 0.95  # the copied base had learnt 0-4
    run_dir = Path(results["run_dir"])
    rows = {r["variant"]: r for r in _table(run_dir)}
    assert list(rows) == ["scratch", "finetune"]
    for variant in rows:
        assert len(rows[variant]["per seed"].split(", ")) == 3
        for seed in (0, 1, 2):  # a TensorBoard folder per variant and seed, and 50 labelled images each
            assert results["fits"][f"{variant}-seed{seed}"]["train_examples"] == 50
            assert len(read_events(run_dir / f"{variant}-seed{seed}" / "train")["epoch_loss"]) == 60
    assert results["fits"]["finetune-seed0"]["optimizers"]["optimizer"]["learning_rate"] == 1e-3
    assert results["fits"]["scratch-seed0"]["optimizers"]["optimizer"]["learning_rate"] == 2e-3
    assert (run_dir / "transfer.png").exists()


@bars_tier("cnn_zoo")
def test_cnn_zoo_every_family_learns_the_digits_and_batch_norm_starts_faster(logdir):
    # Defaults (7 nets x 30 epochs, about 2 minutes).
    results = kexp.run("cnn_zoo", logdir=logdir, verbose=0)
    metrics = _bars_met("cnn_zoo", results)
    run_dir = Path(results["run_dir"])
    rows = {r["model"]: r for r in _table(run_dir)}
    assert list(rows) == ["lenet", "alexnet", "vgg", "vgg_bn", "nin", "googlenet", "resnet"]
    assert rows["lenet"]["input"] == "32x32" and rows["resnet"]["input"] == "16x16"
    # The builders' documented sizes, at these inputs and 10 classes.
    assert int(rows["nin"]["params"]) == 112_646 and int(rows["alexnet"]["params"]) == 346_762
    # BatchNorm adds gamma, beta and two moving statistics per channel of the 4 convs and drops their biases.
    channels = 32 + 64 + 128 + 128
    assert int(rows["vgg_bn"]["params"]) - int(rows["vgg"]["params"]) == 4 * channels - channels
    for name in rows:
        assert float(rows[name]["test_accuracy"]) == pytest.approx(metrics[f"test_accuracy_{name}"], abs=5e-5)
        assert float(rows[name]["examples_per_s"]) > 0
        assert len(read_events(run_dir / name / "train")["epoch_loss"]) == 30
    assert (run_dir / "cnn_zoo.png").exists()


@bars_tier("regularization")
def test_regularization_keeps_the_mlp_from_learning_the_noise(logdir):
    # Defaults (3 seeds x 5 variants, about 70 s).
    results = kexp.run("regularization", logdir=logdir, verbose=0)
    metrics = _bars_met("regularization", results)
    # The unregularized net memorizes every label, the wrong ones too.
    assert metrics["train_accuracy_none"] > 0.99 and metrics["memorized_noise_none"] > 0.95
    assert metrics["memorized_noise_l2_dropout"] < metrics["memorized_noise_none"] - 0.1
    run_dir = Path(results["run_dir"])
    rows = {r["variant"]: r for r in _table(run_dir)}
    assert list(rows) == ["none", "l1", "l2", "dropout", "l2_dropout"]
    for variant, row in rows.items():  # mean ± std over the seeds, as results.json has them
        mean, spread = (float(v) for v in row["test_accuracy"].split(" ± "))
        assert mean == pytest.approx(metrics[f"test_accuracy_{variant}"], abs=5e-4)
        assert spread == pytest.approx(metrics[f"test_accuracy_{variant}_spread"], abs=5e-4)
    assert results["fits"]["l2_dropout-seed2"]["train_examples"] == 300
    assert len(read_events(run_dir / "none-seed0" / "validation")["epoch_accuracy"]) == 50
    assert (run_dir / "regularization.png").exists()


@pytest.mark.slow
def test_optimizers_killed_mid_study_resumes_every_curve(tmp_path):
    """Killed in a `kexp run` process; resumed in this one (`kexp.run(resume=)`, the library call the CLI's --resume
    makes; test_resume.py runs the command's), which saves a TensorFlow import."""
    # Three optimizers, 4 epochs: killed as single-example SGD (the second) starts its third epoch.
    settings = ["--set", "model.optimizers=gd,sgd,adam", "--set", "train.epochs=4", "--logdir", str(tmp_path)]
    proc = start_run("optimizers", *settings)
    signal_at(proc, "Epoch 3/4", signal.SIGKILL, after="training with stochastic gradient descent")
    assert finish(proc)[0] == -signal.SIGKILL
    (run_dir,) = (tmp_path / "optimizers").iterdir()
    resumed = kexp.run("optimizers", resume=run_dir, verbose=0)
    assert resumed["status"] == "ok" and Path(resumed["run_dir"]) == run_dir
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    n = results["fits"]["gd"]["train_examples"]
    for name in ("gd", "sgd", "adam"):  # whole curves: gd finished before the kill, sgd was cut, adam came after
        points = json.loads((run_dir / name / "loss_curve.json").read_text())["points"]
        assert [p[0] for p in points] == [0, n, 2 * n, 3 * n, 4 * n]
        assert all(b[1] > a[1] for a, b in zip(points, points[1:]))
        assert results["metrics"][f"loss_{name}"] == points[-1][2]
    assert set(results["metrics"]) >= {"adam_loss_vs_gd", "sgd_time_vs_next_slowest"}


def test_transfer_variants_with_augmentation_run_and_are_tabled(logdir):
    # Tiny settings (one seed, 2 epochs each, two conv blocks of 4 and 8 filters and 8 dense units: tracing five
    # fits is the time): every variant trains, the augmented ones through Keras' preprocessing layers, and a
    # frozen base keeps its pretrained weights.
    settings = {"model.seeds": 1, "train.epochs": 2, "model.pretrain_epochs": 1, "model.freeze_base": True,
                "data.labels_per_class": 2, "model.filters": "4,8", "model.dense": 8}
    results = kexp.run("transfer", settings, logdir=logdir, verbose=0)
    assert results["status"] == "ok"
    run_dir = Path(results["run_dir"])
    assert [r["variant"] for r in _table(run_dir)] == ["scratch", "scratch_aug", "finetune", "finetune_aug"]
    pretrained = kexp.load_model(run_dir, fit="pretrain-seed0")
    tuned = kexp.load_model(run_dir, fit="finetune_aug-seed0")
    assert [layer.name for layer in tuned.layers[:3]] == ["images", "shift", "rotate"]
    base = tuned.get_layer("cnn")
    np.testing.assert_array_equal(base.get_layer("block1_conv1").get_weights()[0],
                                  pretrained.get_layer("block1_conv1").get_weights()[0])
    assert results["fits"]["finetune-seed0"]["params"] > 0 and "test_accuracy_finetune_aug" in results["metrics"]


def test_optimizers_under_mirrored_strategy_record_unscaled_losses_and_true_batches(logdir):
    # Two replicas, 1 epoch: Keras divides a loss computed in the strategy's scope by the replica count; the
    # recorded curve must not. Full-batch GD's epoch loss (one step, at the initial weights) is the curve's start.
    # 718 training images (test_fraction 0.6), not 1,437: single-example SGD's steps under two replicas (a global
    # batch of 2) were most of the test's time. An even count, so full-batch GD's halves are equal: with an odd
    # one, its epoch loss (the replicas' mean of their means) leaves the exact mean by ~n^-1.5 (8e-4 at 179).
    settings = {"model.optimizers": "gd,sgd,adam", "train.epochs": 1, "data.test_fraction": 0.6}
    results = kexp.run("optimizers", settings, logdir=logdir, strategy="mirrored", verbose=0)
    assert results["status"] == "ok" and results["num_replicas"] == 2
    run_dir = Path(results["run_dir"])
    start = json.loads((run_dir / "gd" / "loss_curve.json").read_text())["points"][0][2]
    with open(run_dir / "gd" / "history.csv", newline="") as handle:
        assert start == pytest.approx(float(next(csv.DictReader(handle))["loss"]), rel=1e-4)
    rows = {r["optimizer"]: r for r in _table(run_dir)}
    trained = results["fits"]["gd"]["trained_examples_per_epoch"]
    assert results["fits"]["gd"]["train_examples"] == 718
    assert int(rows["gd"]["batch"]) >= trained and int(rows["gd"]["steps"]) == 1
    assert int(rows["sgd"]["batch"]) == 2 and int(rows["sgd"]["steps"]) == trained // 2


def test_a_study_whose_fits_partly_diverge_ends_diverged_with_its_metrics(logdir):
    # An L1 penalty of 10 at learning rate 1000 blows up some fits after one epoch: their curves are shorter.
    settings = {"train.epochs": 3, "model.seeds": 2, "model.hidden": "16,16", "model.variants": "none,l1",
                "model.l1": 10, "train.optimizer": "sgd", "train.learning_rate": 1e3}
    results = kexp.run("regularization", settings, logdir=logdir, verbose=0)
    assert results["status"] == "diverged"
    assert {"test_accuracy_none", "test_accuracy_l1", "gap_reduction"} <= set(results["metrics"])
    assert (Path(results["run_dir"]) / "regularization.png").exists()


@pytest.mark.slow
def test_cnn_zoo_killed_after_a_finished_fit_resumes_with_its_timing(tmp_path):
    """Killed in a `kexp run` process; resumed in this one (`kexp.run(resume=)`, the library call the CLI's --resume
    makes; test_resume.py runs the command's), which saves a TensorFlow import."""
    # 2 epochs on 240 training images (test_fraction 0.866): killed as vgg_bn starts its second, after vgg
    # finished both.
    settings = ["--set", "model.models=vgg,vgg_bn", "--set", "train.epochs=2", "--set", "data.image_size=8",
                "--set", "data.test_fraction=0.866", "--logdir", str(tmp_path)]
    proc = start_run("cnn_zoo", *settings)
    signal_at(proc, "Epoch 2/2", signal.SIGKILL, after="fit vgg_bn")
    assert finish(proc)[0] == -signal.SIGKILL
    (run_dir,) = (tmp_path / "cnn_zoo").iterdir()
    resumed = kexp.run("cnn_zoo", resume=run_dir, verbose=0)
    assert resumed["status"] == "ok" and Path(resumed["run_dir"]) == run_dir
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    for row in _table(run_dir):  # vgg finished before the kill: its epoch times come from its folder
        assert float(row["examples_per_s"]) > 0 and float(row["train_seconds (tracing included)"]) > 0
        points = json.loads((run_dir / row["model"] / "epoch_times.json").read_text())["points"]
        assert [p[0] for p in points] == [0, 240, 2 * 240]
