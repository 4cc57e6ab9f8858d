"""The shared harness on a user's own model: strategies, run folder, TensorBoard, status."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from helpers import read_events

import kexp
from kexp.config import TrainConfig


def _linear_data(n: int = 256, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 3)).astype("float32")
    y = (x @ np.array([[1.5], [-2.0], [0.5]], dtype="float32") + 0.3).astype("float32")
    return x, y


def _build():
    import keras

    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)], name="linear")


@pytest.mark.parametrize("strategy, replicas", [("default", 1), ("mirrored", 2)])
def test_fit_evaluate_own_model_under_strategy(logdir, strategy, replicas):
    x, y = _linear_data()
    # Plain SGD at 0.5 learns this linear map to ~1e-6 in 3 epochs of global batch 32 (Adam at 0.05 needed 40).
    train = TrainConfig(epochs=3, batch_size=16, learning_rate=0.5, optimizer="sgd")
    with kexp.open_run("own", logdir=logdir, train=train, strategy=strategy, verbose=0) as run:
        # 193 and 63 examples: the last batches do not split evenly over 2 replicas.
        model = run.fit(_build, (x[:193], y[:193]), (x[193:], y[193:]), loss="mse")
        run.record(**run.evaluate(model, (x[193:], y[193:])))
        assert run.global_batch_size == 16 * replicas
    results = json.loads((run.run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert results["num_replicas"] == replicas
    assert results["strategy"] == strategy
    assert len(results["devices"]) == replicas
    assert results["metrics"]["test_loss"] < 1e-3  # a linear map is learned exactly
    assert results["train_samples_per_s"] > 0
    assert set(results["versions"]) == {"python", "tensorflow", "keras", "kexp"}
    config = json.loads((run.run_dir / "config.json").read_text())
    assert config == {"train": results["config"]["train"]}
    assert config["train"]["epochs"] == 3


def test_a_run_that_trained_nothing_has_no_throughput_not_a_measured_zero(logdir):
    with kexp.open_run("nothing", logdir=logdir, verbose=0) as run:
        run.record(answer=42.0)
    assert json.loads((run.run_dir / "results.json").read_text())["train_samples_per_s"] is None


def test_tensorboard_scalars_and_images_are_written(logdir):
    x, y = _linear_data()
    with kexp.open_run("own", logdir=logdir, train=TrainConfig(epochs=3), verbose=0) as run:
        run.fit(_build, (x, y), (x[:64], y[:64]), loss="mse")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        run.log_figure("line", fig)
    train_events = read_events(run.run_dir / "train")
    val_events = read_events(run.run_dir / "validation")
    assert [step for step, _ in train_events["epoch_loss"]] == [0, 1, 2]
    assert [step for step, _ in val_events["epoch_loss"]] == [0, 1, 2]
    images = read_events(run.run_dir)
    assert "line" in images
    width, height = (int(v) for v in images["line"][0][1][:2])
    assert width > 100 and height > 100
    assert (run.run_dir / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = (run.run_dir / "history.csv").read_text().splitlines()
    assert history[0].split(",")[:2] == ["epoch", "loss"] and len(history) == 4


def test_two_runs_get_two_folders(logdir):
    x, y = _linear_data(64)
    dirs = []
    for _ in range(2):
        with kexp.open_run("own", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(_build, (x, y), loss="mse")
        dirs.append(run.run_dir)
    assert dirs[0] != dirs[1]
    assert all((d / "results.json").exists() for d in dirs)
    assert sorted(p.name for p in (logdir / "own").iterdir()) == sorted(d.name for d in dirs)


def test_diverging_run_is_marked_diverged(logdir):
    x, y = _linear_data()
    y = y * 1e30
    train = TrainConfig(epochs=5, learning_rate=1e6, optimizer="sgd")
    with kexp.open_run("own", logdir=logdir, train=train, verbose=0) as run:
        run.fit(_build, (x, y), loss="mse")
    results = json.loads((run.run_dir / "results.json").read_text())
    assert results["status"] == "diverged"


def test_usage_error_inside_run_removes_the_run_folder(logdir):
    from kexp.errors import UsageError

    with pytest.raises(UsageError, match="data not here"):
        with kexp.open_run("own", logdir=logdir, verbose=0):
            raise UsageError("data not here")
    assert not (logdir / "own").exists()  # the run folder and its then empty experiment folder went


def test_failed_run_writes_status_failed(logdir):
    with pytest.raises(RuntimeError):
        with kexp.open_run("own", logdir=logdir, verbose=0) as run:
            raise RuntimeError("boom")
    results = json.loads((run.run_dir / "results.json").read_text())
    assert results["status"] == "failed"


def test_jit_auto_turns_xla_on_for_big_dense_nets_only(logdir):
    import keras

    from kexp.models import lenet5, mlp

    x = np.zeros((32, 784), "float32")
    y = np.zeros((32,), "int32")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with kexp.open_run("own", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
        fnn = run.fit(lambda: mlp((784,), 10, hidden=(500,)), (x, y), loss=loss)
        small = run.fit(lambda: mlp((784,), 10, hidden=(8,)), (x, y), loss=loss)
        conv = run.fit(lambda: lenet5((28, 28, 1)), (x.reshape(32, 28, 28, 1), y), loss=loss)
    assert (fnn.jit_compile, small.jit_compile, conv.jit_compile) == (True, False, False)
    assert fnn.steps_per_execution == 1  # one batch of 32 per epoch


def test_mixed_precision_policy_applies_inside_the_run_only(logdir):
    import keras

    x, y = _linear_data(64)
    train = TrainConfig(epochs=1, precision="mixed_bfloat16")
    with kexp.open_run("own", logdir=logdir, train=train, verbose=0) as run:
        model = run.fit(_build, (x, y), loss="mse")
    assert model.layers[-1].compute_dtype == "bfloat16"
    assert model.layers[-1].variable_dtype == "float32"
    assert keras.mixed_precision.dtype_policy().name == "float32"
    assert run.results["status"] == "ok"


def test_config_and_model_summary_are_written_as_tensorboard_text(logdir):
    import keras

    x = np.zeros((8, 3), "float32")
    with kexp.open_run("texts", logdir=logdir, train=TrainConfig(epochs=1, batch_size=4), verbose=0) as run:
        run.fit(lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="head")]), (x, x[:, :2]),
                loss="mse")
    texts = read_events(run.run_dir)
    config = texts["config"][0][1]
    assert "| train.epochs | 1 |" in config and "| train.batch_size | 4 |" in config
    summary = texts["model_summary/model"][0][1]
    assert "head (Dense)" in summary and "Total params: 8" in summary


def test_optimizer_reads_no_earlier_fit_and_optimizer_options_get_the_fits_own_schedule(logdir):
    """Issue 24: `optimizer()` takes its length explicitly; `fit(optimizer_options=...)` replaces the lambdas."""
    import keras

    x, y = _linear_data(96)
    train = TrainConfig(epochs=2, batch_size=16, lr_schedule="cosine", learning_rate=0.01)
    with kexp.open_run("optim", logdir=logdir, train=train, verbose=0) as run:
        model = run.fit(_build, (x, y), loss="mse", optimizer_options={"beta_1": 0.5})
        # The harness made adam with beta_1 0.5, decaying over this fit's 6 batches x 2 epochs.
        assert model.optimizer.beta_1 == 0.5
        assert model.optimizer._learning_rate.decay_steps == 12
        # After the fit, a new optimizer is the configured constant rate unless given a length.
        assert run.optimizer().learning_rate.numpy() == pytest.approx(0.01)
        schedule = run.optimizer(total_steps=40, beta_1=0.9)._learning_rate
        assert isinstance(schedule, keras.optimizers.schedules.CosineDecay) and schedule.decay_steps == 40
        with pytest.raises(kexp.UsageError, match="fit: received optimizer and optimizer_options"):
            run.fit(_build, (x, y), loss="mse", optimizer="sgd", optimizer_options={"momentum": 0.5})
        with pytest.raises(kexp.UsageError,
                           match="optimizer_options: train.optimizer=adam .Adam. takes no .momentum., which the fit"):
            run.fit(_build, (x, y), loss="mse", optimizer_options={"momentum": 0.5})


def test_a_builder_compiling_its_own_model_gets_the_fits_length_and_a_gan_refuses_one_optimizer(logdir):
    """A builder's `compile_options()` inside a fit sees that fit (not an earlier one's leftovers, not nothing);
    one optimizer instance for a GAN's two networks is refused, not shared or dropped."""
    import keras

    from kexp.models import GAN, gan_1d_discriminator, gan_1d_generator

    x, y = _linear_data(96)
    with kexp.open_run("builder", logdir=logdir, train=TrainConfig(epochs=1, batch_size=16), verbose=0) as run:
        outside = run.compile_options()["steps_per_execution"]

        def build():
            model = _build()
            model.compile("sgd", "mse", **run.compile_options(model))
            return model

        model = run.fit(build, (x, y))
        assert run.fit_settings["model"]["compiled_by"] == "user"  # the builder's choice stood
        assert int(model.steps_per_execution) == 6 != outside  # the fit's 6 batches per epoch, in one call
        gan = lambda: GAN(gan_1d_generator(), gan_1d_discriminator())  # noqa: E731
        with pytest.raises(kexp.UsageError, match="fit: received optimizer Adam .one instance. for a kexp.models.GAN"):
            run.fit(gan, (x[:, :1],), optimizer=keras.optimizers.Adam())


