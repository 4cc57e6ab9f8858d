"""Model builders other Keras projects can import.

Every builder is a plain function: shapes and hyperparameters in, a named
`keras.Model` out. Plain stacks accept `sequential=True` for a
`keras.Sequential`; branching nets (GoogLeNet, ResNet) are functional.
Names (`name=`: a model's, a block's or a `*_layers` stack's prefix) are
unique in the process by default, so builders combine in one model.

    from kexp.models import lenet5, rnn, GAN, dcgan_generator, dcgan_discriminator
    model = lenet5((32, 32, 3), 10)           # 62,006 parameters
"""

from kexp.engine.quiet import import_tensorflow_quietly

import_tensorflow_quietly(library=True)  # before keras: TensorFlow's C++ start-up lines muted

from kexp.models.cnn import alexnet, googlenet, inception_block, lenet5, nin, resnet, residual_block, vgg
from kexp.models.gan import (
    GAN,
    dcgan_discriminator,
    dcgan_generator,
    discriminator_probability,
    gan_1d_discriminator,
    gan_1d_generator,
)
from kexp.models.lstm import LSTM
from kexp.models.mlp import mlp, mlp_layers
from kexp.models.rnn import rnn, rnn_layers

__all__ = [
    "GAN", "LSTM", "alexnet", "dcgan_discriminator", "dcgan_generator",
    "discriminator_probability", "gan_1d_discriminator", "gan_1d_generator", "googlenet",
    "inception_block", "lenet5", "mlp", "mlp_layers", "nin", "resnet", "residual_block",
    "rnn", "rnn_layers", "vgg",
]
