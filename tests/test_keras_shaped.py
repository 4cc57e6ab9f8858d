"""The harness does what Keras would, or refuses before training (issue 22 items 1, 2, 6, 7, 8, 9)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kexp
from kexp import TrainConfig
from kexp.errors import UsageError


def _xy(n: int = 96):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x[:, :1] > 0).astype("float32")


def _dense() -> keras.Model:
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])


def _two_outputs() -> keras.Model:
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, {"reg": keras.layers.Dense(1, name="reg")(hidden),
                                "cls": keras.layers.Dense(1, activation="sigmoid", name="cls")(hidden)})


# -- 1: a user's global dtype policy holds unless train.precision is set --

@pytest.fixture
def bfloat16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_a_global_policy_holds_when_precision_is_left_at_its_default(logdir, bfloat16_policy):
    x, y = _xy()
    with kexp.open_run("policy", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
        model = run.fit(_dense, (x, y), loss="binary_crossentropy")
    assert model.layers[-1].compute_dtype == "bfloat16"
    assert run.results["precision"] == {"policy": "mixed_bfloat16", "set_by": "the global policy"}
    assert json.loads((run.run_dir / "results.json").read_text())["precision"]["policy"] == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"


def test_train_precision_wins_over_a_global_policy_and_is_recorded(logdir, bfloat16_policy):
    x, y = _xy()
    with kexp.open_run("policy", logdir=logdir, train=TrainConfig(epochs=1, precision="float32"),
                       verbose=0) as run:
        model = run.fit(_dense, (x, y), loss="binary_crossentropy")
    assert model.layers[-1].compute_dtype == "float32"
    assert run.results["precision"] == {"policy": "float32", "set_by": "train.precision"}
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"  # the caller's, back after the run


# -- 2: compile arguments for a model its user compiled are refused, not dropped --

@pytest.mark.parametrize("given", [{"loss": "mse"}, {"metrics": ["mae"]},
                                   {"optimizer": keras.optimizers.SGD}, {"loss_weights": [2.0]}])
def test_compile_arguments_for_a_compiled_model_are_refused_naming_the_conflict(given, logdir):
    x, y = _xy()

    def build():
        model = _dense()
        model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
        return model

    if given.get("optimizer") is keras.optimizers.SGD:
        given = {"optimizer": keras.optimizers.SGD()}
    with pytest.raises(UsageError, match=rf"fit: received {next(iter(given))} for a model that is already "
                                         r"compiled \(optimizer Adam, loss 'binary_crossentropy'\)"):
        with kexp.open_run("compiled", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(build, (x, y), **given)
    assert list(logdir.rglob("*")) == []  # refused before training: nothing left


# -- 7: multi-output compile arguments as Model.compile takes them --

def test_multi_output_metrics_loss_weights_and_weighted_metrics_reach_compile(logdir):
    x, y = _xy()
    targets = {"reg": x[:, :1] * 2, "cls": y}
    with kexp.open_run("multi", logdir=logdir, train=TrainConfig(epochs=2, batch_size=16), verbose=0) as run:
        model = run.fit(_two_outputs, (x, targets), loss={"reg": "mse", "cls": "binary_crossentropy"},
                        metrics={"reg": ["mae"], "cls": ["accuracy"]}, loss_weights={"reg": 0.5, "cls": 2.0},
                        weighted_metrics={"cls": ["accuracy"]})
        scores = run.evaluate(model, (x, targets))
    history = model.history.history
    assert {"reg_mae", "cls_accuracy", "cls_weighted_accuracy"} <= set(history)
    assert {"test_reg_mae", "test_cls_accuracy"} <= set(scores)
    # The weighted total Keras reports: 0.5 * mse + 2 * bce, recomputed from the model's predictions.
    predicted = model.predict(x, verbose=0)
    mse = float(np.mean((predicted["reg"] - targets["reg"]) ** 2))
    bce = float(keras.losses.binary_crossentropy(y, predicted["cls"]).numpy().mean())
    assert scores["test_loss"] == pytest.approx(0.5 * mse + 2 * bce, rel=1e-4)
    assert run.results["fits"]["model"]["loss"] == {"reg": "mse", "cls": "binary_crossentropy"}


# -- 8: validation_data=, verbose=, a PyDataset and a generator --

class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.epochs_ended = 0

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[part], self.y[part]

    def on_epoch_end(self):
        self.epochs_ended += 1


def test_validation_data_and_verbose_are_taken_by_their_keras_names(logdir, capsys):
    x, y = _xy()
    with kexp.open_run("names", logdir=logdir, train=TrainConfig(epochs=2), verbose=2) as run:
        model = run.fit(_dense, (x[:64], y[:64]), validation_data=(x[64:], y[64:]), verbose=0,
                        loss="binary_crossentropy")
    assert len(model.history.history["val_loss"]) == 2
    assert run.results["fits"]["model"]["validation_examples"] == 32
    assert "Epoch 1/2" not in capsys.readouterr().out  # verbose=0 for this fit
    with pytest.raises(UsageError, match="received both validation and validation_data"):
        with kexp.open_run("names", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(_dense, (x, y), (x, y), validation_data=(x, y), loss="mse")


def test_a_pydataset_trains_as_in_keras_and_its_examples_are_counted(logdir):
    x, y = _xy(100)
    batches = Batches(x, y, 32)
    validation = Batches(x[:40], y[:40], 20)
    with kexp.open_run("pydataset", logdir=logdir, train=TrainConfig(epochs=3), verbose=0) as run:
        model = run.fit(_dense, batches, validation_data=validation, loss="binary_crossentropy")
        scores = run.evaluate(model, Batches(x, y, 50))
    fit = run.results["fits"]["model"]
    assert fit["input"]["kind"] == "PyDataset" and fit["input"]["batches_per_epoch"] == 4
    assert fit["input"]["examples_per_epoch"] == [100, 100, 100]  # every example, every epoch, once
    plain = Batches(x, y, 32)
    keras_model = _dense()
    keras_model.compile("adam", "binary_crossentropy")
    keras_model.fit(plain, epochs=3, verbose=0)
    assert batches.epochs_ended == plain.epochs_ended  # Keras called its on_epoch_end as plain fit does
    assert len(model.history.history["val_loss"]) == 3 and "test_loss" in scores
    assert run.results["status"] == "ok"


def test_a_generator_trains_with_steps_per_epoch_and_is_refused_without(logdir):
    x, y = _xy(96)

    def forever():
        while True:
            for start in range(0, 96, 32):
                yield x[start:start + 32], y[start:start + 32]

    with kexp.open_run("generator", logdir=logdir, train=TrainConfig(epochs=2), verbose=0) as run:
        run.fit(_dense, forever(), steps_per_epoch=3, loss="binary_crossentropy")
    stream = run.results["fits"]["model"]["input"]
    # Keras reads a generator ahead of its steps: every trained batch is counted, a few read ahead may be too.
    assert stream["examples_per_epoch"] is None and 2 * 96 <= stream["examples_pulled"] <= 2 * 96 + 4 * 32
    with pytest.raises(UsageError, match="a generator is read once"):
        with kexp.open_run("generator", logdir=logdir, train=TrainConfig(epochs=2), verbose=0) as run:
            run.fit(_dense, forever(), loss="binary_crossentropy")
    with pytest.raises(UsageError, match="steps_per_epoch=3 is set by the harness for arrays"):
        with kexp.open_run("generator", logdir=logdir, train=TrainConfig(epochs=2), verbose=0) as run:
            run.fit(_dense, (x, y), steps_per_epoch=3, loss="binary_crossentropy")


# -- 9: every refusal before training leaves nothing; a folder with fits stays --

def test_a_refused_second_fit_keeps_the_folder_of_the_first(logdir):
    x, y = _xy()
    with pytest.raises(UsageError, match="fit: received int"):
        with kexp.open_run("second", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(_dense, (x, y), loss="binary_crossentropy")
            run.fit(3, (x, y), loss="mse")
    assert (run.run_dir / "models" / "model.keras").is_file()
    results = json.loads((run.run_dir / "results.json").read_text())
    assert results["status"] == "failed" and list(results["models"]) == ["model"]
    assert not (run.run_dir / "model_2").exists() and not (run.run_dir / "backup" / "model_2").exists()


# -- 6: a subclassed model whose train_step never calls self(x) (Keras' VAE example) --

@keras.saving.register_keras_serializable(package="kexp_tests")
class Sampling(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1337)

    def call(self, inputs):
        mean, log_var = inputs
        return mean + keras.ops.exp(0.5 * log_var) * keras.random.normal(keras.ops.shape(mean),
                                                                           seed=self.seed_generator)


@keras.saving.register_keras_serializable(package="kexp_tests")
class VAE(keras.Model):
    """Keras' VAE example, small; `lazy` leaves its encoder and decoder unbuilt until the first step."""

    def __init__(self, lazy: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.lazy = lazy
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.mean, self.log_var = keras.layers.Dense(2), keras.layers.Dense(2)
        self.sampling = Sampling()
        self.decoder = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(4)])
        self.total = keras.metrics.Mean(name="loss")
        if not lazy:
            self.decoder.build((None, 2))
            self.hidden.build((None, 4))
            self.mean.build((None, 8))
            self.log_var.build((None, 8))

    @property
    def metrics(self):
        return [self.total]

    def train_step(self, data):
        (x,) = data  # as fit hands over (x,) data: a resume's building step must too (not (x, None, None))
        with tf.GradientTape() as tape:
            h = self.hidden(x)
            mean, log_var = self.mean(h), self.log_var(h)
            rebuilt = self.decoder(self.sampling([mean, log_var]))
            kl = -0.5 * tf.reduce_mean(1 + log_var - mean ** 2 - tf.exp(log_var))
            loss = tf.reduce_mean(tf.square(x - rebuilt)) + 0.01 * kl
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self.total.update_state(loss)
        return {"loss": self.total.result()}

    def get_config(self):
        return {**super().get_config(), "lazy": self.lazy}


