"""`kexp.models.LSTM`: Keras' LSTM layer with a faster CPU training step, same weights, config and results.

Keras' LSTM on a CPU runs its cell once per step in a `tf.while_loop`, and
the backward pass multiplies each step's gate gradients by the transposed
recurrent kernel: `tf.matmul(dz, kernel, transpose_b=True)`. On this
project's CPUs (oneDNN, TensorFlow 2.21) that product ran 3-4x slower than
the same one on a kernel transposed beforehand ([32, 1024] x [1024, 256]:
1,241 us against 318 us a call), and it was most of an LSTM's training time.
This layer transposes the recurrent kernel (and the input kernel) once per
batch, outside the loop, and gives the step's products gradients that use
them. Without a mask, with the standard gates (tanh, sigmoid), in float32
or float64, and at a batch known to be at most `STACKED_MAX_BATCH` (kexp's
harness's fused steps under XLA know theirs; without XLA they hide it as
Keras' own steps do, and Keras' fit traces an unknown one),
the whole sequence runs as one op with a hand-written backward pass instead
(`kexp.models.lstm_sequence`). Everything
else is Keras' own: the loop (`keras.src.backend.rnn`, with masks,
`go_backwards`, `return_sequences`, statefulness), the weights
(`kernel`, `recurrent_kernel`, `bias`), `get_config`, and the forward
arithmetic op for op, so predictions are bit for bit Keras'; gradients are
the same sums, in the last bits rounded as another order of sums rounds them.

Under a mixed precision policy (float32 variables, bfloat16 or float16
math) the step loop multiplies in the half precision, on kernels cast
once per batch, and keeps the gates, the carry and the bias sum in float32,
as cuDNN's LSTM does under mixed_float16; outputs and states come back in
the compute dtype. Outputs then differ from Keras' (which rounds every gate
to bfloat16) within bfloat16's rounding. Gate math in bfloat16 was slower
here: a bare loop of LSTM(256) at batch 128 ran 1.25x faster with float32
gates (`docs/performance.md`).

Keras' own loop runs instead where this one cannot apply or would not help:
dropout or recurrent dropout while training, `implementation=1`,
`use_cudnn=True`, inputs of another dtype than the
layer computes in (Keras promotes them), and any machine with a visible GPU
(cuDNN's kernel).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

# The loop `keras.layers.RNN` itself runs (masks, go_backwards, ...); Keras exports no public name for it.
from keras.src import backend as keras_backend

from kexp.models.lstm_sequence import STACKED_MAX_BATCH, lstm_sequence

# Half precision runs the step loop: the op's running sums (the bias's) would stay in float16 or bfloat16 eagerly.
_SEQUENCE_DTYPES = ("float32", "float64")


@tf.custom_gradient
def _matmul(values: tf.Tensor, kernel: tf.Tensor, kernel_t: tf.Tensor) -> Any:
    """Returns `values @ kernel`; its gradient multiplies by `kernel_t` (= kernel transposed, made once)."""

    def grad(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, None]:
        # kernel_t is kernel's transpose: its share of the gradient is kernel's, counted once here.
        return tf.matmul(upstream, kernel_t), tf.matmul(values, upstream, transpose_a=True), None

    return tf.matmul(values, kernel), grad


@tf.custom_gradient
def _matmul_widened(values: tf.Tensor, kernel: tf.Tensor, kernel_t: tf.Tensor, weight: tf.Tensor) -> Any:
    """Returns `values @ kernel` (kernel = `weight` cast to the values' half precision); the gradient goes to `weight`.

    The kernel's share of the gradient is cast to `weight`'s float32 in every
    step, as Keras' own cast does: the loop then sums the steps' gradients in
    float32 (summed in bfloat16, a bias gradient stalled at 512 over 1,000 steps).
    """

    def grad(upstream: tf.Tensor) -> tuple[tf.Tensor, None, None, tf.Tensor]:
        weight_grad = tf.cast(tf.matmul(values, upstream, transpose_a=True), weight.dtype)
        return tf.matmul(upstream, kernel_t), None, None, weight_grad

    return tf.matmul(values, kernel), grad


@keras.saving.register_keras_serializable(package="kexp")
class LSTM(keras.layers.LSTM):
    """`keras.layers.LSTM` whose CPU training step multiplies by a recurrent kernel transposed once per batch.

    Takes and saves exactly `keras.layers.LSTM`'s arguments and weights (see
    the module docstring for what differs and where Keras' loop runs
    instead). Saved models name it `kexp>LSTM`: `import kexp.models` before
    `keras.models.load_model` (`kexp.load_model` does).

    Example: `keras.Sequential([keras.Input((80, 32)), kexp.models.LSTM(256), keras.layers.Dense(1)])`.
    """

    def inner_loop(self, sequences: Any, initial_state: Any, mask: Any, training: bool = False) -> Any:
        """Runs the recurrence over `sequences` (see `keras.layers.RNN.inner_loop`).

        Args:
            sequences: `[batch, time, features]` inputs.
            initial_state: `[h, c]`.
            mask: `[batch, time]` booleans, or None.
            training: Whether the call trains (dropout).

        Returns:
            Keras' `(last_output, outputs, states)`.
        """
        if not self._transposed_loop_applies(training, sequences.dtype):
            return super().inner_loop(sequences, initial_state, mask=mask, training=training)
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if mask is None and not self.unroll and self._standard_gates() and self.compute_dtype in _SEQUENCE_DTYPES:
            batch = sequences.shape[0]
            # Larger or unknown batches (Keras' own fit; the harness's fused steps without XLA) run the step loop.
            if batch is not None and batch <= STACKED_MAX_BATCH:
                return self._sequence_op(sequences, initial_state)
        return self._step_loop(sequences, initial_state, mask)

    def _step_loop(self, sequences: Any, initial_state: Any, mask: Any) -> Any:
        """Runs Keras' step loop with the kernels transposed once; Keras' `inner_loop` results."""
        cell = self.cell
        # Values, not variables: a stateful layer's state variables are assigned after the loop, and the
        # gradient must see the values the loop saw (a variable passed as a state stays differentiable).
        initial_state = [tf.cast(tf.convert_to_tensor(state), self.variable_dtype) for state in initial_state]
        input_product, recurrent_product, bias = self._step_products()

        def step(inputs: Any, states: Any) -> tuple[Any, list[Any]]:
            h_prev, c_prev = states
            # Keras' LSTMCell (implementation 2), op for op (under a mixed policy, in float32 past the products).
            z = input_product(inputs)
            z = ops.add(z, recurrent_product(h_prev))
            if bias is not None:
                z = ops.add(z, bias)
            z0, z1, z2, z3 = ops.split(z, 4, axis=1)
            i = cell.recurrent_activation(z0)
            f = cell.recurrent_activation(z1)
            c = f * c_prev + i * cell.activation(z2)
            o = cell.recurrent_activation(z3)
            h = o * cell.activation(c)
            return h, [h, c]

        last, outputs, states = keras_backend.rnn(
            step, sequences, initial_state, go_backwards=self.go_backwards, mask=mask, unroll=self.unroll,
            input_length=sequences.shape[1], zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences,
        )
        if self.compute_dtype == self.variable_dtype:
            return last, outputs, states
        return tf.cast(last, self.compute_dtype), tf.cast(outputs, self.compute_dtype), [
            tf.cast(state, self.compute_dtype) for state in states]

    def _step_products(self) -> tuple[Any, Any, Any]:
        """The step's input and recurrent products, on kernels read (and transposed) once, and the bias.

        Under a mixed policy the products multiply in the compute dtype on
        kernels cast once and give float32, so that the gates, the carry
        and the bias sum stay in float32 (see the module docstring and
        `_matmul_widened`).

        Returns:
            `(input_product, recurrent_product, bias)`: functions of one
            tensor, and the bias tensor (None for a layer without one).
        """
        cell = self.cell
        with keras_backend.AutocastScope(None):  # the variables' own values: Keras' autocast would cast them
            kernel, recurrent = tf.convert_to_tensor(cell.kernel), tf.convert_to_tensor(cell.recurrent_kernel)
            bias = tf.convert_to_tensor(cell.bias) if cell.use_bias else None
        if self.compute_dtype == self.variable_dtype:
            kernel_t, recurrent_t = tf.transpose(kernel), tf.transpose(recurrent)
            return (lambda values: _matmul(values, kernel, kernel_t),
                    lambda values: _matmul(values, recurrent, recurrent_t), bias)
        half = self.compute_dtype
        kernel_h, recurrent_h = tf.cast(kernel, half), tf.cast(recurrent, half)
        kernel_t, recurrent_t = tf.transpose(kernel_h), tf.transpose(recurrent_h)
        return (lambda values: tf.cast(_matmul_widened(values, kernel_h, kernel_t, kernel), kernel.dtype),
                lambda values: tf.cast(_matmul_widened(tf.cast(values, half), recurrent_h, recurrent_t, recurrent),
                                       recurrent.dtype), bias)

    def _standard_gates(self) -> bool:
        """Whether the cell has the gates `lstm_sequence` differentiates by hand (tanh, sigmoid)."""
        return (self.cell.activation is keras.activations.tanh
                and self.cell.recurrent_activation is keras.activations.sigmoid)

    def _sequence_op(self, sequences: Any, initial_state: Any) -> Any:
        """Runs the whole sequence as `lstm_sequence` (no mask, standard gates); Keras' `inner_loop` results."""
        cell = self.cell
        h0, c0 = (tf.convert_to_tensor(state) for state in initial_state)
        time_major = tf.transpose(sequences, [1, 0, 2])
        if self.go_backwards:
            time_major = tf.reverse(time_major, [0])  # Keras' loop returns the outputs in the order it ran
        bias = tf.convert_to_tensor(cell.bias) if cell.use_bias else None
        outputs, h, c = lstm_sequence(time_major, h0, c0, tf.convert_to_tensor(cell.kernel),
                                      tf.convert_to_tensor(cell.recurrent_kernel), bias)
        if self.return_sequences:
            outputs = tf.transpose(outputs, [1, 0, 2])
            # The op's arrays are sized at run time: give back the static shape Keras' loop keeps (an unrolled
            # layer or a Flatten after this one needs the number of steps).
            outputs.set_shape([sequences.shape[0], sequences.shape[1], self.units])
        else:
            outputs = h[:, None, :]
        return h, outputs, (h, c)

    def _transposed_loop_applies(self, training: bool, sequences_dtype: Any = None) -> bool:
        """Whether this layer's loop runs (else Keras' own does; see the module docstring).

        Args:
            training: Whether the call trains (dropout).
            sequences_dtype: The inputs' dtype; None: the compute dtype.

        Returns:
            True where the loop computes what Keras' does: inputs in the
            compute dtype, variables in it or (a mixed policy) in float32,
            no dropout, no cuDNN.
        """
        dropping = bool(training) and (self.dropout > 0 or self.recurrent_dropout > 0)
        if dropping or self.cell.implementation != 2 or self.use_cudnn is True:
            return False
        if self.compute_dtype != self.variable_dtype and self.variable_dtype != "float32":
            return False
        if sequences_dtype is not None and keras.backend.standardize_dtype(sequences_dtype) != self.compute_dtype:
            return False  # integer or other inputs: Keras' matmul promotes them
        return self.use_cudnn is False or not tf.config.list_physical_devices("GPU")
