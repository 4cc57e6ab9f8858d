"""Internal: the arguments `Harness.fit` takes as Keras' `fit` and `compile` would, checked; what the harness owns.

Refused here, each with its reason and as a `UsageError` (so that a refused
call leaves no run folder behind): the `fit` arguments the harness sets
itself, counts that are not positive integers, compile arguments given for a
model that is already compiled (Keras' `fit` takes none: they would be
silently dropped), a model instance whose variables a multi-replica strategy
cannot reach.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import keras
import tensorflow as tf

from kexp.errors import UsageError
from kexp.store import names

# `Model.compile` arguments `Harness.fit` takes, for a model it compiles.
# (`optimizer_options`: arguments of the configured optimizer, which the harness makes.)
COMPILE_ARGUMENTS = ("loss", "metrics", "loss_weights", "weighted_metrics", "optimizer", "optimizer_options")


@dataclasses.dataclass(frozen=True)
class KerasFitArguments:
    """The Keras `fit` keyword arguments a harness fit was given, checked.

    Attributes:
        validation: Validation data, a fraction of the training data, or None.
        verbose: Keras' verbosity for this fit, or None for the run's.
        steps_per_epoch: Batches per epoch of a Python generator (None: the
            data decides).
    """

    validation: Any
    verbose: int | str | None
    steps_per_epoch: int | None


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


def keras_fit_arguments(validation: Any, fit_kwargs: dict[str, Any]) -> KerasFitArguments:
    """Returns the checked Keras `fit` arguments; refuses what the harness owns or does not know.

    Args:
        validation: `Harness.fit`'s own `validation` argument.
        fit_kwargs: The other keyword arguments, by Keras' names:
            `validation_data`, `validation_split`, `verbose`, and
            `steps_per_epoch` (for a Python generator only).

    Raises:
        UsageError: For an argument the harness owns (saying why), an
            unknown one, or two ways of giving the validation data.
    """
    fit_kwargs = dict(fit_kwargs)
    for key, why in _OWNED_FIT_ARGS.items():
        if key in fit_kwargs:
            raise UsageError(f"fit: {key} is set by the harness ({why}); received {key}={_short(fit_kwargs[key])}")
    given = {key: fit_kwargs.pop(key) for key in ("validation_data", "validation_split") if key in fit_kwargs}
    verbose = fit_kwargs.pop("verbose", None)
    if verbose is not None and verbose not in (0, 1, 2, "auto"):
        raise UsageError(f"fit: verbose: received {verbose!r}; allowed: 0, 1, 2 or 'auto', as in Keras' fit")
    steps = fit_kwargs.pop("steps_per_epoch", None)
    if steps is not None:
        steps = count_argument("steps_per_epoch", steps, 10**12)
    if fit_kwargs:
        raise UsageError(f"fit: unexpected keyword arguments {sorted(fit_kwargs)}; allowed: class_weight, "
                         "validation_data, validation_split, validation_freq, verbose, steps_per_epoch (Python "
                         f"generators), pad, and {', '.join(COMPILE_ARGUMENTS)} for a model the harness compiles")
    if validation is not None:
        given = {"validation": validation, **given}
    if len(given) > 1:
        raise UsageError(f"fit: received both {' and '.join(given)}; allowed: one of them")
    return KerasFitArguments(next(iter(given.values()), None), verbose, steps)


def _short(value: Any) -> str:
    """Returns a value as an error message shows it: scalars as they are, arrays and the like by type and shape."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return repr(value)[:80]
    shape = getattr(value, "shape", None)
    return f"<{type(value).__name__}{f' of shape {tuple(shape)}' if shape is not None else ''}>"


def check_compile_arguments(model: keras.Model, compile_args: dict[str, Any]) -> None:
    """Refuses compile arguments for a model its user compiled: Keras' `fit` takes none, so none would apply.

    Raises:
        UsageError: Naming the arguments and what the model was compiled with.
    """
    given = sorted(key for key, value in compile_args.items() if value is not None)
    if not model.compiled or not given:
        return
    optimizer = getattr(model, "optimizer", None)
    had = f"optimizer {type(optimizer).__name__}" if optimizer is not None else "its own optimizers"
    loss = getattr(model, "loss", None)
    if loss is not None:
        had += f", loss {getattr(loss, 'name', None) or getattr(loss, '__name__', None) or loss!r}"
    raise UsageError(
        f"fit: received {', '.join(given)} for a model that is already compiled ({had}); the harness would "
        "not use them; allowed: an uncompiled model (or a function returning one) with the compile arguments "
        "(the harness compiles it), or your compiled model without them")


