"""Class labels a sparse categorical loss cannot score, refused before training or evaluating.

TensorFlow's kernel raises on a label outside the model's classes only when a
batch holding it trains, after the run folder has filled; under XLA (which
`train.jit_compile=auto` picks for some nets) the same label gives a NaN loss
instead. Both end a fit without naming the label, so the harness reads the
labels of in-memory data once and refuses such a fit with one line, as Keras
would refuse the batch. A `tf.data.Dataset` of examples of one fixed shape is
read into tensors here, as the pipeline would hold it, and the fit goes on with
those tensors: its examples are read once, as before (a dataset that can be
read only once still trains). Streams and datasets of varying shapes are left
to Keras.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kexp.engine.pipeline import fixed_shapes
from kexp.errors import UsageError

_SPARSE_NAMES = ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy")  # as keras.losses.get names them


def check_sparse_labels(model: keras.Model, **named_data: Any) -> dict[str, Any]:
    """Refuses labels outside `0..classes-1` when a single-output model trains with a sparse categorical loss.

    In-memory data is read: arrays, and datasets of `(x, y)` or `(x, y, w)` examples of one fixed shape,
    which are read into tensors once (the pipeline holds such data as tensors anyway). Streams and
    datasets of varying shapes are left to Keras (labels are checked as their batches train). A loss's
    `ignore_class` is allowed.

    Args:
        model: The compiled model.
        **named_data: Normalized data (`kexp.engine.inputs.normalize`) by the name errors give it
            (`train`, `validation`, `data`); None is skipped.

    Returns:
        `named_data`, with each dataset that was read replaced by its examples as a tuple of tensors: the
        caller trains on those, so that the dataset is not read again.

    Raises:
        UsageError: Naming the data, the labels' range and the classes allowed.
    """
    found = _sparse_loss(_single(getattr(model, "loss", None)))
    if found is None or len(getattr(model, "outputs", None) or ()) != 1:
        return named_data  # a model built lazily has no outputs yet: Keras checks its labels as they train
    loss_name, ignore_class = found
    output_shape = tuple(model.outputs[0].shape)
    if not output_shape or not output_shape[-1]:
        return named_data
    named_data = {what: _held(data) for what, data in named_data.items()}
    for what, data in named_data.items():
        labels = _single(data[1]) if isinstance(data, tuple) and len(data) >= 2 else None
        if labels is None or isinstance(labels, (dict, tuple, list)):
            continue
        labels = np.asarray(labels)
        if labels.size and np.issubdtype(labels.dtype, np.number):
            _check(f"{what} y", labels, output_shape, loss_name, ignore_class)
    return named_data


def _held(data: Any) -> Any:
    """Returns a dataset of `(x, y[, w])` examples of one fixed shape as a tuple of tensors; other data as it is."""
    if not isinstance(data, tf.data.Dataset):
        return data
    spec = data.element_spec
    if not (isinstance(spec, tuple) and 2 <= len(spec) <= 3 and isinstance(_single(spec[1]), tf.TensorSpec)
            and fixed_shapes(data)):
        return data
    # One batch of every example (an empty dataset is refused before this): what the pipeline gathers from.
    return tuple(data.batch(2**31 - 1).get_single_element())


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
