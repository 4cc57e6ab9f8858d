"""`train.jit_compile=auto` on CPU: which models and fits get XLA (`kexp.engine.speed`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kexp
from kexp.config import TrainConfig
from kexp.engine import speed


def _recurrent(cell: str, **layer_options):
    import keras

    import kexp.models

    layers = {"lstm": kexp.models.LSTM, "keras_lstm": keras.layers.LSTM, "gru": keras.layers.GRU,
              "simple": keras.layers.SimpleRNN}
    return keras.Sequential([keras.Input((5, 3)), layers[cell](4, **layer_options), keras.layers.Dense(1)])


@pytest.mark.parametrize("cell, xla", [("lstm", True), ("keras_lstm", True), ("gru", True), ("simple", False)])
def test_auto_turns_xla_on_for_gated_recurrent_nets_in_long_fits(cell, xla):
    train = TrainConfig()
    model = _recurrent(cell)
    assert speed.jit_compile(train, model, 1, total_steps=1_000) is xla
    assert speed.jit_compile(train, model, 1, total_steps=999) is False  # the compile would not pay
    assert speed.jit_compile(train, model, 1, total_steps=None) is False  # length unknown
    assert speed.jit_compile(train, model, 1, total_steps=5_000, shapes_may_vary=True) is False  # per shape
    assert speed.jit_compile(train, model, 2, total_steps=5_000) is False  # mirrored over CPU devices
    assert speed.jit_compile(TrainConfig(jit_compile="false"), model, 1, total_steps=5_000) is False


def test_auto_looks_inside_bidirectional_and_keeps_embeddings_and_masks_off():
    import keras

    def net(*layers, dtype="float32"):
        return keras.Sequential([keras.Input((6, 3) if dtype == "float32" else (6,), dtype=dtype), *layers,
                                 keras.layers.Dense(2)])

    train = TrainConfig()
    bidirectional = net(keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True)),
                        keras.layers.Dropout(0.1), keras.layers.LSTM(4))
    masked = net(keras.layers.Masking(), keras.layers.LSTM(4))
    simple = net(keras.layers.Bidirectional(keras.layers.SimpleRNN(4)))
    convolved = net(keras.layers.Conv1D(4, 3), keras.layers.LSTM(4))
    # XLA's gather clamps an id past the vocabulary where TensorFlow's raises: such a net stays unfused.
    embedded = net(keras.layers.Embedding(10, 3), keras.layers.LSTM(4), dtype="int32")
    choices = [speed.jit_choice(train, model, 1, total_steps=1_000)
               for model in (bidirectional, masked, simple, convolved, embedded)]
    assert [value for value, _ in choices] == [True, False, False, False, False]
    assert choices[0][1] == "train.jit_compile=auto: on: an LSTM/GRU net in a fit of 1,000 steps (>= 1,000)"
    blocking = [why.split(" is outside the rule")[0].split("off: ")[1] for _, why in choices[1:]]
    assert [name.split(" ")[1] for name in blocking] == ["(Masking)", "(Bidirectional)", "(Conv1D)", "(Embedding)"]


def test_auto_keeps_xla_off_for_code_it_cannot_see():
    import keras
    import tensorflow as tf

    train = TrainConfig()

    class Checked(keras.Model):  # its own call: an assertion XLA would drop
        def __init__(self):
            super().__init__()
            self.lstm, self.out = keras.layers.LSTM(4), keras.layers.Dense(1)

        def call(self, x):
            tf.debugging.assert_non_negative(x)
            return self.out(self.lstm(x))

    class MyLSTM(keras.layers.LSTM):
        pass

    checked = Checked()
    checked(np.zeros((1, 5, 3), "float32"))
    ids = keras.Input((5,), dtype="int32")
    looked_up = keras.ops.take(keras.ops.ones((5, 3)), ids, axis=0)  # XLA clamps an id past the table
    taken = keras.Model(ids, keras.layers.Dense(1)(keras.layers.LSTM(4)(looked_up)))
    subclassed_layer = keras.Sequential([keras.Input((5, 3)), MyLSTM(4), keras.layers.Dense(1)])
    own_activation = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, activation=lambda x: x),
                                       keras.layers.Dense(1)])
    nested = keras.Sequential([keras.Input((5, 3)), keras.Sequential([keras.layers.GRU(4)]), keras.layers.Dense(1)])
    choices = [speed.jit_choice(train, model, 1, total_steps=5_000)
               for model in (checked, taken, subclassed_layer, own_activation, nested)]
    assert [value for value, _ in choices] == [False, False, False, False, True]
    assert "(Checked) is a subclassed model" in choices[0][1]
    assert "(Take) is a keras.ops call in the functional model" in choices[1][1]
    assert "(MyLSTM) is outside the rule" in choices[2][1]
    assert "(LSTM) holds a function or object not from Keras (activation)" in choices[3][1]
    dense = keras.Sequential([keras.Input((784,)), keras.layers.Dense(500, activation=lambda x: x)])
    assert speed.jit_choice(train, dense, 1)[0] is False  # the dense rule checks the same


def test_a_dense_gan_keeps_the_dense_rule():
    from kexp.models import GAN, gan_1d_discriminator, gan_1d_generator

    # 4-200-200-1 and 1-200-200-1: 41,401 + 40,801 parameters.
    gan = GAN(gan_1d_generator(4, 1, hidden=(200, 200)), gan_1d_discriminator(1, hidden=(200, 200)))
    assert speed.jit_choice(TrainConfig(), gan, 1)[1] == \
        "train.jit_compile=auto: on: a dense-only net of 82,202 parameters (>= 50,000)"


def test_an_embedding_id_past_the_vocabulary_still_fails_the_fit(logdir):
    import keras

    x = np.tile(np.array([[1, 2, 9]], "int32"), (64, 1))  # 9: past Embedding(5)'s ids
    y = np.zeros((64, 1), "float32")
    train = TrainConfig(epochs=1, batch_size=1)
    with pytest.raises(Exception, match="9 is not in \\[0, 5\\)"):
        with kexp.open_run("own", logdir=logdir, train=train, verbose=0) as run:
            run.fit(lambda: keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(5, 2),
                                              keras.layers.LSTM(2), keras.layers.Dense(1)]), (x, y), loss="mse")


def _Batches(x, y):
    import keras

    class Batches(keras.utils.PyDataset):
        """Batches of one example; a stream's shapes are its own, so XLA stays off for it."""

        def __len__(self):
            return len(x)

        def __getitem__(self, index):
            return x[index:index + 1], y[index:index + 1]

    return Batches()


