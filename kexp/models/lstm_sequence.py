"""A whole LSTM sequence as one differentiable op: Keras' forward steps, a hand-written backward pass.

TensorFlow's automatic gradient of a step loop repeats, at every step, the
products for the weight gradients (`h_prev^T @ dz`, `x^T @ dz`) and the
input gradient (`dz @ W^T`), and adds each step's weight gradient into a
running sum the size of the kernels. The backward loop here keeps only
what must be sequential, `dh_prev = dz @ U^T` on a recurrent kernel
transposed once (TensorFlow's `transpose_b` product was 3-4x slower here),
and stacks every step's gate gradient `dz`; the weight and input gradients
are then one product each over all steps.

Only the standard cell runs here (tanh and sigmoid, no mask, no dropout):
`kexp.models.LSTM` decides, and runs its step loop elsewhere.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def _forward(inputs: tf.Tensor, h0: tf.Tensor, c0: tf.Tensor, kernel: tf.Tensor, recurrent: tf.Tensor,
             bias: tf.Tensor | None) -> tuple[tf.Tensor, ...]:
    """Runs the steps as Keras' LSTMCell (implementation 2) does, op for op, keeping what the backward needs.

    Args:
        inputs: `[time, batch, features]`.
        h0: `[batch, units]` initial output.
        c0: `[batch, units]` initial carry.
        kernel: `[features, 4 * units]`.
        recurrent: `[units, 4 * units]`.
        bias: `[4 * units]`, or None.

    Returns:
        `(h_last, c_last, outputs, carries, gates)`: the last state, every
        step's output and carry `[time, batch, units]`, and every step's
        activated gates `[time, batch, 4 * units]` (i, f, g, o).
    """
    steps = tf.shape(inputs)[0]

    def step(t: tf.Tensor, h: tf.Tensor, c: tf.Tensor, outputs: Any, carries: Any, gates: Any) -> tuple:
        z = tf.matmul(inputs[t], kernel)
        z = tf.add(z, tf.matmul(h, recurrent))
        if bias is not None:
            z = tf.add(z, bias)
        z0, z1, z2, z3 = tf.split(z, 4, axis=1)
        i, f, g, o = tf.sigmoid(z0), tf.sigmoid(z1), tf.tanh(z2), tf.sigmoid(z3)
        c = f * c + i * g
        h = o * tf.tanh(c)
        return (t + 1, h, c, outputs.write(t, h), carries.write(t, c),
                gates.write(t, tf.concat([i, f, g, o], axis=1)))

    arrays = tuple(tf.TensorArray(inputs.dtype, size=steps) for _ in range(3))
    _, h, c, outputs, carries, gates = tf.while_loop(lambda t, *_: t < steps, step, (0, h0, c0, *arrays))
    return h, c, outputs.stack(), carries.stack(), gates.stack()


def _gate_gradients(inputs: tf.Tensor, c0: tf.Tensor, recurrent: tf.Tensor, saved: tuple[tf.Tensor, ...],
                    upstream: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Runs the steps backwards: each step's pre-activation gradient and the initial state's gradients.

    Args:
        inputs: `[time, batch, features]` (for its shape).
        c0: `[batch, units]` initial carry.
        recurrent: `[units, 4 * units]`.
        saved: `(outputs, carries, gates)` from `_forward`.
        upstream: Gradients of every step's output, the last output and the last carry.

    Returns:
        `(dz, dh0, dc0)`: `[time, batch, 4 * units]` gate gradients and the initial state's.
    """
    _, carries, gates = saved
    d_outputs, d_h, d_c = upstream
    recurrent_t = tf.transpose(recurrent)
    carries_before = tf.concat([c0[None], carries[:-1]], axis=0)
    tanh_carries = tf.tanh(carries)

    def step(t: tf.Tensor, dh: tf.Tensor, dc: tf.Tensor, dzs: Any) -> tuple:
        dh = dh + d_outputs[t]
        i, f, g, o = tf.split(gates[t], 4, axis=1)
        tanh_c = tanh_carries[t]
        dc = dc + dh * o * (1 - tanh_c * tanh_c)
        dz = tf.concat([dc * g * i * (1 - i), dc * carries_before[t] * f * (1 - f), dc * i * (1 - g * g),
                        dh * tanh_c * o * (1 - o)], axis=1)
        return t - 1, tf.matmul(dz, recurrent_t), dc * f, dzs.write(t, dz)

    steps = tf.shape(inputs)[0]
    _, dh0, dc0, dzs = tf.while_loop(lambda t, *_: t >= 0, step,
                                     (steps - 1, d_h, d_c, tf.TensorArray(inputs.dtype, size=steps)))
    return dzs.stack(), dh0, dc0


