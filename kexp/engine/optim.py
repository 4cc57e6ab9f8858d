"""The optimizer and learning-rate schedule a fit trains with, from the train config and the fit's length.

Nothing here reads what an earlier fit left behind: the number of steps a
cosine schedule decays over is passed in (`FitPlan.total_steps`), so
`make_optimizer` gives the same optimizer inside or outside a fit.
"""

from __future__ import annotations

import inspect
from typing import Any

import keras

from kexp.config import TrainConfig
from kexp.errors import UsageError

# train.optimizer's names, the Keras class each makes, and the arguments it adds.
OPTIMIZERS: dict[str, tuple[type, dict[str, Any]]] = {
    "adam": (keras.optimizers.Adam, {}),
    "adamw": (keras.optimizers.AdamW, {}),
    "sgd": (keras.optimizers.SGD, {}),
    "momentum": (keras.optimizers.SGD, {"momentum": 0.9}),
    "rmsprop": (keras.optimizers.RMSprop, {}),
}


def learning_rate(train: TrainConfig, total_steps: int | None = None) -> Any:
    """Returns `train.learning_rate`, or its cosine decay over `total_steps` when `train.lr_schedule` is cosine.

    Args:
        train: The train settings.
        total_steps: The optimizer steps the schedule spans (a fit's epochs
            times its steps per epoch); without it, the constant rate.
    """
    if train.lr_schedule == "cosine" and total_steps:
        return keras.optimizers.schedules.CosineDecay(train.learning_rate, decay_steps=total_steps)
    return train.learning_rate


def make_optimizer(train: TrainConfig, total_steps: int | None = None, **options: Any) -> keras.optimizers.Optimizer:
    """Returns a fresh optimizer as `train.optimizer` names it, with `learning_rate(train, total_steps)`.

    Args:
        train: The train settings.
        total_steps: As for `learning_rate`.
        **options: More arguments of that optimizer (e.g. Adam's `beta_1`).

    Raises:
        UsageError: For an optimizer name kexp does not know, or an option that optimizer does not take.
    """
    name = train.optimizer
    if name not in OPTIMIZERS:
        raise UsageError(f"train.optimizer: received {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    kind, preset = OPTIMIZERS[name]
    taken = inspect.signature(kind).parameters
    for key in options:
        if key not in taken:
            raise UsageError(f"train.optimizer: {name} takes no {key} (set by the experiment); "
                             f"allowed: an optimizer that takes {', '.join(options)}, e.g. adam")
    return kind(learning_rate(train, total_steps), **{**preset, **options})
