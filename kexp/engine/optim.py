"""The optimizer and learning-rate schedule a fit trains with, from the train config and the fit's length.

Nothing here reads what an earlier fit left behind: the number of steps a
cosine schedule decays over is passed in (`FitPlan.total_steps`), so
`make_optimizer` gives the same optimizer inside or outside a fit.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

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
        total_steps: As for `learning_rate` (a positive whole number, or None).
        **options: More arguments of that optimizer (e.g. Adam's `beta_1`); its learning rate is
            `train.learning_rate`'s.

    Raises:
        UsageError: For an optimizer name kexp does not know, a `total_steps` that is not a positive whole
            number, or an option that optimizer does not take.
    """
    name = train.optimizer
    if name not in OPTIMIZERS:
        raise UsageError(f"train.optimizer: received {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    if total_steps is not None and (isinstance(total_steps, bool) or not isinstance(total_steps, int)
                                    or total_steps < 1):
        raise UsageError(f"optimizer: received total_steps={total_steps!r}; allowed: a whole number >= 1, or None "
                         "(a constant learning rate)")
    kind, preset = OPTIMIZERS[name]
    check_options(kind, name, options)
    return kind(learning_rate(train, total_steps), **{**preset, **options})


def check_options(kind: type, name: str, options: Mapping[str, Any]) -> None:
    """Refuses options the optimizer class does not take by name, and the learning rate (the config's).

    Raises:
        UsageError: Naming the option and the arguments the optimizer takes.
    """
    named = [key for key, p in inspect.signature(kind).parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and key != "learning_rate"]
    for key in options:
        if key == "learning_rate":
            raise UsageError("optimizer_options: received learning_rate; allowed: set train.learning_rate "
                             "(and train.lr_schedule) instead, the harness makes the rate or its schedule")
        if key not in named:
            raise UsageError(f"optimizer_options: train.optimizer={name} ({kind.__name__}) takes no {key!r}, "
                             f"which the fit passes; allowed: {', '.join(named)}")
