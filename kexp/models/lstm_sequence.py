"""A whole LSTM sequence as one differentiable op: Keras' forward steps, a hand-written backward pass.

TensorFlow's automatic gradient of a step loop repeats, at every step, the
products for the weight gradients (`h_prev^T @ dz`, `x^T @ dz`) and the
input gradient (`dz @ W^T`), and adds each step's weight gradient into a
running sum the size of the kernels. At small batches those products are
too small for the matmul rate: the backward loop here keeps only what must
be sequential, `dh_prev = dz @ U^T` on a recurrent kernel transposed once
(TensorFlow's `transpose_b` product was 3-4x slower here), stacks every
step's gate gradient `dz`, and makes the weight and input gradients one
product each over all steps.

At larger batches the per-step products are efficient and overlap the next
step's on a second core, and stacking a step's tensors (to keep them as
tensors, see `_forward`) costs more than it saves: `kexp.models.LSTM` runs
this op only at a batch known to be at most `STACKED_MAX_BATCH` (an unknown
one would need a `tf.cond` around the op, whose gradient XLA cannot
compile), with the standard cell (tanh and sigmoid, no mask, no dropout).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

# Measured here (2-core AMD EPYC, LSTM(256), 80-100 steps, one train step): at batch 32 the op took 58-64 ms
# against the step loop's 66-75; at 64, 100-113 against 96-107; at 128, 245-300 against 210-238.
STACKED_MAX_BATCH = 32
_SAVED = 6  # a step's i, f, g, o, tanh(c), c_prev


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
        `(h_last, c_last, outputs, saved)`: the last state, every step's
        output `[time, batch, units]`, and every step's `i, f, g, o,
        tanh(c), c_prev`, `[time, batch, 6 * units]` (tensors, not arrays:
        a gradient that reads arrays fails eagerly on a second read and
        cannot be exported).
    """
    steps = tf.shape(inputs)[0]

    def step(t: tf.Tensor, h: tf.Tensor, c: tf.Tensor, outputs: Any, saved: Any) -> tuple:
        z = tf.matmul(inputs[t], kernel)
        z = tf.add(z, tf.matmul(h, recurrent))
        if bias is not None:
            z = tf.add(z, bias)
        z0, z1, z2, z3 = tf.split(z, 4, axis=1)
        i, f, g, o = tf.sigmoid(z0), tf.sigmoid(z1), tf.tanh(z2), tf.sigmoid(z3)
        c_prev, c = c, f * c + i * g
        tanh_c = tf.tanh(c)
        h = o * tanh_c
        return t + 1, h, c, outputs.write(t, h), saved.write(t, tf.concat([i, f, g, o, tanh_c, c_prev], axis=1))

    arrays = tuple(tf.TensorArray(inputs.dtype, size=steps) for _ in range(2))
    _, h, c, outputs, saved = tf.while_loop(lambda t, *_: t < steps, step, (0, h0, c0, *arrays))
    return h, c, outputs.stack(), saved.stack()


