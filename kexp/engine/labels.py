"""Class labels a sparse categorical loss cannot score, refused before training or evaluating.

TensorFlow's kernel raises on a label outside the model's classes only when a
batch holding it trains, after the run folder has filled; under XLA (which
`train.jit_compile=auto` picks for some nets) the same label gives a NaN loss
instead. Both end a fit without naming the label, so the harness reads the
labels of in-memory data once and refuses such a fit with one line, as Keras
would refuse the batch. A training `tf.data.Dataset` of examples of one fixed
shape is read into tensors first, as the pipeline would hold it, and the fit
goes on with those tensors: its examples are read once, as before. Validation
and evaluation datasets, streams and datasets of varying shapes are left to
Keras.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kexp.engine.pipeline import fixed_shapes
from kexp.errors import UsageError

_SPARSE_NAMES = ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy")  # as keras.losses.get names them


def check_sparse_labels(model: keras.Model, **named_data: Any) -> None:
    """Refuses labels outside `0..classes-1` when a single-output model trains with a sparse categorical loss.

    Only in-memory data is read (arrays, and a training dataset `held_in_memory` made tensors); other
    datasets and streams are left to Keras (labels are checked as their batches train). A loss's
    `ignore_class` is allowed.

    Args:
        model: The compiled model.
        **named_data: Normalized data (`kexp.engine.inputs.normalize`) by the name errors give it
            (`train`, `validation`, `data`); None is skipped.

    Raises:
        UsageError: Naming the data, the labels' range and the classes allowed.
    """
    found = _checked_loss(model)
    if found is None:
        return
    loss_name, ignore_class, output_shape = found
    for what, data in named_data.items():
        labels = _single(data[1]) if isinstance(data, tuple) and len(data) >= 2 else None
        if labels is None or isinstance(labels, (dict, tuple, list)):
            continue
        labels = np.asarray(labels)
        if labels.size and np.issubdtype(labels.dtype, np.number):
            _check(f"{what} y", labels, output_shape, loss_name, ignore_class)


def held_in_memory(model: keras.Model, train: Any, num_examples: int) -> Any:
    """Returns a training dataset whose labels `check_sparse_labels` should read as a tuple of tensors.

    Only for a model it checks, and a dataset of `(x, y)` or `(x, y, w)` examples of one fixed shape:
    the pipeline holds such training data as tensors anyway (a seeded permutation each epoch), so reading
    it here costs no more memory, and the fit trains on what was read: a dataset that can be read only
    once still trains. Validation and evaluation datasets stream through a cache instead and are left.

    Args:
        model: The compiled model.
        train: The fit's normalized training data.
        num_examples: Its examples as counted (the first this many are read, as the pipeline would).

    Returns:
        The tensors, or `train` as it was.
    """
    if not isinstance(train, tf.data.Dataset) or _checked_loss(model) is None:
        return train
    spec = train.element_spec
    if not (isinstance(spec, tuple) and 2 <= len(spec) <= 3 and isinstance(_single(spec[1]), tf.TensorSpec)
            and fixed_shapes(train)):
        return train
    return tuple(train.take(num_examples).batch(max(num_examples, 1)).get_single_element())


def _checked_loss(model: keras.Model) -> tuple[str, int | None, tuple] | None:
    """Returns the sparse loss's name, its `ignore_class` and the output shape, if `check_sparse_labels` applies."""
    found = _sparse_loss(_single(getattr(model, "loss", None)))
    if found is None or len(getattr(model, "outputs", None) or ()) != 1:
        return None  # a model built lazily has no outputs yet: Keras checks its labels as they train
    output_shape = tuple(model.outputs[0].shape)
    if not output_shape or not output_shape[-1]:
        return None
    return (*found, output_shape)


def _check(what: str, labels: np.ndarray, output_shape: tuple, loss_name: str, ignore_class: int | None) -> None:
    """Refuses one array of labels as Keras' loss would refuse it, or score it wrongly under XLA."""
    classes = output_shape[-1]
    # Keras' rule: one axis fewer than the output, or as many with a last axis of 1.
    if not (labels.ndim == len(output_shape) - 1 or (labels.ndim == len(output_shape) and labels.shape[-1] == 1)):
        onehot = " (one-hot labels take loss categorical_crossentropy)" if labels.shape[-1:] == (classes,) else ""
        raise UsageError(f"{what}: shape {labels.shape} for the model's output {output_shape}; allowed for "
                         f"{loss_name}: class indices of shape {(len(labels),) + output_shape[1:-1]}{onehot}")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():  # integer labels are finite
        raise UsageError(f"{what}: labels hold NaN or inf; allowed for {loss_name}: class indices 0..{classes - 1}")
    # As Keras casts them, toward zero; floats stay floats, so that a huge one (1e30) is not wrapped by a cast.
    labels = np.trunc(labels) if labels.dtype.kind == "f" else labels.astype(np.int64, copy=False)
    if ignore_class is not None:
        labels = labels[labels != ignore_class]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        ignored = "" if ignore_class is None else f" (or ignore_class {ignore_class})"
        hint = "; a placeholder label for 'no class' takes the loss's ignore_class" \
            if ignore_class is None and labels.min() < 0 else ""
        raise UsageError(f"{what}: labels run {labels.min():g}..{labels.max():g}, but the model's output has "
                         f"{classes} classes; allowed for {loss_name}: 0..{classes - 1}{ignored}{hint}")


def _single(value: Any) -> Any:
    """Returns the one element of a one-element list, tuple or dict (a single output's loss or labels), else `value`."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0]
    if isinstance(value, dict) and len(value) == 1:
        return next(iter(value.values()))
    return value


def _sparse_loss(loss: Any) -> tuple[str, int | None] | None:
    """Returns a sparse categorical loss's name and `ignore_class`, or None for any other loss."""
    if isinstance(loss, str):
        return (loss, None) if loss in _SPARSE_NAMES else None
    if type(loss) is keras.losses.SparseCategoricalCrossentropy:  # a subclass may map labels in its own call
        return "SparseCategoricalCrossentropy", loss.get_config().get("ignore_class")
    if loss is keras.losses.sparse_categorical_crossentropy:
        return "sparse_categorical_crossentropy", None
    return None
