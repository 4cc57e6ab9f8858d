"""Multi-layer perceptrons: the function approximators and classifiers of tutorials 000-004."""

from __future__ import annotations

from typing import Sequence

import keras

from kexp.models.common import (
    ACTIVATIONS,
    INITIALIZERS,
    activation_layer,
    assemble,
    check_choice,
    check_range,
    check_sizes,
    unique_name,
)


def mlp_layers(
    output_size: int,
    *,
    hidden: Sequence[int] = (64,),
    activation: str = "relu",
    dropout: float = 0.0,
    l1: float = 0.0,
    l2: float = 0.0,
    initializer: str = "glorot_uniform",
    batch_norm: bool = False,
    output_activation: str | None = None,
    name: str | None = None,
) -> list[keras.layers.Layer]:
    """Returns the layers of an MLP, input to output.

    Example: `keras.Sequential([keras.Input((2,)), *mlp_layers(1, hidden=(8,))])`.

    Each hidden layer is Dense -> [BatchNorm] -> activation -> [Dropout]. With
    batch norm the Dense has no bias (BatchNorm's beta replaces it). Layer
    names start with the prefix: `mlp_layers(1, name="enc")` gives
    `enc_dense_0`, `enc_relu_0`, ..., `enc_head`; by default the prefix is
    `mlp`, `mlp_1`, ..., unique in the process, so stacks combine in one model.

    Args:
        output_size: Units of the head.
        hidden: Widths of the hidden layers; empty gives a linear/softmax model.
        activation: One of `ACTIVATIONS` (relu, tanh, sigmoid, leaky_relu, softplus, ...).
        dropout: Dropout rate after each hidden layer, in [0, 1).
        l1: L1 weight penalty on every kernel.
        l2: L2 weight penalty on every kernel.
        initializer: Kernel initializer (glorot_* is Xavier, he_* is He).
        batch_norm: Add BatchNormalization before each hidden activation.
        output_activation: Head activation; None for logits or regression.
        name: Prefix of the layer names (letters, digits, `_`, `-`), kept as
            given; None picks a unique one.

    Returns:
        The layers.
    """
    prefix = unique_name(name, "mlp") + "_"
    return _mlp_layers(
        output_size, prefix, hidden=hidden, activation=activation, dropout=dropout, l1=l1, l2=l2,
        initializer=initializer, batch_norm=batch_norm, output_activation=output_activation,
    )


def _mlp_layers(
    output_size: int,
    prefix: str,
    *,
    hidden: Sequence[int],
    activation: str,
    dropout: float,
    l1: float,
    l2: float,
    initializer: str,
    batch_norm: bool,
    output_activation: str | None,
) -> list[keras.layers.Layer]:
    """Returns `mlp_layers`, with layer names starting with `prefix` ("" inside `mlp`'s own model)."""
    check_sizes("hidden", hidden, allow_empty=True)
    check_range("output_size", output_size, low=1)
    check_choice("activation", activation, ACTIVATIONS)
    check_choice("initializer", initializer, INITIALIZERS)
    check_range("dropout", dropout, low=0.0, high=1.0, high_open=True)
    check_range("l1", l1, low=0.0)
    check_range("l2", l2, low=0.0)
    regularizer = keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None
    layers: list[keras.layers.Layer] = []
    for i, width in enumerate(hidden):
        layers.append(keras.layers.Dense(
            int(width), use_bias=not batch_norm, kernel_initializer=initializer,
            kernel_regularizer=regularizer, name=f"{prefix}dense_{i}",
        ))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization(name=f"{prefix}bn_{i}"))
        layers.append(activation_layer(activation, f"{prefix}{activation}_{i}"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout, name=f"{prefix}dropout_{i}"))
    layers.append(keras.layers.Dense(
        output_size, activation=output_activation, kernel_initializer=initializer,
        kernel_regularizer=regularizer, name=f"{prefix}head",
    ))
    return layers


def mlp(
    input_shape: Sequence[int],
    output_size: int,
    *,
    hidden: Sequence[int] = (64,),
    activation: str = "relu",
    dropout: float = 0.0,
    l1: float = 0.0,
    l2: float = 0.0,
    initializer: str = "glorot_uniform",
    batch_norm: bool = False,
    output_activation: str | None = None,
    sequential: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Builds an MLP; inputs with more than one axis are flattened first.

    Example: `mlp((784,), 10, hidden=(500,))` is tutorial 000's FNN (397,510 parameters).

    Args:
        input_shape: Shape of one example, e.g. `(2,)` or `(28, 28)`.
        output_size: See `mlp_layers`.
        hidden: See `mlp_layers`.
        activation: See `mlp_layers`.
        dropout: See `mlp_layers`.
        l1: See `mlp_layers`.
        l2: See `mlp_layers`.
        initializer: See `mlp_layers`.
        batch_norm: See `mlp_layers`.
        output_activation: See `mlp_layers`.
        sequential: Return a `keras.Sequential` instead of a functional model.
        name: Model name; None gives `mlp`, `mlp_1`, ..., unique in the process.
            The model's own layers keep short names (`dense_0`, ..., `head`).

    Returns:
        A `keras.Model`.
    """
    name = unique_name(name, "mlp")
    layers = _mlp_layers(
        output_size, "", hidden=hidden, activation=activation, dropout=dropout, l1=l1, l2=l2,
        initializer=initializer, batch_norm=batch_norm, output_activation=output_activation,
    )
    if len(input_shape) > 1:
        layers.insert(0, keras.layers.Flatten(name="flatten"))
    return assemble(layers, input_shape, name=name, sequential=sequential)
