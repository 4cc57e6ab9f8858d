"""Data Keras' fit takes but the harness cannot train as Keras would is refused before training, in one line.

Sparse labels outside the model's classes (`kexp.engine.labels`); sparse and ragged inputs (`kexp.engine.inputs`).
"""

from __future__ import annotations

import importlib.util
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


def test_sparse_and_ragged_inputs_are_refused_naming_the_conversion(logdir):
    import tensorflow as tf

    x, y = _data(10, n=64)
    dense = np.where(x > 1, x, 0).astype("float32")
    refused = {"SparseTensor": tf.sparse.from_dense(dense)}
    if importlib.util.find_spec("scipy") is not None:  # not a kexp dependency; Keras' fit takes its matrices
        import scipy.sparse

        refused.update(csr_matrix=scipy.sparse.csr_matrix(dense), coo_matrix=scipy.sparse.coo_matrix(dense))
    for kind, given in refused.items():
        with pytest.raises(UsageError) as caught:
            with kexp.open_run("sparse", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
                run.fit(_classifier, (given, y), loss="sparse_categorical_crossentropy")
        assert str(caught.value) == (f"train: received a sparse {kind} of shape (64, 16); the harness batches "
                                     "dense arrays: allowed: x.toarray() (scipy) or tf.sparse.to_dense(x), or "
                                     "plain model.fit for sparse inputs")
        assert not run.run_dir.exists()
    ragged = tf.ragged.constant([[1.0, 2.0], [3.0]] * 32)
    with pytest.raises(UsageError, match=r"^validation: received a RaggedTensor of shape \(64, None\); .*"
                                         r"allowed: x.to_tensor\(\) \(zero-padded\)"):
        with kexp.open_run("ragged", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(_classifier, (x, y), (ragged, y), loss="sparse_categorical_crossentropy")
