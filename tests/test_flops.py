"""Training FLOPs per example (`kexp.cli.flops`): exact counts of small models, and the matmul rate."""

from __future__ import annotations

import pytest


def test_dense_and_conv_layers_count_two_flops_per_multiply_add():
    import keras

    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same"),          # 8x8 outputs x 3x3x3x4
        keras.layers.MaxPooling2D(),                         # not counted
        keras.layers.Conv2DTranspose(2, 2, strides=2),       # 4x4 inputs x 2x2x4x2
        keras.layers.Flatten(),
        keras.layers.Dense(5),                               # 128 x 5
    ])
    from kexp.cli.flops import forward_flops, training_flops

    forward = 2 * (64 * 108 + 16 * 32 + 128 * 5)
    assert forward_flops(model) == forward
    assert training_flops(model) == 3 * forward


def test_recurrent_layers_count_their_kernels_at_every_step_and_nested_models_count():
    import keras

    from kexp.cli.flops import forward_flops
    from kexp.models import rnn

    inner = rnn((10, 3), 2, cell="gru", units=(4,), bidirectional=True)
    outer = keras.Sequential([keras.Input((10, 3)), inner])
    gru = 3 * 4 * (3 + 4)   # three gates' input and recurrent kernels
    expected = 2 * 10 * 2 * gru + 2 * 10 * 8 * 2   # both directions at 10 steps; the Dense head at each step
    assert forward_flops(inner) == forward_flops(outer) == expected


def test_a_gan_counts_k_discriminator_steps_and_one_generator_step():
    from kexp.cli.flops import forward_flops, training_flops
    from kexp.models import GAN, gan_1d_discriminator, gan_1d_generator

    g, d = gan_1d_generator(4, 1, hidden=(8,)), gan_1d_discriminator(1, hidden=(16,))
    assert forward_flops(g) == 2 * (4 * 8 + 8 * 1) and forward_flops(d) == 2 * (1 * 16 + 16 * 1)
    assert training_flops(GAN(g, d, d_steps=3)) == 3 * (80 + 6 * 64) + 3 * 80 + 2 * 64
    assert training_flops(GAN(g, d, d_steps=3, reuse_fake_batch=True)) == 3 * (80 + 6 * 64) + 2 * 80 + 2 * 64


def test_a_model_of_unknown_sequence_length_is_refused_with_its_shape():
    from kexp.cli.flops import forward_flops
    from kexp.models import rnn

    with pytest.raises(ValueError, match=r"layer 'lstm_0' has shape \(None, None, 3\)"):
        forward_flops(rnn((None, 3), 1, cell="lstm", units=(4,)))


def test_an_unbuilt_or_subclassed_model_is_refused_with_a_reason():
    import keras

    from kexp.cli.flops import forward_flops

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3, name="head")

        def call(self, x):
            return self.dense(x)

    subclassed = Subclassed()
    subclassed(keras.ops.ones((1, 4)))
    with pytest.raises(ValueError, match="layer 'head' has no single known output shape"):
        forward_flops(subclassed)
    with pytest.raises(ValueError, match="model 'unbuilt' is not built"):
        forward_flops(keras.Sequential([keras.layers.Dense(2)], name="unbuilt"))


def test_matmul_rate_is_a_positive_rate():
    from kexp.cli.flops import matmul_gflops

    assert 0.1 < matmul_gflops(size=256, repeats=2) < 1e6


@pytest.mark.parametrize("name, line, kind", [
    ("gradient_tape/dcgan/up2/conv_transpose/Conv2DBackpropInput:_MklNativeConv2DBackpropInput", "tf_Compute/1",
     ("_MklNativeConv2DBackpropInput", "gradient_tape/dcgan/up2/conv_transpose/Conv2DBackpropInput")),
    ("EagerLocalExecute: WriteSummary", "python", ("WriteSummary (eager)", "WriteSummary")),
    ("EagerLocalExecute: __inference_train_function_667", "python", None),   # the whole compiled call
    ("ExecutorState::Process", "tf_Compute/1", None),
    ("MatMul.24", "tf_numa_-1_Eigen/-91", ("MatMul (XLA)", "MatMul.24")),
    ("divide_subtract_fusion", "tf_numa_-1_Eigen/-91", ("divide_subtract_fusion (XLA)", "divide_subtract_fusion")),
    ("ParallelFor", "tf_numa_-1_Eigen/-91", None),                           # an intra-op task, not an op
    ("PrefetchProduce", "tf_data_iterator_resource/1", None),
])
def test_profiler_events_are_told_apart_from_ops(name, line, kind):
    from kexp.cli.profiling import _op_kind

    assert _op_kind(name, line) == kind