def test_fit_records_the_auto_choice_from_its_own_length_and_why(logdir):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(250, 5, 3)).astype("float32")
    y = x.sum(axis=(1, 2))[:, None]
    # At batch 1: 250 examples for 4 epochs are 1,000 steps; 20 for 1, 20.
    with kexp.open_run("own", logdir=logdir, train=TrainConfig(epochs=4, batch_size=1), verbose=0) as run:
        long_fit = run.fit(lambda: _recurrent("gru"), (x, y), loss="mse", name="long")
        short_fit = run.fit(lambda: _recurrent("gru"), (x[:20], y[:20]), loss="mse", name="short", epochs=1)
        # Short fits suffice below: the rule weighs shapes and the user's code before the length, and says so.
        padded = run.fit(lambda: _recurrent("gru"), (x[:20], y[:20]), loss="mse", name="padded", pad=True, epochs=1)
        streamed = run.fit(lambda: _recurrent("gru"), _Batches(x[:20], y[:20]), loss="mse", name="streamed", epochs=1)
        users = _recurrent("gru")
        users.compile(optimizer="adam", loss="mse")
        run.fit(users, (x[:20], y[:20]), name="users", epochs=1)
        loss = run.evaluate(long_fit, (x, y))["test_loss"]
    assert (long_fit.jit_compile, short_fit.jit_compile, padded.jit_compile, streamed.jit_compile) == \
        (True, False, False, False)
    fits = json.loads((run.run_dir / "results.json").read_text())["fits"]
    assert [fits[name]["jit_compile"] for name in ("long", "short", "padded")] == [True, False, False]
    assert fits["short"]["jit_compile_set_by"] == \
        "train.jit_compile=auto: off: an LSTM/GRU net in a fit of 20 steps (under 1,000)"
    assert fits["streamed"]["jit_compile_set_by"] == fits["padded"]["jit_compile_set_by"]
    assert fits["padded"]["jit_compile_set_by"].startswith("train.jit_compile=auto: off: an LSTM/GRU net on batches "
                                                            "that may differ in shape")
    assert fits["users"]["jit_compile_set_by"] == "the model came compiled: its own compile's jit_compile"
    assert np.isfinite(loss)


