"""Helpers every builder shares: assembling a layer stack, naming, argument checks."""

from __future__ import annotations

import re
from typing import Any, Sequence

import keras

ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu", "softplus", "elu", "gelu", "linear")
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal", "random_normal")
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def assemble(
    layers: Sequence[keras.layers.Layer],
    input_shape: Sequence[int | None],
    *,
    name: str,
    sequential: bool = False,
    dtype: str = "float32",
) -> keras.Model:
    """Chains layers into a model, Sequential or functional.

    Args:
        layers: Layers from input to output.
        input_shape: Shape of one example (no batch dimension).
        name: Model name.
        sequential: Return `keras.Sequential` instead of a functional `keras.Model`.
        dtype: Input dtype (`int32` for token ids).

    Returns:
        The model; both forms hold the same layers and parameter count.
    """
    if sequential:
        return keras.Sequential([keras.Input(tuple(input_shape), dtype=dtype), *layers], name=name)
    inputs = keras.Input(tuple(input_shape), dtype=dtype, name="inputs")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


def check_choice(arg: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raises ValueError naming `arg`, `value` and `allowed` when value is not allowed."""
    if value not in allowed:
        raise ValueError(f"{arg} must be one of {', '.join(map(str, allowed))}; received: {arg}={value!r}")


def check_sizes(arg: str, values: Sequence[int], *, allow_empty: bool = False) -> None:
    """Raises ValueError unless `values` is a sequence of positive integers."""
    need = "a list of positive integers" if allow_empty else "a non-empty list of positive integers"
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{arg} must be {need}, e.g. {arg}=(8,); received: {arg}={values!r}")
    values = list(values)
    if (not values and not allow_empty) or any(int(v) != v or v < 1 for v in values):
        raise ValueError(f"{arg} must be {need}; received: {arg}={values}")


def check_pairs(arg: str, pairs: Sequence[Sequence[int]], meaning: str) -> None:
    """Raises ValueError unless `pairs` is a non-empty list of pairs of positive integers."""
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"{arg} must be a non-empty list of {meaning} pairs; received: {arg}={list(pairs)}")
    for pair in pairs:
        check_sizes(arg, pair)


def check_range(arg: str, value: float, *, low: float, high: float | None = None, high_open: bool = False) -> None:
    """Raises ValueError unless `low <= value <= high` (or `< high` when `high_open`); NaN is never in range."""
    above = high is not None and (value >= high if high_open else value > high)
    if not value >= low or above:
        upper = "" if high is None else (f" and < {high}" if high_open else f" and <= {high}")
        raise ValueError(f"{arg} must be >= {low}{upper}; received: {arg}={value}")


def activation_layer(name: str, layer_name: str | None = None) -> keras.layers.Layer:
    """Returns the activation as a layer (LeakyReLU with slope 0.2 for `leaky_relu`)."""
    if name == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=0.2, name=layer_name)
    return keras.layers.Activation(name, name=layer_name)


def check_name(arg: str, value: Any) -> None:
    """Raises ValueError unless `value` is a non-empty str of letters, digits, `_` and `-`."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f'{arg} must be a non-empty string of letters, digits, "_" and "-", e.g. {arg}="encoder"; '
                         f"received: {arg}={value!r}")


def unique_name(name: str | None, default: str) -> str:
    """Returns `name` when given (checked), else `default` made unique in this process.

    Unique as Keras names its layers, on the same counter
    (`keras.backend.get_uid`): `default`, then `default_1`, `default_2`, ...;
    `keras.backend.clear_session()` starts again from `default`.

    Args:
        name: The caller's name, kept exactly; None picks one.
        default: The name's stem when `name` is None.

    Returns:
        The name.

    Raises:
        ValueError: When `name` is not a non-empty string of letters, digits, `_` and `-`.
    """
    if name is not None:
        check_name("name", name)
        return name
    uid = keras.backend.get_uid(default)
    return default if uid == 1 else f"{default}_{uid - 1}"
