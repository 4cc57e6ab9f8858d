"""Recurrent models: SimpleRNN, GRU and LSTM, stacked and bidirectional.

Sequence-to-sequence (`return_sequences=True`, one Dense head applied at every
step) and sequence-to-one heads; optional token embedding input.
"""

from __future__ import annotations

from typing import Sequence

import keras

from kexp.models.common import assemble, check_choice, check_range, check_sizes, unique_name
from kexp.models.lstm import LSTM

# `lstm` is kexp's LSTM (Keras' layer and weights, a faster CPU training step: `kexp.models.lstm`);
# `keras_lstm` is `keras.layers.LSTM` itself, e.g. to compare the two.
CELLS = {"simple": keras.layers.SimpleRNN, "gru": keras.layers.GRU, "lstm": LSTM, "keras_lstm": keras.layers.LSTM}


def rnn_layers(
    output_size: int,
    *,
    cell: str = "lstm",
    units: Sequence[int] = (64,),
    bidirectional: bool = False,
    return_sequences: bool = True,
    vocab_size: int | None = None,
    embedding_dim: int = 32,
    output_activation: str | None = None,
    name: str | None = None,
) -> list[keras.layers.Layer]:
    """Returns the layers of a recurrent model, input to output.

    Example: `rnn_layers(10, cell="gru", units=(32, 32), return_sequences=False)`.

    Layer names start with the prefix: `rnn_layers(1, name="enc")` gives
    `enc_lstm_0`, `enc_per_step_head`; by default the prefix is `rnn`,
    `rnn_1`, ..., unique in the process, so stacks combine in one model.

    Args:
        output_size: Units of the Dense head (per step when `return_sequences`).
        cell: `simple`, `gru`, `lstm` (`kexp.models.LSTM`: `keras.layers.LSTM`
            with a faster CPU training step) or `keras_lstm` (Keras' own).
        units: Units of each recurrent layer, bottom to top (several = deep RNN).
        bidirectional: Wrap each recurrent layer in `Bidirectional`.
        return_sequences: Sequence-to-sequence head when True, else sequence-to-one.
        vocab_size: When set, inputs are token ids embedded to `embedding_dim`.
        embedding_dim: Embedding width for token inputs.
        output_activation: Activation of the head (None = linear / logits).
        name: Prefix of the layer names (letters, digits, `_`, `-`), kept as
            given; None picks a unique one.

    Returns:
        The layers.
    """
    return _rnn_layers(
        output_size, unique_name(name, "rnn") + "_", cell=cell, units=units, bidirectional=bidirectional,
        return_sequences=return_sequences, vocab_size=vocab_size, embedding_dim=embedding_dim,
        output_activation=output_activation,
    )


def _rnn_layers(
    output_size: int,
    prefix: str,
    *,
    cell: str,
    units: Sequence[int],
    bidirectional: bool,
    return_sequences: bool,
    vocab_size: int | None,
    embedding_dim: int,
    output_activation: str | None,
) -> list[keras.layers.Layer]:
    """Returns `rnn_layers`, with layer names starting with `prefix` ("" inside `rnn`'s own model)."""
    check_choice("cell", cell, tuple(CELLS))
    check_sizes("units", units)
    check_range("output_size", output_size, low=1)
    layers: list[keras.layers.Layer] = []
    if vocab_size is not None:
        check_range("vocab_size", vocab_size, low=1)
        layers.append(keras.layers.Embedding(vocab_size, embedding_dim, name=f"{prefix}embedding"))
    for i, width in enumerate(units):
        last = i == len(units) - 1
        layer = CELLS[cell](int(width), return_sequences=return_sequences or not last, name=f"{prefix}{cell}_{i}")
        if bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"{prefix}bi_{cell}_{i}")
        layers.append(layer)
    # A Dense on [batch, steps, units] applies one kernel at every step: what
    # TimeDistributed(Dense) computes, without its per-step slices (Keras 3
    # unrolls a known length into one slice and one matmul per step: on
    # LSTM(256) over 80 steps, 1.2x slower training and twice the tracing).
    layers.append(keras.layers.Dense(output_size, activation=output_activation,
                                     name=f"{prefix}per_step_head" if return_sequences else f"{prefix}head"))
    return layers


def rnn(
    input_shape: Sequence[int | None],
    output_size: int,
    *,
    cell: str = "lstm",
    units: Sequence[int] = (64,),
    bidirectional: bool = False,
    return_sequences: bool = True,
    vocab_size: int | None = None,
    embedding_dim: int = 32,
    output_activation: str | None = None,
    sequential: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Builds a recurrent model.

    Example: `rnn((None, 32), 32, cell="lstm", units=(64,))` is the tutorial's sine
    forecaster: an LSTM over steps of 32 samples, a Dense(32) per step.

    Args:
        input_shape: `(time, features)`, or `(time,)` with `vocab_size` set;
            `time` may be None for variable-length sequences.
        output_size: See `rnn_layers`.
        cell: See `rnn_layers`.
        units: See `rnn_layers`.
        bidirectional: See `rnn_layers`.
        return_sequences: See `rnn_layers`.
        vocab_size: See `rnn_layers`.
        embedding_dim: See `rnn_layers`.
        output_activation: See `rnn_layers`.
        sequential: Return a `keras.Sequential` instead of a functional model.
        name: Model name; None gives `rnn`, `rnn_1`, ..., unique in the process.
            The model's own layers keep short names (`lstm_0`, ..., `per_step_head`).

    Returns:
        A `keras.Model`.
    """
    name = unique_name(name, "rnn")
    layers = _rnn_layers(
        output_size, "", cell=cell, units=units, bidirectional=bidirectional,
        return_sequences=return_sequences, vocab_size=vocab_size,
        embedding_dim=embedding_dim, output_activation=output_activation,
    )
    dtype = "int32" if vocab_size else "float32"
    return assemble(layers, input_shape, name=name, sequential=sequential, dtype=dtype)
