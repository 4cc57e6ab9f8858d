"""Internal: the machine's limit in FLOPs: a model's training FLOPs per example and a large matmul's rate.

`kexp bench` divides a case's examples/s by the rate this CPU (or GPU) does
float32 matrix products at, to say how far from the machine's limit a model
trains. Only the multiply-adds of matrix products and convolutions are
counted (2 FLOPs each): Dense, Conv1D/2D/3D, Conv2DTranspose/Conv3DTranspose
(also inside TimeDistributed and Bidirectional) and the input and recurrent
kernels of SimpleRNN, GRU and LSTM. Bias adds, activations, normalization,
pooling and optimizer updates are left out: on the models here they are a
few percent of the count, and they are what runs below the matmul rate.
Each layer is counted once, at the shapes of its place in the model: a
layer or sub-model shared by two branches counts once, and attention,
EinsumDense and ConvLSTM layers are not counted (0); the count is for the
bench's and similar plain models, a floor for others.

A training step costs about three forward passes: the forward pass, the
gradient with respect to each layer's input and with respect to its
weights. A `kexp.models.GAN` step is counted as it runs (see
`training_flops`).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any


def forward_flops(model: Any) -> int:
    """Returns the FLOPs of one example's forward pass: 2 per multiply-add of matmuls and convolutions.

    Args:
        model: A built `keras.Model` whose layers know their input and output
            shapes (functional or Sequential models; nested models are counted).

    Returns:
        FLOPs per example (0 for a model with no such layers).

    Raises:
        ValueError: For a model that is not built, or whose layers' shapes are
            not fully known (other than the batch), e.g. a sequence model
            built for any length or a subclassed model.
    """
    if not model.built:
        raise ValueError(f"forward_flops: model {model.name!r} is not built; allowed: a built model "
                         "(functional or Sequential, starting from keras.Input)")
    return sum(_layer_flops(layer) for layer in _leaf_layers(model))


def training_flops(model: Any) -> int:
    """Returns the FLOPs of training on one example.

    Three forward passes for a plain model (forward, input gradients, weight
    gradients). For a `kexp.models.GAN` with forward costs G and D and `k`
    discriminator steps: each D step runs G forward once and D forward, input
    and weight gradients on a real and a fake example (G + 6D); the G step
    runs G and D forward, D's input gradients and G's two gradients (3G + 2D):
    k(G + 6D) + 3G + 2D. With `reuse_fake_batch` the G step scores the last D
    step's generated batch: one G forward fewer, k(G + 6D) + 2G + 2D.

    Args:
        model: A built model, or a `kexp.models.GAN`.

    Returns:
        FLOPs per training example.
    """
    if hasattr(model, "generator") and hasattr(model, "discriminator") and hasattr(model, "d_steps"):
        g, d = forward_flops(model.generator), forward_flops(model.discriminator)
        reused = bool(getattr(model, "reuse_fake_batch", False))
        return int(model.d_steps) * (g + 6 * d) + (2 if reused else 3) * g + 2 * d
    return 3 * forward_flops(model)


def matmul_gflops(size: int = 2048, repeats: int = 5, device: str | None = None) -> float:
    """Returns the float32 matmul rate of this process's device in GFLOP/s: the best of `repeats` timings.

    The best, not the median: the question is what the machine can do, and a
    shared virtual machine's slow spells only ever lower a timing.

    Args:
        size: Side of the square matrices (2·size³ FLOPs a product).
        repeats: Timed products, after one untimed warm-up.
        device: A TensorFlow device name, e.g. `/GPU:0`; None for the default.

    Returns:
        GFLOP/s.
    """
    import tensorflow as tf

    with tf.device(device) if device else contextlib.nullcontext():
        a = tf.random.stateless_normal((size, size), seed=(1, 2))
        b = tf.random.stateless_normal((size, size), seed=(3, 4))

        @tf.function
        def product(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            # Summed to a scalar: reading one number back waits for the product.
            return tf.reduce_sum(tf.matmul(x, y))

        float(product(a, b))
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            float(product(a, b))
            seconds.append(time.perf_counter() - start)
    # The reduction adds size² FLOPs to 2·size³: under 0.1% at 2048.
    return 2 * size**3 / min(seconds) / 1e9 if seconds else math.nan


def _leaf_layers(model: Any) -> list[Any]:
    """Returns the layers of `model` with nested models flattened (wrappers kept whole)."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _leaf_layers(layer)
        else:
            found.append(layer)
    return found


def _shape(layer: Any, which: str) -> Any:
    """Returns a layer's input or output shape in the model it was built in."""
    try:
        return getattr(layer, which).shape
    except (AttributeError, ValueError) as err:
        # Subclassed models' layers have no symbolic input; a layer called
        # twice has two (kexp counts each layer once).
        raise ValueError(f"forward_flops: layer {layer.name!r} has no single known {which} shape ({err}); "
                         "allowed: layers of functional or Sequential models, each called once") from None


def _known(shape: Any, layer: Any) -> tuple[int, ...]:
    dims = tuple(shape)[1:]
    if any(d is None for d in dims):
        raise ValueError(f"forward_flops: layer {layer.name!r} has shape {tuple(shape)}; allowed: a model built "
                         "for one input shape (every dimension but the batch known)")
    return tuple(int(d) for d in dims)


def _layer_flops(layer: Any, input_shape: Any = None, output_shape: Any = None) -> int:
    """Returns one layer's forward FLOPs per example from its kernel and its input/output shapes."""
    import keras

    name = type(layer).__name__

    def shape_in() -> tuple[int, ...]:
        return _known(input_shape if input_shape is not None else _shape(layer, "input"), layer)

    def shape_out() -> tuple[int, ...]:
        return _known(output_shape if output_shape is not None else _shape(layer, "output"), layer)

    if not layer.weights:
        return 0
    if isinstance(layer, keras.layers.TimeDistributed):
        in_shape, out_shape = shape_in(), shape_out()
        return in_shape[0] * _layer_flops(layer.layer, (None, *in_shape[1:]), (None, *out_shape[1:]))
    if isinstance(layer, keras.layers.Bidirectional):
        return 2 * _recurrent_flops(layer.forward_layer, shape_in())
    if isinstance(layer, keras.layers.RNN):
        return _recurrent_flops(layer, shape_in())
    if isinstance(layer, keras.layers.Dense):
        # A Dense on [..., features] runs once per position of the leading dimensions.
        return 2 * math.prod(layer.kernel.shape) * math.prod(shape_out()[:-1])
    if name.startswith("Conv") and name.endswith("Transpose"):
        # Every input position scatters through the whole kernel.
        return 2 * math.prod(layer.kernel.shape) * math.prod(shape_in()[:-1])
    if name.startswith(("Conv", "DepthwiseConv", "SeparableConv")):
        kernels = sum(math.prod(w.shape) for w in layer.weights if "kernel" in w.path)
        return 2 * kernels * math.prod(shape_out()[:-1])
    return 0


def _recurrent_flops(layer: Any, in_shape: tuple[int, ...]) -> int:
    """Returns a recurrent layer's forward FLOPs: input and recurrent kernels at every step."""
    cell = layer.cell
    kernels = sum(math.prod(w.shape) for w in cell.weights if "kernel" in w.path)
    return 2 * kernels * in_shape[0]