def _vae(lazy: bool):
    def build():
        model = VAE(lazy=lazy)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        return model
    return build


@pytest.mark.parametrize("lazy", [False, True])
def test_a_vae_without_call_trains_saves_loads_and_resumes_bit_for_bit(lazy, logdir):
    x = np.random.default_rng(0).normal(size=(128, 4)).astype("float32")
    train = TrainConfig(epochs=2, batch_size=32)  # 4 steps an epoch; a resume after the first epoch
    with kexp.open_run("vae", logdir=logdir, train=train, verbose=0) as whole:
        model = whole.fit(_vae(lazy), (x,))
    assert whole.results["status"] == "ok" and whole.results["models"] == {"model": "models/model.keras"}
    assert whole.results["fits"]["model"]["params"] == sum(int(np.prod(w.shape)) for w in model.weights) > 0
    if lazy:
        # Keras rebuilds it without weights (and only warns about the optimizer): refused, not half-loaded.
        with pytest.raises(UsageError, match="holds 10 weights but the VAE rebuilt from its config has 0"):
            kexp.load_model(whole.run_dir)
    else:
        loaded = kexp.load_model(whole.run_dir)
        assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]
        np.testing.assert_array_equal(loaded.decoder.layers[-1].kernel.numpy(),
                                      model.decoder.layers[-1].kernel.numpy())

    # One epoch, stopped as a kill would leave it (state of epoch 1 on disk), then resumed in a new model.
    with kexp.open_run("vae", logdir=logdir, train=dataclasses_replace(train, epochs=1), verbose=0) as first:
        first.fit(_vae(lazy), (x,), epochs=1)
    _mark_unfinished(first.run_dir, epochs=2)
    with kexp.open_run("vae", logdir=logdir, train=train, verbose=0, resume=first.run_dir) as resumed:
        again = resumed.fit(_vae(lazy), (x,))
    assert resumed.results["status"] == "ok"
    for mine, theirs in zip(again.weights, model.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def dataclasses_replace(train: TrainConfig, **changes) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(train, **changes)


def _mark_unfinished(run_dir, epochs: int) -> None:
    """Makes a finished run look like an `epochs`-epoch run killed after its last epoch (its state and logs kept)."""
    (run_dir / "results.json").unlink()
    config = json.loads((run_dir / "config.json").read_text())
    config["train"]["epochs"] = epochs
    (run_dir / "config.json").write_text(json.dumps(config))


# -- 5: a resume refused at its second fit leaves the folder byte for byte as it was --

def _snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_resume_whose_second_fit_does_not_fit_changes_nothing(logdir):
    x, y = _xy()
    wide = lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])  # noqa: E731
    train = TrainConfig(epochs=2)
    with kexp.open_run("two", logdir=logdir, train=train, verbose=0) as run:
        run.fit(_dense, (x, y), loss="mse", name="first")
        run.fit(wide, (x, y), loss="mse", name="second")
    (run.run_dir / "results.json").unlink()  # as a kill during the second fit would leave it
    # The second fit's state now comes from other settings: one layer where the model has two.
    (run.run_dir / "backup" / "second" / "state.npz").write_bytes(
        (run.run_dir / "backup" / "first" / "state.npz").read_bytes())
    before = _snapshot(run.run_dir)
    with pytest.raises(UsageError, match="its state does not match this model"):
        with kexp.open_run("two", logdir=logdir, train=train, verbose=0, resume=run.run_dir) as again:
            again.fit(_dense, (x, y), loss="mse", name="first")
            again.fit(wide, (x, y), loss="mse", name="second")
    assert _snapshot(run.run_dir) == before


