"""Internal: the arguments `Harness.fit` takes as Keras' `fit` would, checked; what the harness owns.

Refused here, each with its reason: the `fit` arguments the harness sets
itself, counts that are not positive integers, a model instance whose
variables a multi-replica strategy cannot reach.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from kexp.errors import UsageError


def mirrored(model: keras.Model) -> bool:
    """Returns whether the model's variables (if any yet) are distributed ones, made in a strategy's scope."""
    weights = model.weights
    if not weights:
        return True  # built lazily inside the scope by fit
    value = getattr(weights[0], "value", weights[0])
    return isinstance(value, tf.distribute.DistributedValues)


def count_argument(name: str, value: Any, most: int) -> int:
    """Returns `value` if it is an integer 1..most (not a bool), else raises `UsageError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise UsageError(f"fit: {name}: received {str(value)[:80]!r}; allowed: an integer 1..{most:,}")
    return value


def validation_argument(validation: Any, fit_kwargs: dict[str, Any]) -> Any:
    """Returns the validation data or fraction from `validation` and `fit_kwargs`; refuses what the harness owns."""
    for key, why in _OWNED_FIT_ARGS.items():
        if key in fit_kwargs:
            raise TypeError(f"fit: {key} is set by the harness ({why}); received {key}={fit_kwargs[key]!r}")
    split = fit_kwargs.pop("validation_split", None)
    if fit_kwargs:
        raise TypeError(f"fit: unexpected keyword arguments {sorted(fit_kwargs)}; allowed: class_weight, "
                        "validation_freq, validation_split, pad and the harness's own")
    if split is not None:
        if validation is not None:
            raise TypeError("fit: received both validation and validation_split; allowed: one of them")
        return split
    return validation


# Keras `fit` arguments the harness sets itself, and why.
_OWNED_FIT_ARGS = {
    "initial_epoch": "a resume starts each fit at its saved epoch",
    "shuffle": "train.shuffle and train.seed order every epoch, reproducibly across resumes",
    "steps_per_epoch": "an epoch is every training example once",
    "batch_size": "train.batch_size per replica",
}