def test_auto_keeps_xla_off_for_a_users_regularizer_constraint_loss_metric_or_schedule():
    import keras

    train = TrainConfig()

    def net(**lstm_options):
        return keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, **lstm_options), keras.layers.Dense(1)])

    def own_penalty(weights):
        return keras.ops.sum(weights) * 0.0

    whys = [speed.jit_choice(train, net(**options), 1, total_steps=5_000)[1] for options in (
        {"recurrent_regularizer": own_penalty}, {"kernel_constraint": lambda w: w},
        {"kernel_regularizer": keras.regularizers.L2(1e-4)})]
    assert whys[0].endswith("holds a function or object not from Keras (recurrent_regularizer)")
    assert whys[1].endswith("holds a function or object not from Keras (kernel_constraint)")
    assert whys[2].endswith("on: an LSTM/GRU net in a fit of 5,000 steps (>= 1,000)")  # Keras' own: kept on
    # Keras' own layers around the user's function, as an activation or a constraint.
    wrapped = [net(recurrent_activation=keras.layers.Lambda(own_penalty)),
               net(kernel_constraint=keras.layers.Activation(own_penalty)), net(activation=keras.layers.ReLU())]
    assert [speed.jit_choice(train, model, 1, total_steps=5_000)[0] for model in wrapped] == [False, False, True]

    class Schedule(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return 1e-3

    compile_args = [{"loss": "mse", "metrics": ["mae", keras.metrics.MeanSquaredError()]},
                    {"loss": lambda y, p: keras.ops.mean((y - p) ** 2)},
                    {"loss": "mse", "metrics": {"out": [own_penalty]}},
                    {"loss": "mse", "optimizer": keras.optimizers.Adam(Schedule())},
                    {"loss": keras.losses.Huber(), "optimizer": keras.optimizers.Adam(1e-3)},
                    {"loss": "mse", "weighted_metrics": [keras.metrics.MeanMetricWrapper(fn=own_penalty)]},
                    {"loss": "mse", "optimizer": keras.optimizers.Adam(
                        keras.optimizers.schedules.ExponentialDecay(1e-3, 100, 0.9))},
                    {"loss": "mse",
                     "optimizer": keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(Schedule()))}]
    assert [speed.user_code_in(args) for args in compile_args] == ["", "loss", "metrics", "optimizer", "",
                                                                   "weighted_metrics", "", "optimizer"]
    assert speed.jit_choice(train, net(), 1, total_steps=5_000, user_code="loss")[1] == \
        "train.jit_compile=auto: off: the fit's loss holds a function or object not from Keras"


def test_a_fit_with_a_loss_of_the_users_trains_without_xla(logdir):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(250, 5, 3)).astype("float32")
    y = x.sum(axis=(1, 2))[:, None]
    with kexp.open_run("own", logdir=logdir, train=TrainConfig(epochs=4, batch_size=1), verbose=0) as run:
        # 1,000 steps: off for the loss, not for the length.
        model = run.fit(lambda: _recurrent("gru"), (x, y), loss=lambda t, p: (t - p) ** 2)
    assert model.jit_compile is False
    assert run.fit_settings["model"]["jit_compile_set_by"].endswith("off: the fit's loss holds a function or object "
                                                                   "not from Keras")