def test_a_gan_given_a_loss_is_refused_not_compiled_without_it(logdir):
    from kexp.models import GAN, gan_1d_discriminator, gan_1d_generator

    real = np.random.default_rng(0).normal(4, 1, (64, 1)).astype("float32")
    with pytest.raises(UsageError, match="fit: received loss, metrics for a kexp.models.GAN"):
        with kexp.open_run("gan", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(lambda: GAN(gan_1d_generator(), gan_1d_discriminator()), (real,), loss="mse", metrics=["mae"])
    assert list(logdir.rglob("*")) == []


def test_an_uncompiled_model_with_its_own_train_step_compiles_with_an_optimizer_alone(logdir):
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    with kexp.open_run("vae", logdir=logdir, train=TrainConfig(epochs=1, optimizer="sgd"), verbose=0) as run:
        model = run.fit(lambda: VAE(lazy=False), (x,))
    assert run.results["status"] == "ok" and type(model.optimizer).__name__ == "SGD"
    assert run.results["fits"]["model"]["compiled_by"] == "harness"


def test_training_data_given_as_keras_x_and_y_keywords_is_refused_with_the_accepted_call(logdir):
    x, y = _xy()
    with pytest.raises(UsageError, match=r"fit: x is set by the harness \(pass the training data as fit\(model, "
                                         r"\(x, y\)\).*received x=<ndarray of shape \(96, 4\)>"):
        with kexp.open_run("keywords", logdir=logdir, verbose=0) as run:
            run.fit(_dense, x=x, y=y, loss="mse")
    assert list(logdir.rglob("*")) == []


def test_a_fit_finished_before_a_resume_keeps_its_recorded_settings(logdir):
    x, y = _xy(400)
    with kexp.open_run("fused", logdir=logdir, train=TrainConfig(epochs=2), verbose=0) as run:
        run.fit(_dense, (x, y), loss="binary_crossentropy")
    (run.run_dir / "results.json").unlink()
    with kexp.open_run("fused", logdir=logdir, train=TrainConfig(epochs=2), verbose=0, resume=run.run_dir) as again:
        again.fit(_dense, (x, y), loss="binary_crossentropy")
    before, after = run.results["fits"]["model"], again.results["fits"]["model"]
    assert before["fused_steps"] is True and after["fused_steps"] is True
    assert {k: after[k] for k in ("steps_per_execution", "train_examples", "params")} == {
        k: before[k] for k in ("steps_per_execution", "train_examples", "params")}