def test_bad_optimizer_options_fit_names_and_save_text_paths_are_refused_in_one_line(logdir):
    """Attack findings on issue 24's additions: each bad value is a one-line UsageError before training; a refused
    fit takes no name; an auto-numbered fit never takes a name another fit chose; save_text stays in the folder."""
    x, y = _linear_data(64)
    with kexp.open_run("refusals", logdir=logdir, train=TrainConfig(epochs=1, batch_size=16), verbose=0) as run:
        for options, message in [
            ("beta_1", "fit: received optimizer_options 'beta_1'; allowed: a dict"),
            ({"learning_rate": 0.5}, "optimizer_options: received learning_rate; allowed: set train.learning_rate"),
            ({"kwargs": 1},
             "optimizer_options: train.optimizer=adam (Adam) takes no 'kwargs', which the fit passes; allowed: beta_1"),
        ]:
            with pytest.raises(kexp.UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
                run.fit(_build, (x, y), loss="mse", name="a", optimizer_options=options)
        with pytest.raises(kexp.UsageError, match="total_steps=0; allowed: a whole number >= 1"):
            run.optimizer(total_steps=0)
        run.fit(_build, (x, y), loss="mse", name="a")  # the refused fits took no name
        run.fit(_build, (x, y), loss="mse", name="model_2")
        run.fit(_build, (x, y), loss="mse")
        run.fit(_build, (x, y), loss="mse")  # model_2 is taken: model_3
        assert list(run.fit_settings) == ["a", "model_2", "model", "model_3"]
        for bad in ("../evil.txt", "/tmp/abs.txt", "results.json", "backup/x.txt"):
            with pytest.raises(kexp.UsageError, match="save_text: received"):
                run.save_text(bad, "x")
        assert run.save_text("notes/n.txt", "kept\n").read_text() == "kept\n"
    assert not (logdir / "evil.txt").exists()
    assert sorted(p.name for p in (run.run_dir / "models").iterdir()) == [
        "a.keras", "model.keras", "model_2.keras", "model_3.keras"]


def test_the_harness_pipelines_run_without_tf_datas_model_autotuner(logdir):
    """Its thread made a fit's end wait: deleting the fit's one iterator took 18-44 s at char_rnn's size."""
    x = np.zeros((10, 3), "float32")
    with kexp.open_run("autotune", logdir=logdir, verbose=0) as run:
        for training, epochs in ((True, (0, 2)), (True, None), (False, None)):
            for data in ((x, x[:, :1]), tf.data.Dataset.from_tensor_slices((x, x[:, :1]))):
                ds = run.dataset(data, training=training, batch_size=4, epochs=epochs)
                assert ds.options().autotune.enabled is False