def lstm_sequence(inputs: tf.Tensor, h0: tf.Tensor, c0: tf.Tensor, kernel: tf.Tensor, recurrent: tf.Tensor,
                  bias: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Runs a standard LSTM (tanh, sigmoid gates) over a whole sequence, with a hand-written gradient.

    Args:
        inputs: `[time, batch, features]`, time first.
        h0: `[batch, units]` initial output.
        c0: `[batch, units]` initial carry.
        kernel: `[features, 4 * units]` input kernel (gates i, f, c, o as Keras orders them).
        recurrent: `[units, 4 * units]` recurrent kernel.
        bias: `[4 * units]`, or None for a layer without bias.

    Returns:
        `(outputs, h_last, c_last)`: every step's output `[time, batch, units]` and the last state.
    """
    if bias is None:
        return _without_bias(inputs, h0, c0, kernel, recurrent)
    return _with_bias(inputs, h0, c0, kernel, recurrent, bias)


def _gradients(inputs: tf.Tensor, h0: tf.Tensor, c0: tf.Tensor, kernel: tf.Tensor, recurrent: tf.Tensor,
               saved: tuple[tf.Tensor, ...], upstream: tuple[Any, Any, Any]) -> tuple[tf.Tensor, ...]:
    """Every input's gradient: `(d_inputs, dh0, dc0, d_kernel, d_recurrent, d_bias)`."""
    outputs = saved[0]
    # An output nobody used arrives as None: it contributes nothing.
    upstream = tuple(tf.zeros_like(like) if grad is None else grad
                     for grad, like in zip(upstream, (outputs, h0, c0)))
    dz, dh0, dc0 = _gate_gradients(inputs, c0, recurrent, saved, upstream)
    units4 = tf.shape(dz)[-1]
    dz_flat = tf.reshape(dz, [-1, units4])
    outputs_before = tf.concat([h0[None], outputs[:-1]], axis=0)
    d_recurrent = tf.matmul(tf.reshape(outputs_before, [-1, tf.shape(h0)[-1]]), dz_flat, transpose_a=True)
    d_kernel = tf.matmul(tf.reshape(inputs, [-1, tf.shape(inputs)[-1]]), dz_flat, transpose_a=True)
    d_inputs = tf.reshape(tf.matmul(dz_flat, tf.transpose(kernel)), tf.shape(inputs))
    return d_inputs, dh0, dc0, d_kernel, d_recurrent, tf.reduce_sum(dz_flat, axis=0)


@tf.custom_gradient
def _with_bias(inputs: tf.Tensor, h0: tf.Tensor, c0: tf.Tensor, kernel: tf.Tensor, recurrent: tf.Tensor,
               bias: tf.Tensor) -> Any:
    """`lstm_sequence` with a bias."""
    h, c, *saved = _forward(inputs, h0, c0, kernel, recurrent, bias)

    def grad(*upstream: Any) -> tuple[tf.Tensor, ...]:
        return _gradients(inputs, h0, c0, kernel, recurrent, tuple(saved), upstream)

    return (saved[0], h, c), grad


@tf.custom_gradient
def _without_bias(inputs: tf.Tensor, h0: tf.Tensor, c0: tf.Tensor, kernel: tf.Tensor, recurrent: tf.Tensor) -> Any:
    """`lstm_sequence` without a bias."""
    h, c, *saved = _forward(inputs, h0, c0, kernel, recurrent, None)

    def grad(*upstream: Any) -> tuple[tf.Tensor, ...]:
        return _gradients(inputs, h0, c0, kernel, recurrent, tuple(saved), upstream)[:5]

    return (saved[0], h, c), grad
