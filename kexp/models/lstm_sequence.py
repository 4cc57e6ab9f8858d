"""A whole LSTM sequence as one differentiable op: Keras' forward steps, a hand-written backward pass.

TensorFlow's automatic gradient of a step loop repeats, at every step, the
products for the weight gradients (`h_prev^T @ dz`, `x^T @ dz`) and the
input gradient (`dz @ W^T`), and adds each step's weight gradient into a
running sum the size of the kernels. The backward loop here keeps only
what must be sequential, `dh_prev = dz @ U^T` on a recurrent kernel
transposed once (TensorFlow's `transpose_b` product was 3-4x slower here),
and stacks every step's gate gradient `dz`; the weight and input gradients
are then one product each over all steps.

Only the standard cell runs here (tanh and sigmoid, no mask, no dropout),
and only small batches: the loop here runs its steps one after another and
the large products after it, where a step loop's weight-gradient products
overlap the next step's on a second core, which won from batch 64 on
(`kexp.models.lstm.SEQUENCE_OP_MAX_BATCH`). `kexp.models.LSTM` decides.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def _forward(inputs: tf.Tensor, h0: tf.Tensor, c0: tf.Tensor, kernel: tf.Tensor, recurrent: tf.Tensor,
             bias: tf.Tensor | None) -> tuple[Any, ...]:
    """Runs the steps as Keras' LSTMCell (implementation 2) does, op for op, keeping what the backward needs.

    Args:
        inputs: `[time, batch, features]`.
        h0: `[batch, units]` initial output.
        c0: `[batch, units]` initial carry.
        kernel: `[features, 4 * units]`.
        recurrent: `[units, 4 * units]`.
        bias: `[4 * units]`, or None.

    Returns:
        `(h_last, c_last, outputs, saved)`: the last state, every step's
        output `[time, batch, units]`, and six `TensorArray`s of every
        step's `i, f, g, o, tanh(c), c_prev` (kept apart: an array holds
        the step's tensors without copying them; a concatenation copied).
    """
    steps = tf.shape(inputs)[0]

    def step(t: tf.Tensor, h: tf.Tensor, c: tf.Tensor, outputs: Any, saved: tuple) -> tuple:
        z = tf.matmul(inputs[t], kernel)
        z = tf.add(z, tf.matmul(h, recurrent))
        if bias is not None:
            z = tf.add(z, bias)
        z0, z1, z2, z3 = tf.split(z, 4, axis=1)
        i, f, g, o = tf.sigmoid(z0), tf.sigmoid(z1), tf.tanh(z2), tf.sigmoid(z3)
        c_prev, c = c, f * c + i * g
        tanh_c = tf.tanh(c)
        h = o * tanh_c
        return (t + 1, h, c, outputs.write(t, h),
                tuple(array.write(t, value) for array, value in zip(saved, (i, f, g, o, tanh_c, c_prev))))

    outputs = tf.TensorArray(inputs.dtype, size=steps)
    saved = tuple(tf.TensorArray(inputs.dtype, size=steps) for _ in range(6))
    _, h, c, outputs, saved = tf.while_loop(lambda t, *_: t < steps, step, (0, h0, c0, outputs, saved))
    return h, c, outputs.stack(), saved


def _gate_gradients(inputs: tf.Tensor, recurrent: tf.Tensor, saved: tuple,
                    upstream: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, ...]:
    """Runs the steps backwards: each step's pre-activation gradient, the bias's and the initial state's.

    Args:
        inputs: `[time, batch, features]` (for its shape).
        recurrent: `[units, 4 * units]`.
        saved: The arrays `_forward` saved.
        upstream: Gradients of every step's output, the last output and the last carry.

    Returns:
        `(dz, dh0, dc0, d_bias)`: `[time, batch, 4 * units]` gate
        gradients, the initial state's and the bias's (summed in the loop:
        one column sum over all steps ran slower).
    """
    d_outputs, d_h, d_c = upstream
    recurrent_t = tf.transpose(recurrent)
    # TensorFlow's own gradient kernels: SigmoidGrad(y, dy) = dy * y * (1 - y), TanhGrad(y, dy) = dy * (1 - y^2).
    sigmoid_grad, tanh_grad = tf.raw_ops.SigmoidGrad, tf.raw_ops.TanhGrad

    def step(t: tf.Tensor, dh: tf.Tensor, dc: tf.Tensor, d_bias: tf.Tensor, dzs: Any) -> tuple:
        dh = dh + d_outputs[t]
        i, f, g, o, tanh_c, c_prev = (array.read(t) for array in saved)
        dc = dc + tanh_grad(y=tanh_c, dy=dh * o)
        dz = tf.concat([sigmoid_grad(y=i, dy=dc * g), sigmoid_grad(y=f, dy=dc * c_prev), tanh_grad(y=g, dy=dc * i),
                        sigmoid_grad(y=o, dy=dh * tanh_c)], axis=1)
        return t - 1, tf.matmul(dz, recurrent_t), dc * f, d_bias + tf.reduce_sum(dz, axis=0), dzs.write(t, dz)

    steps = tf.shape(inputs)[0]
    start = (steps - 1, d_h, d_c, tf.zeros_like(recurrent[0]), tf.TensorArray(inputs.dtype, size=steps))
    _, dh0, dc0, d_bias, dzs = tf.while_loop(lambda t, *_: t >= 0, step, start)
    return dzs.stack(), dh0, dc0, d_bias


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
               saved: tuple, upstream: tuple[Any, Any, Any]) -> tuple[tf.Tensor, ...]:
    """Every input's gradient: `(d_inputs, dh0, dc0, d_kernel, d_recurrent, d_bias)`."""
    outputs, arrays = saved
    # An output nobody used may arrive as None: it contributes nothing.
    upstream = tuple(tf.zeros_like(like) if grad is None else grad
                     for grad, like in zip(upstream, (outputs, h0, c0)))
    dz, dh0, dc0, d_bias = _gate_gradients(inputs, recurrent, arrays, upstream)
    units4 = tf.shape(dz)[-1]
    dz_flat = tf.reshape(dz, [-1, units4])
    outputs_before = tf.concat([h0[None], outputs[:-1]], axis=0)
    d_recurrent = tf.matmul(tf.reshape(outputs_before, [-1, tf.shape(h0)[-1]]), dz_flat, transpose_a=True)
    d_kernel = tf.matmul(tf.reshape(inputs, [-1, tf.shape(inputs)[-1]]), dz_flat, transpose_a=True)
    d_inputs = tf.reshape(tf.matmul(dz_flat, tf.transpose(kernel)), tf.shape(inputs))
    return d_inputs, dh0, dc0, d_kernel, d_recurrent, d_bias


@tf.custom_gradient
def _with_bias(inputs: tf.Tensor, h0: tf.Tensor, c0: tf.Tensor, kernel: tf.Tensor, recurrent: tf.Tensor,
               bias: tf.Tensor) -> Any:
    """`lstm_sequence` with a bias."""
    h, c, outputs, arrays = _forward(inputs, h0, c0, kernel, recurrent, bias)

    def grad(*upstream: Any) -> tuple[tf.Tensor, ...]:
        return _gradients(inputs, h0, c0, kernel, recurrent, (outputs, arrays), upstream)

    return (outputs, h, c), grad


@tf.custom_gradient
def _without_bias(inputs: tf.Tensor, h0: tf.Tensor, c0: tf.Tensor, kernel: tf.Tensor, recurrent: tf.Tensor) -> Any:
    """`lstm_sequence` without a bias."""
    h, c, outputs, arrays = _forward(inputs, h0, c0, kernel, recurrent, None)

    def grad(*upstream: Any) -> tuple[tf.Tensor, ...]:
        return _gradients(inputs, h0, c0, kernel, recurrent, (outputs, arrays), upstream)[:5]

    return (outputs, h, c), grad
