"""Character language models from `kexp.models.rnn`: training windows, bits per character on a stream, sampling.

Training uses windows of consecutive characters (truncated backpropagation
through `length` steps, each window starting from a zero state). Evaluation
and sampling carry the recurrent state forward instead: `stateful_twin`
builds a copy of the trained model whose recurrent layers take and return
their state, so a long validation text is scored as one stream and samples
continue from a prompt. Both run as compiled TensorFlow functions.
"""

from __future__ import annotations

import math
import keras
import numpy as np
import tensorflow as tf


def windows(ids: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns `(inputs, targets)`: consecutive non-overlapping windows of `length` symbols and the next symbols.

    Raises:
        ValueError: When `ids` holds fewer than `length + 1` symbols.
    """
    count = (len(ids) - 1) // length
    if count < 1:
        raise ValueError(f"need at least length + 1 = {length + 1} symbols; received {len(ids)}")
    inputs = np.asarray(ids[: count * length], dtype=np.int32).reshape(count, length)
    targets = np.asarray(ids[1: count * length + 1], dtype=np.int32).reshape(count, length)
    return inputs, targets


def stateful_twin(model: keras.Model) -> keras.Model:
    """Returns a copy of a token-input recurrent model whose recurrent layers take and return their state.

    The twin's inputs are `[tokens, *states]` and its outputs
    `[logits, *states]` (an LSTM layer has two state tensors, a GRU or
    SimpleRNN one), bottom layer first. Weights are copied from `model`.

    Raises:
        ValueError: For a bidirectional model (it has no forward state to carry).
    """
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x, state_inputs, state_outputs = tokens, [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Bidirectional):
            raise ValueError(f"a bidirectional model has no forward state to carry; received layer {layer.name!r}")
        if isinstance(layer, keras.layers.RNN):
            config = {**layer.get_config(), "return_sequences": True, "return_state": True}
            count = 2 if isinstance(layer, keras.layers.LSTM) else 1
            inputs = [keras.Input((layer.units,), name=f"{layer.name}_state_{i}") for i in range(count)]
            x, *states = type(layer).from_config(config)(x, initial_state=inputs if count > 1 else inputs[0])
            state_inputs += inputs
            state_outputs += states
        else:
            x = type(layer).from_config(layer.get_config())(x)
    twin = keras.Model([tokens, *state_inputs], [x, *state_outputs], name=f"{model.name}_stateful")
    twin.set_weights(model.get_weights())
    return twin


def zero_states(twin: keras.Model, batch: int | tf.Tensor) -> list[tf.Tensor]:
    """Returns zero initial states for `batch` streams."""
    return [tf.zeros((batch, spec.shape[-1])) for spec in twin.inputs[1:]]


def stream_bits_per_char(model: keras.Model, ids: np.ndarray, streams: int = 64, chunk: int = 256) -> float:
    """Returns the model's mean -log2 P(next symbol) over `ids`, read as `streams` long streams with state carried.

    The text is cut into `streams` equal consecutive parts (a remainder of
    fewer than `streams` symbols is left out), each read from its start
    with a zero state; every symbol after a part's first is scored.
    """
    twin = stateful_twin(model)
    length = (len(ids) - 1) // streams
    if length < 1:
        raise ValueError(f"need more than {streams} symbols; received {len(ids)}")
    data = np.asarray(ids[: streams * length + 1], dtype=np.int32)
    inputs = tf.constant(data[:-1].reshape(streams, length))
    # Each stream's targets are its own next symbols: the input shifted by one within the stream.
    targets = tf.constant(np.stack([data[i * length + 1: (i + 1) * length + 1] for i in range(streams)]))

    @tf.function
    def score(tokens: tf.Tensor, labels: tf.Tensor, states: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        logits, *new_states = twin([tokens, *states], training=False)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(logits, tf.float32))
        return tf.reduce_sum(loss), new_states

    total, states = 0.0, zero_states(twin, streams)
    for start in range(0, length, chunk):
        loss, states = score(inputs[:, start:start + chunk], targets[:, start:start + chunk], states)
        total += float(loss)
    return total / (streams * length) / math.log(2)


def sample(model: keras.Model, prompts: np.ndarray, length: int, temperature: float, seed: int) -> np.ndarray:
    """Returns `(N, length)` symbols generated after each prompt row, one compiled loop for all of them.

    Args:
        model: A trained token-input recurrent model (`kexp.models.rnn` with `vocab_size`).
        prompts: `(N, P)` symbol ids each sample continues.
        length: Symbols to generate.
        temperature: Logits are divided by it before sampling.
        seed: Seed of the (stateless) sampling.
    """
    twin = stateful_twin(model)

    @tf.function
    def generate(prompt: tf.Tensor) -> tf.Tensor:
        logits, *states = twin([prompt, *zero_states(twin, tf.shape(prompt)[0])], training=False)
        last = tf.cast(logits[:, -1], tf.float32)
        out = tf.TensorArray(tf.int32, size=length)
        for step in tf.range(length):
            chosen = tf.cast(tf.random.stateless_categorical(last / temperature, 1, seed=[seed, step])[:, 0],
                             tf.int32)
            out = out.write(step, chosen)
            logits, *states = twin([chosen[:, None], *states], training=False)
            last = tf.cast(logits[:, -1], tf.float32)
        return tf.transpose(out.stack())

    return generate(tf.constant(np.asarray(prompts, dtype=np.int32))).numpy()
