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


def _functional():
    import keras

    inputs = keras.Input((16,))
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(keras.layers.Dense(8)(inputs)))


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
                                         r"sparse_categorical_crossentropy: 0\.\.9; a placeholder label for "
                                         r"'no class' takes the loss's ignore_class$"):
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


def test_a_training_datasets_labels_are_refused_as_arrays_are_and_it_is_read_once(logdir):
    """A training dataset of one fixed shape is held in memory: under XLA its bad label gave NaN and `diverged`."""
    import tensorflow as tf

    x, y = _data(10)
    bad = np.where(y == 3, 12, y)
    for train in ((x, bad), (x, bad, np.ones(len(y), "float32"))):
        with pytest.raises(UsageError) as refused:
            with kexp.open_run("labels", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
                run.fit(_classifier, tf.data.Dataset.from_tensor_slices(train), loss="sparse_categorical_crossentropy")
        assert str(refused.value) == ("train y: labels run 0..12, but the model's output has 10 classes; "
                                      "allowed for sparse_categorical_crossentropy: 0..9")
        assert not run.run_dir.exists()
    huge = tf.data.Dataset.from_tensor_slices((x, np.where(y == 3, 1e30, y).astype("float32")))
    with pytest.raises(UsageError, match=r"^train y: labels run 0\.\.1e\+30, but the model's output has 10 classes; "
                                         r"allowed for sparse_categorical_crossentropy: 0\.\.9$"):
        with kexp.open_run("labels", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(_classifier, huge, loss="sparse_categorical_crossentropy")
    # A dataset that can be read only once (a one-shot generator, its length declared) still trains on every
    # example, under XLA as auto chose: the labels were read from the one pass the fit trains on.
    examples = iter(list(zip(x, y)))
    once = tf.data.Dataset.from_generator(lambda: examples, output_signature=(
        tf.TensorSpec((16,), tf.float32), tf.TensorSpec((), tf.int64))).apply(tf.data.experimental.assert_cardinality(256))
    with kexp.open_run("labels", logdir=logdir, train=TrainConfig(epochs=2, batch_size=32), verbose=0) as run:
        model = run.fit(_classifier, once, loss="sparse_categorical_crossentropy")
    assert run.results["status"] == "ok" and run.results["fits"]["model"]["jit_compile"] is True
    assert int(model.optimizer.iterations) == 2 * 8
    # A declared length shorter than what the generator yields: the first 160 train, as the pipeline always did.
    longer = tf.data.Dataset.from_generator(lambda: zip(x, y), output_signature=(
        tf.TensorSpec((16,), tf.float32), tf.TensorSpec((), tf.int64))).apply(tf.data.experimental.assert_cardinality(160))
    with kexp.open_run("labels", logdir=logdir, train=TrainConfig(epochs=1, batch_size=32), verbose=0) as run:
        model = run.fit(_classifier, longer, loss="sparse_categorical_crossentropy")
    assert run.results["fits"]["model"]["train_examples"] == 160 and int(model.optimizer.iterations) == 5


def test_sparse_and_ragged_inputs_are_refused_naming_the_conversion(logdir):
    import tensorflow as tf

    x, y = _data(10, n=64)
    dense = np.where(x > 1, x, 0).astype("float32")
    refused = {"SparseTensor": tf.sparse.from_dense(dense)}
    if importlib.util.find_spec("scipy") is not None:  # not a kexp dependency; Keras' fit takes its matrices
        import scipy.sparse

        # dok_matrix is a dict: it must not be walked as a dict of inputs.
        refused.update(csr_matrix=scipy.sparse.csr_matrix(dense), dok_matrix=scipy.sparse.dok_matrix(dense))
    for kind, given in refused.items():
        with pytest.raises(UsageError) as caught:
            with kexp.open_run("sparse", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
                run.fit(_classifier, (given, y), loss="sparse_categorical_crossentropy")
        assert str(caught.value) == (f"train: x is a sparse {kind} of shape (64, 16); the harness batches dense "
                                     "arrays: allowed: .toarray() (scipy) or tf.sparse.to_dense(...), or Keras' "
                                     "own fit and evaluate for sparse data")
        assert not run.run_dir.exists()
    ragged = tf.ragged.constant([[1.0, 2.0], [3.0]] * 32)
    with pytest.raises(UsageError, match=r"^validation: x\['a'\] is a RaggedTensor of shape \(64, None\); .*"
                                         r"allowed: .to_tensor\(\) \(zero-padded\), or a tf.data.Dataset of "
                                         r"its slices with pad=True"):
        with kexp.open_run("ragged", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(_classifier, (x, y), ({"a": ragged}, y), loss="sparse_categorical_crossentropy")


def test_one_element_losses_and_labels_nan_labels_and_evaluate_are_checked_but_a_loss_subclass_is_not(logdir):
    import keras

    x, y = _data(10)
    wrong = np.where(y == 3, 10, y)
    for loss, given in ((["sparse_categorical_crossentropy"], wrong), ({"head": "SparseCategoricalCrossentropy"},
                                                                        [wrong])):
        with pytest.raises(UsageError, match=r"^train y: labels run 0\.\.10, but the model's output has 10 classes"):
            with kexp.open_run("labels", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
                run.fit(_functional, (x, given), loss=loss)
    with pytest.raises(UsageError, match=r"^train y: labels hold NaN or inf; allowed for "
                                         r"sparse_categorical_crossentropy: class indices 0\.\.9$"):
        with kexp.open_run("labels", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(_classifier, (x, np.where(y == 3, np.nan, y)), loss="sparse_categorical_crossentropy")

    class OneBased(keras.losses.SparseCategoricalCrossentropy):  # labels 1..10: its own call maps them
        def call(self, y_true, y_pred):
            return super().call(y_true - 1, y_pred)

    with kexp.open_run("labels", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
        model = run.fit(_classifier, (x, y + 1), loss=OneBased(from_logits=True))
        with pytest.raises(UsageError, match=r"^data y: labels run 0\.\.10, .* allowed for "
                                             r"sparse_categorical_crossentropy: 0\.\.9$"):
            model.compile(loss="sparse_categorical_crossentropy")
            run.evaluate(model, (x, wrong))
    assert run.results["status"] == "ok"


def test_one_hot_labels_with_a_sparse_loss_are_refused_pointing_to_categorical_crossentropy(logdir):
    x, y = _data(10)
    with pytest.raises(UsageError) as refused:
        with kexp.open_run("labels", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(_classifier, (x, np.eye(10)[y]), loss="sparse_categorical_crossentropy")
    assert str(refused.value) == ("train y: shape (256, 10) for the model's output (None, 10); allowed for "
                                  "sparse_categorical_crossentropy: class indices of shape (256,) (one-hot labels "
                                  "take loss categorical_crossentropy)")
    assert not run.run_dir.exists()


def test_examples_of_varying_shape_without_pad_are_named_in_one_line(logdir):
    import tensorflow as tf

    sequences = [np.ones(n, "float32") for n in (3, 3, 5, 4)]
    with pytest.raises(UsageError, match=r"^train: arrays of different lengths \(x\[0\]: 3, x\[1\]: 3, x\[2\]: 5, "
                                         r"x\[3\]: 4, y: 4\); .* examples of varying length go in a tf.data.Dataset "
                                         r"with pad=True$"):
        with kexp.open_run("shapes", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(_classifier, (sequences, np.zeros(4)), loss="mse")
    data = tf.data.Dataset.from_generator(lambda: ((s, np.float32(1)) for s in sequences), output_signature=(
        tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.float32)))
    with pytest.raises(UsageError, match=r"^train: examples of different shapes cannot be batched \(Cannot batch "
                                         r"tensors with different shapes in component 0\. First element had shape "
                                         r"\[\d\] and element \d had shape \[\d\]\.\); allowed: pad=True \(each batch "
                                         r"padded to its longest example\), or examples of one shape$"):
        with kexp.open_run("shapes", logdir=logdir, train=TrainConfig(epochs=1, batch_size=4), verbose=0) as run:
            run.fit(lambda: _recurrent_sum(), data, loss="mse")
    assert json.loads((run.run_dir / "results.json").read_text())["status"] == "failed"  # it was training
    # Where the model is scored, and the validation data of a fit whose training data is of one shape.
    with pytest.raises(UsageError, match=r"^data: examples of different shapes cannot be batched \(Cannot batch "
                                         r"tensors .* element \d had shape \[\d\]\.\); allowed: pad=True"):
        with kexp.open_run("shapes", logdir=logdir, train=TrainConfig(epochs=1, batch_size=4), verbose=0) as run:
            run.evaluate(run.fit(lambda: _recurrent_sum(), data.take(2), loss="mse"), data)
    with pytest.raises(UsageError, match=r"^validation: examples of different shapes cannot be batched"):
        with kexp.open_run("shapes", logdir=logdir, train=TrainConfig(epochs=1, batch_size=4), verbose=0) as run:
            run.fit(lambda: _recurrent_sum(), data.take(2), validation_data=data, loss="mse")


def _recurrent_sum():
    import keras

    inputs = keras.Input((None,))
    return keras.Model(inputs, keras.layers.Dense(1)(keras.ops.sum(inputs, axis=1, keepdims=True)))


TOO_LARGE = '''
"""Makes its data, after a fit when data.fit_first, in an array no machine holds (128 TiB)."""
import dataclasses

import numpy as np

from kexp import ExperimentConfig, TrainConfig, param


@dataclasses.dataclass(frozen=True)
class Data:
    fit_first: bool = param(False, help="train a tiny fit before making the data")


CONFIG = ExperimentConfig(data=Data(), model=None, train=TrainConfig(epochs=1, batch_size=4))


def run(config, harness):
    import keras

    if config.data.fit_first:
        harness.fit(lambda: keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]),
                    (np.zeros((8, 2), "float32"), np.zeros((8, 1), "float32")), loss="mse")
    np.empty(2**47, np.uint8)
    return {}
'''


@pytest.mark.parametrize("fit_first", [False, True])
def test_data_too_large_for_memory_is_refused_in_one_line_before_any_fit(fit_first, tmp_path, logdir):
    from helpers import run_cli_here

    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "too_large.py").write_text(TOO_LARGE)
    args = ("run", "too_large", "--set", f"data.fit_first={str(fit_first).lower()}", "--logdir", str(logdir))
    env = {"KEXP_EXPERIMENTS_PATH": str(tmp_path / "exps")}
    if not fit_first:
        # Settings within their limits that together ask for more than the machine has: bad input.
        proc = run_cli_here(*args, env=env)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert proc.stderr.strip().splitlines() == [
            "kexp: error: too_large: its settings need more memory than this machine has (Unable to allocate "
            "128. TiB for an array with shape (140737488355328,) and data type uint8); allowed: smaller data "
            "settings (kexp show too_large lists them and their limits)"]
        assert not (logdir / "too_large").exists() or not any((logdir / "too_large").iterdir())
    else:
        # After a fit the run failed, as any error in it does: its folder and the fit stay, status failed.
        with pytest.raises(MemoryError):
            run_cli_here(*args, env=env)
        (run_dir,) = (logdir / "too_large").iterdir()
        assert json.loads((run_dir / "results.json").read_text())["status"] == "failed"


def test_a_refused_fit_leaves_a_users_compiled_model_as_it_was(logdir):
    """The harness sets its steps_per_execution on a model its user compiled; a refusal after that undoes it."""
    import keras

    x, y = _data(10)
    model = _classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(UsageError, match=r"^train y: labels run 0\.\.12"):
        with kexp.open_run("labels", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
            run.fit(model, (x, np.where(y == 3, 12, y)))
    assert model.steps_per_execution == 1
    batches = []
    model.fit(x, y, batch_size=32, epochs=1, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))])
    assert batches == list(range(8))
