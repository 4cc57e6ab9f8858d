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
    assert speed.jit_compile(train, model, 1, total_steps=50) is xla
    assert speed.jit_compile(train, model, 1, total_steps=49) is False  # the compile would not pay
    assert speed.jit_compile(train, model, 1, total_steps=None) is False  # length unknown
    assert speed.jit_compile(train, model, 1, total_steps=5_000, pad=True) is False  # a compile per shape
    assert speed.jit_compile(train, model, 2, total_steps=5_000) is False  # mirrored over CPU devices
    assert speed.jit_compile(TrainConfig(jit_compile="false"), model, 1, total_steps=5_000) is False


def test_auto_looks_inside_bidirectional_and_embeddings():
    import keras

    def net(*layers):
        return keras.Sequential([keras.Input((6,), dtype="int32"), *layers, keras.layers.Dense(2)])

    train = TrainConfig()
    embedded = net(keras.layers.Embedding(10, 3), keras.layers.Bidirectional(keras.layers.GRU(4)))
    masked = net(keras.layers.Embedding(10, 3, mask_zero=True), keras.layers.LSTM(4))
    simple = net(keras.layers.Embedding(10, 3), keras.layers.Bidirectional(keras.layers.SimpleRNN(4)))
    convolved = net(keras.layers.Embedding(10, 3), keras.layers.Conv1D(4, 3), keras.layers.LSTM(4))
    embedding_only = net(keras.layers.Embedding(10, 3), keras.layers.Flatten())
    decisions = [speed.jit_compile(train, model, 1, total_steps=1_000)
                 for model in (embedded, masked, simple, convolved, embedding_only)]
    assert decisions == [True, False, False, False, False]


def test_fit_records_the_auto_choice_from_its_own_length(logdir):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5, 3)).astype("float32")
    y = x.sum(axis=(1, 2))[:, None]
    with kexp.open_run("own", logdir=logdir, train=TrainConfig(epochs=1, batch_size=1), verbose=0) as run:
        long_fit = run.fit(lambda: _recurrent("gru"), (x[:50], y[:50]), loss="mse", name="long")
        short_fit = run.fit(lambda: _recurrent("gru"), (x[:49], y[:49]), loss="mse", name="short")
        padded = run.fit(lambda: _recurrent("gru"), (x[:50], y[:50]), loss="mse", name="padded", pad=True)
        loss = run.evaluate(long_fit, (x, y))["test_loss"]
    assert (long_fit.jit_compile, short_fit.jit_compile, padded.jit_compile) == (True, False, False)
    fits = json.loads((run.run_dir / "results.json").read_text())["fits"]
    assert [fits[name]["jit_compile"] for name in ("long", "short", "padded")] == [True, False, False]
    assert np.isfinite(loss)