def _step_gradient(saved: tf.Tensor, dh: tf.Tensor, dc: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One step backwards: `(dz, dc_prev)` from the step's saved tensors and its output's and carry's gradients."""
    # TensorFlow's own gradient kernels: SigmoidGrad(y, dy) = dy * y * (1 - y), TanhGrad(y, dy) = dy * (1 - y^2).
    sigmoid_grad, tanh_grad = tf.raw_ops.SigmoidGrad, tf.raw_ops.TanhGrad
    i, f, g, o, tanh_c, c_prev = tf.split(saved, _SAVED, axis=1)
    dc = dc + tanh_grad(y=tanh_c, dy=dh * o)
    dz = tf.concat([sigmoid_grad(y=i, dy=dc * g), sigmoid_grad(y=f, dy=dc * c_prev), tanh_grad(y=g, dy=dc * i),
                    sigmoid_grad(y=o, dy=dh * tanh_c)], axis=1)
    return dz, dc * f


def _stacked_backward(tensors: dict[str, tf.Tensor], upstream: tuple[tf.Tensor, ...]) -> tuple[tf.Tensor, ...]:
    """The gradients with every step's `dz` stacked, then one product each for the weights and the inputs.

    Args:
        tensors: The op's inputs and saved tensors (`_gradients`).
        upstream: Gradients of every step's output, the last output and the last carry.

    Returns:
        `(d_inputs, dh0, dc0, d_kernel, d_recurrent, d_bias)`.
    """
    inputs, h0, kernel, outputs, saved = (tensors[key] for key in ("inputs", "h0", "kernel", "outputs", "saved"))
    d_outputs, d_h, d_c = upstream
    recurrent_t = tf.transpose(tensors["recurrent"])

    def step(t: tf.Tensor, dh: tf.Tensor, dc: tf.Tensor, d_bias: tf.Tensor, dzs: Any) -> tuple:
        dz, dc = _step_gradient(saved[t], dh + d_outputs[t], dc)
        # The bias's sum runs here: one column sum over all steps ran slower.
        return t - 1, tf.matmul(dz, recurrent_t), dc, d_bias + tf.reduce_sum(dz, axis=0), dzs.write(t, dz)

    steps = tf.shape(inputs)[0]
    start = (steps - 1, d_h, d_c, tf.zeros_like(recurrent_t[:, 0]), tf.TensorArray(inputs.dtype, size=steps))
    _, dh0, dc0, d_bias, dzs = tf.while_loop(lambda t, *_: t >= 0, step, start)
    dz = tf.reshape(dzs.stack(), [-1, tf.shape(recurrent_t)[0]])
    outputs_before = tf.reshape(tf.concat([h0[None], outputs[:-1]], axis=0), [-1, tf.shape(h0)[-1]])
    d_recurrent = tf.matmul(outputs_before, dz, transpose_a=True)
    d_kernel = tf.matmul(tf.reshape(inputs, [-1, tf.shape(inputs)[-1]]), dz, transpose_a=True)
    d_inputs = tf.reshape(tf.matmul(dz, tf.transpose(kernel)), tf.shape(inputs))
    return d_inputs, dh0, dc0, d_kernel, d_recurrent, d_bias


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
    return _sequence(inputs, h0, c0, kernel, recurrent, *([] if bias is None else [bias]))


def _gradients(tensors: dict[str, tf.Tensor], upstream: tuple[Any, Any, Any]) -> tuple[tf.Tensor, ...]:
    """Every input's gradient, `(d_inputs, dh0, dc0, d_kernel, d_recurrent, d_bias)`.

    Args:
        tensors: `inputs`, `h0`, `c0`, `kernel`, `recurrent` and `_forward`'s `outputs` and `saved`.
        upstream: Gradients of every step's output, the last output and the last carry.

    Returns:
        `_stacked_backward`'s gradients.
    """
    # An output nobody used may arrive as None: it contributes nothing.
    upstream = tuple(tf.zeros_like(tensors[like]) if grad is None else grad
                     for grad, like in zip(upstream, ("outputs", "h0", "c0")))
    return _stacked_backward(tensors, upstream)


@tf.custom_gradient
def _sequence(inputs: tf.Tensor, h0: tf.Tensor, c0: tf.Tensor, kernel: tf.Tensor, recurrent: tf.Tensor,
              *bias: tf.Tensor) -> Any:
    """`lstm_sequence` as one op; `bias` holds the bias, or nothing for a layer without one."""
    h, c, outputs, saved = _forward(inputs, h0, c0, kernel, recurrent, bias[0] if bias else None)
    tensors = {"inputs": inputs, "h0": h0, "c0": c0, "kernel": kernel, "recurrent": recurrent, "outputs": outputs,
               "saved": saved}

    def grad(*upstream: Any) -> tuple[tf.Tensor, ...]:
        return _gradients(tensors, upstream)[:5 + len(bias)]

    return (outputs, h, c), grad
