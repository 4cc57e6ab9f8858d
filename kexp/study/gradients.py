"""Gradient norms along training: the vanishing and exploding gradients story (tutorials 001/004).

`GradientNormRecorder` measures, on a fixed probe batch, the global norm of
the loss gradient with respect to the weights after every compiled call of
`fit`, and at the end the norm of the gradient with respect to each input
time step: how much the loss still feels step t. A SimpleRNN's falls off
exponentially towards early steps; an LSTM's or GRU's does not.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf


def _mse_gradients(model: keras.Model) -> Any:
    @tf.function
    def gradients(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_mean(tf.square(tf.cast(model(x, training=False), tf.float32) - y))
        weight_grads, input_grads = tape.gradient(loss, [model.trainable_variables, x])
        # Norm over features, mean over the batch: one value per time step.
        return tf.linalg.global_norm(weight_grads), tf.reduce_mean(tf.norm(input_grads, axis=-1), axis=0)

    return gradients


class GradientNormRecorder(keras.callbacks.Callback):
    """Records gradient norms of an MSE regression model on a fixed probe batch.

    Args:
        x: Probe inputs, `(batch, time, features)`.
        y: Probe targets.

    Attributes:
        steps: Optimizer steps at each measurement.
        weight_norms: Global norm of d(loss)/d(weights) at each measurement.
        input_norms: After training, |d(loss)/d(x_t)| for each time step t.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        super().__init__()
        self._x = tf.constant(x)
        self._y = tf.constant(y, dtype=tf.float32)
        self._gradients: Any = None
        self.steps: list[int] = []
        self.weight_norms: list[float] = []
        self.input_norms: np.ndarray | None = None

    def _measure(self) -> tuple[float, np.ndarray]:
        if self._gradients is None:
            self._gradients = _mse_gradients(self.model)
        # In a replica's context: under MirroredStrategy the weights are mirrored variables, which a
        # gradient outside one cannot read. Every replica measures the same batch; the first answers.
        strategy = tf.distribute.get_strategy()
        weight_norm, input_norms = (strategy.experimental_local_results(value)[0]
                                    for value in strategy.run(self._gradients, args=(self._x, self._y)))
        return float(weight_norm), np.asarray(input_norms)

    def on_train_begin(self, logs: Any = None) -> None:
        self._record()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        # Called once per compiled call (steps_per_execution batches).
        self._record()

    def on_train_end(self, logs: Any = None) -> None:
        self.input_norms = self._measure()[1]

    def _record(self) -> None:
        weight_norm, _ = self._measure()
        self.steps.append(int(self.model.optimizer.iterations.numpy()))
        self.weight_norms.append(weight_norm)
