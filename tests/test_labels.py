"""Sparse labels outside the model's classes are refused before training (`kexp.engine.labels`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kexp
from kexp.config import TrainConfig
from kexp.errors import UsageError


def _classifier(classes: int = 10):
    import keras

    # Dense-only and over 50k parameters: train.jit_compile=auto gives it XLA, where such a label gave NaN.
    return keras.Sequential([keras.Input((16,)), keras.layers.Dense(256, activation="relu"),
                             keras.layers.Dense(256, activation="relu"), keras.layers.Dense(classes)])


def _data(high: int, n: int = 256):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 16)).astype("float32"), rng.integers(0, high, n)


@pytest.mark.parametrize("loss, named", [
    ("sparse_categorical_crossentropy", "sparse_categorical_crossentropy"),
    ("keras_instance", "SparseCategoricalCrossentropy")])
def test_a_label_past_the_classes_is_refused_before_training_leaving_nothing(logdir, loss, named):
    import keras

    if loss == "keras_instance":
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x, y = _data(13)
    with pytest.raises(UsageError) as refused:
        with kexp.open_run("labels", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(_classifier, (x, y), loss=loss)
    assert str(refused.value) == (f"train y: labels run 0..12, but the model's output has 10 classes; "
                                  f"allowed for {named}: 0..9")
    assert not run.run_dir.exists()


def test_validation_labels_and_negative_ones_are_refused_but_ignore_class_is_allowed(logdir):
    import keras

    x, y = _data(10)
    bad = y.copy()
    bad[3] = -1
    with pytest.raises(UsageError, match=r"^validation y: labels run -1\.\.9, .* allowed for "
                                         r"sparse_categorical_crossentropy: 0\.\.9$"):
        with kexp.open_run("labels", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(_classifier, (x, y), (x, bad), loss="sparse_categorical_crossentropy")
    ignoring = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    with kexp.open_run("labels", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
        run.fit(_classifier, (x, bad), loss=ignoring)
    assert json.loads((run.run_dir / "results.json").read_text())["status"] == "ok"
    with pytest.raises(UsageError, match=r"labels run 0\.\.12, .* allowed for SparseCategoricalCrossentropy: "
                                         r"0\.\.9 \(or ignore_class -1\)$"):
        with kexp.open_run("labels", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(_classifier, (x, np.where(bad == 5, 12, bad)), loss=ignoring)