def model_from(model: Any, num_replicas: int, strategy_name: str) -> keras.Model:
    """Returns the model to fit: the instance given, or what the function given returns.

    Call inside `strategy.scope()`.

    Raises:
        UsageError: For something that is not a model or a function
            returning one, or an instance whose variables live outside the
            scope of a multi-replica strategy.
    """
    if isinstance(model, keras.Model):
        if num_replicas > 1 and not mirrored(model):
            raise UsageError(
                f"fit: received a {type(model).__name__} instance built outside the scope of --strategy "
                f"{strategy_name} ({num_replicas} replicas); allowed: a function that builds "
                "the model (fit calls it inside strategy.scope()), or a model built inside run.strategy.scope()")
        return model
    if not callable(model):
        raise UsageError(f"fit: received {type(model).__name__}; allowed: a keras.Model or a function returning one")
    built = model()
    if not isinstance(built, keras.Model):
        raise UsageError(f"fit: the model function returned {type(built).__name__}; allowed: a keras.Model")
    return built


def needs_loss(model: keras.Model, compile_args: dict[str, Any], is_gan: bool) -> None:
    """Refuses an uncompiled model given no loss, unless its own `train_step` computes one (Keras' VAE
    example compiles with an optimizer alone); and a `kexp.models.GAN` given one (it has its own losses)."""
    if is_gan:
        given = sorted(key for key, value in compile_args.items()
                       if value is not None and key not in ("optimizer", "optimizer_options"))
        if given:
            raise UsageError(f"fit: received {', '.join(given)} for a kexp.models.GAN, which computes its own "
                             "losses and metrics (d_loss, g_loss); allowed: optimizer= alone (a function "
                             "returning one optimizer, called once per network) or optimizer_options=")
        return
    if compile_args.get("loss") is None and type(model).train_step is keras.Model.train_step:
        raise UsageError(f"fit: received no loss for the uncompiled {type(model).__name__} "
                         f"{model.name!r}; allowed: fit(..., loss=...), or a model you compiled")


def compile_arguments(**given: Any) -> dict[str, Any]:
    """Returns the compile arguments given to `fit` (`COMPILE_ARGUMENTS`), None where not given.

    Raises:
        UsageError: For both `optimizer` and `optimizer_options` (the options are for the configured one).
    """
    options = given.get("optimizer_options")
    if options is not None and (not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options)):
        raise UsageError(f"fit: received optimizer_options {options!r}; allowed: a dict of the configured "
                         "optimizer's arguments by name, e.g. {'beta_1': 0.5}")
    if given.get("optimizer") is not None and options:
        raise UsageError(f"fit: received optimizer and optimizer_options {dict(given['optimizer_options'])!r}; "
                         "allowed: one of them (optimizer_options are arguments of the configured train.optimizer)")
    return {key: given.get(key) for key in COMPILE_ARGUMENTS}


# Keras `fit` arguments the harness sets itself, and why.
_OWNED_FIT_ARGS = {
    "initial_epoch": "a resume starts each fit at its saved epoch",
    "shuffle": "train.shuffle and train.seed order every epoch, reproducibly across resumes",
    "batch_size": "train.batch_size per replica",
    "validation_steps": "validation scores every validation example",
    "validation_batch_size": "train.batch_size per replica",
    "x": "pass the training data as fit(model, (x, y)), e.g. harness.fit(build, (x_train, y_train))",
    "y": "pass the training data as fit(model, (x, y)), e.g. harness.fit(build, (x_train, y_train))",
    "sample_weight": "pass it as the third part of the data: fit(model, (x, y, sample_weight))",
}



def checked(train: Any, validation: Any, fit_kwargs: dict[str, Any], name: str | None,
            given: dict[str, Any]) -> tuple[KerasFitArguments, dict[str, Any]]:
    """Returns `Harness.fit`'s Keras arguments and compile arguments, refusing bad ones before anything is written.

    Args:
        train: The training data given.
        validation: The validation data or fraction given.
        fit_kwargs: The Keras `fit` keyword arguments given.
        name: The fit's name, if given.
        given: The compile arguments given (`COMPILE_ARGUMENTS`).

    Raises:
        UsageError: Naming the argument and what is allowed.
    """
    keras_args = keras_fit_arguments(validation, fit_kwargs)
    if train is None:
        raise UsageError("fit: received no training data; allowed: fit(model, (x, y)) or fit(model, (x,)), "
                         "an unbatched tf.data.Dataset, a keras.utils.PyDataset or a generator")
    compile_args = compile_arguments(**given)
    if name is not None:
        names.check_name(name, "fit name")
    return keras_args, compile_args
