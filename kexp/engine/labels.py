"""Class labels a sparse categorical loss cannot score, refused before training or evaluating.

TensorFlow's kernel raises on a label outside the model's classes only when a
batch holding it trains, after the run folder has filled; under XLA (which
`train.jit_compile=auto` picks for some nets) the same label gives a NaN loss
instead. Both end a fit without naming the label, so the harness reads the
labels of in-memory data once and refuses such a fit with one line, as Keras
would refuse the batch.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kexp.errors import UsageError

_SPARSE_NAMES = ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy")  # as keras.losses.get names them


def check_sparse_labels(model: keras.Model, **named_data: Any) -> None:
    """Refuses labels outside `0..classes-1` when a single-output model trains with a sparse categorical loss.

    Only in-memory data is read: datasets and streams are left to Keras (labels
    are checked as their batches train). A loss's `ignore_class` is allowed.

    Args:
        model: The compiled model.
        **named_data: Normalized data (`kexp.engine.inputs.normalize`) by the name errors give it
            (`train`, `validation`, `data`); None is skipped.

    Raises:
        UsageError: Naming the data, the labels' range and the classes allowed.
    """
    found = _sparse_loss(_single(getattr(model, "loss", None)))
    if found is None or len(getattr(model, "outputs", None) or ()) != 1:
        return  # a model built lazily has no outputs yet: Keras checks its labels as they train
    loss_name, ignore_class = found
    classes = model.outputs[0].shape[-1]
    if not classes:
        return
    for what, data in named_data.items():
        labels = _single(data[1]) if isinstance(data, tuple) and len(data) >= 2 else None
        if labels is None or isinstance(labels, (dict, tuple, list)):
            continue
        labels = np.asarray(labels)
        if not labels.size or not np.issubdtype(labels.dtype, np.number):
            continue
        if not np.isfinite(labels).all():
            raise UsageError(f"{what} y: labels hold NaN or inf; allowed for {loss_name}: class indices "
                             f"0..{classes - 1}")
        labels = labels.astype(np.int64)  # as Keras casts them
        if ignore_class is not None:
            labels = labels[labels != ignore_class]
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            ignored = "" if ignore_class is None else f" (or ignore_class {ignore_class})"
            raise UsageError(f"{what} y: labels run {labels.min()}..{labels.max()}, but the model's output has "
                             f"{classes} classes; allowed for {loss_name}: 0..{classes - 1}{ignored}")


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
