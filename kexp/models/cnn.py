"""Convolutional networks of tutorials 001/004: LeNet-5, AlexNet, VGG, NiN, GoogLeNet, ResNet.

Plain stacks (LeNet-5, AlexNet, VGG, NiN) come Sequential or functional
(`sequential=`); branching nets (GoogLeNet's Inception blocks, ResNet's
residual blocks) are functional. All are scaled for small images (8x8 to
32x32) and return logits.
"""

from __future__ import annotations

from typing import Sequence

import keras

from kexp.data.image_sizes import LENET5_MIN_SIZE
from kexp.models.common import assemble, check_choice, check_pairs, check_range, check_sizes, unique_name

Shape = Sequence[int]


def _image_shape(arg_value: Shape, min_size: int, model: str, why: str) -> tuple[int, int, int]:
    shape = tuple(arg_value)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels); received: input_shape={shape}")
    if min(shape[0], shape[1]) < min_size:
        raise ValueError(
            f"input_shape too small for {model}: height and width must be >= {min_size} ({why}); "
            f"received: input_shape={shape}"
        )
    return shape  # type: ignore[return-value]


def lenet5(
    input_shape: Shape = (32, 32, 1),
    num_classes: int = 10,
    *,
    variant: str = "classic",
    sequential: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Builds LeNet-5: conv 5x5x6 -> pool -> conv 5x5x16 -> pool -> FC 120 -> 84 -> classes.

    Example: `lenet5((32, 32, 3))`: the first conv outputs 28x28x6 with
    (5*5*3+1)*6 = 456 parameters, the first pool 14x14x6 with none (tutorial 001).

    Args:
        input_shape: `(height, width, channels)`, height and width >= 16.
        num_classes: Logits out.
        variant: `classic` (sigmoid, average pooling, as in 1998) or `modern`
            (ReLU, max pooling).
        sequential: Return a `keras.Sequential` instead of a functional model.
        name: Model name; None gives `lenet5`, `lenet5_1`, ..., unique in the process.

    Returns:
        A `keras.Model`.
    """
    check_choice("variant", variant, ("classic", "modern"))
    check_range("num_classes", num_classes, low=1)
    _image_shape(input_shape, LENET5_MIN_SIZE, "LeNet-5", "two 5x5 valid convolutions and two 2x2 pools")
    act = "sigmoid" if variant == "classic" else "relu"
    pool = keras.layers.AveragePooling2D if variant == "classic" else keras.layers.MaxPooling2D
    layers = [
        keras.layers.Conv2D(6, 5, activation=act, name="conv1"),
        pool(2, name="pool1"),
        keras.layers.Conv2D(16, 5, activation=act, name="conv2"),
        pool(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(120, activation=act, name="fc1"),
        keras.layers.Dense(84, activation=act, name="fc2"),
        keras.layers.Dense(num_classes, name="logits"),
    ]
    return assemble(layers, input_shape, name=unique_name(name, "lenet5"), sequential=sequential)


def alexnet(
    input_shape: Shape = (32, 32, 3),
    num_classes: int = 10,
    *,
    filters: Sequence[int] = (32, 64, 96, 96, 64),
    dense: Sequence[int] = (256, 256),
    dropout: float = 0.5,
    sequential: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Builds an AlexNet-style net scaled to small images: 5 conv + 3 FC layers.

    Layout as in the original (conv, pool, conv, pool, conv, conv, conv, pool,
    FC, FC, FC with dropout), with 3x3 "same" convolutions and 2x2 pools in
    place of the 11x11/stride-4 stem that only suits 224x224 inputs.

    Example: `alexnet((32, 32, 3), 10)` has 543,946 parameters.

    Args:
        input_shape: `(height, width, channels)`, height and width >= 8.
        num_classes: Logits out.
        filters: Filters of the five conv layers.
        dense: Units of the two hidden FC layers.
        dropout: Dropout rate before each hidden FC layer's successor.
        sequential: Return a `keras.Sequential` instead of a functional model.
        name: Model name; None gives `alexnet`, `alexnet_1`, ..., unique in the process.

    Returns:
        A `keras.Model`.
    """
    check_sizes("filters", filters)
    check_sizes("dense", dense)
    if len(filters) != 5 or len(dense) != 2:
        raise ValueError(f"alexnet has 5 conv and 2 hidden FC layers; received: filters={list(filters)}, dense={list(dense)}")
    check_range("dropout", dropout, low=0.0, high=1.0, high_open=True)
    _image_shape(input_shape, 8, "AlexNet", "three 2x2 pools")
    conv = [keras.layers.Conv2D(int(f), 3, padding="same", activation="relu", name=f"conv{i + 1}")
            for i, f in enumerate(filters)]
    layers = [
        conv[0], keras.layers.MaxPooling2D(2, name="pool1"),
        conv[1], keras.layers.MaxPooling2D(2, name="pool2"),
        conv[2], conv[3], conv[4], keras.layers.MaxPooling2D(2, name="pool3"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(int(dense[0]), activation="relu", name="fc1"),
        keras.layers.Dropout(dropout, name="dropout1"),
        keras.layers.Dense(int(dense[1]), activation="relu", name="fc2"),
        keras.layers.Dropout(dropout, name="dropout2"),
        keras.layers.Dense(num_classes, name="logits"),
    ]
    return assemble(layers, input_shape, name=unique_name(name, "alexnet"), sequential=sequential)


def vgg(
    input_shape: Shape = (32, 32, 3),
    num_classes: int = 10,
    *,
    blocks: Sequence[tuple[int, int]] = ((1, 32), (1, 64), (2, 128)),
    dense: Sequence[int] = (256,),
    dropout: float = 0.5,
    batch_norm: bool = False,
    bn_momentum: float = 0.99,
    sequential: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Builds a VGG net: blocks of 3x3 convolutions, each block ending in a 2x2 max pool.

    Example: `vgg((32, 32, 3), 10, batch_norm=True)` adds BatchNorm after every conv.

    Args:
        input_shape: `(height, width, channels)`; height and width >= 2**len(blocks).
        num_classes: Logits out.
        blocks: `(num_convs, filters)` per block (VGG-11 is
            ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))).
        dense: Units of the hidden FC layers.
        dropout: Dropout after each hidden FC layer.
        batch_norm: BatchNorm after each conv (not in the 2014 original).
        bn_momentum: Momentum of BatchNorm's moving statistics (Keras' 0.99
            by default; 0.9, PyTorch's 0.1, lets them catch up within the
            first epoch of a small data set).
        sequential: Return a `keras.Sequential` instead of a functional model.
        name: Model name; None gives `vgg`, `vgg_1`, ..., unique in the process.

    Returns:
        A `keras.Model`.
    """
    check_pairs("blocks", blocks, "(num_convs, filters)")
    check_range("bn_momentum", bn_momentum, low=0.0, high=1.0, high_open=True)
    check_sizes("dense", dense, allow_empty=True)
    _image_shape(input_shape, 2 ** len(blocks), "VGG", f"{len(blocks)} 2x2 pools")
    layers: list[keras.layers.Layer] = []
    for b, (num_convs, filters) in enumerate(blocks):
        for c in range(num_convs):
            layers.append(keras.layers.Conv2D(
                int(filters), 3, padding="same", use_bias=not batch_norm,
                activation=None if batch_norm else "relu", name=f"block{b + 1}_conv{c + 1}"))
            if batch_norm:
                layers += [keras.layers.BatchNormalization(momentum=bn_momentum, name=f"block{b + 1}_bn{c + 1}"),
                           keras.layers.ReLU(name=f"block{b + 1}_relu{c + 1}")]
        layers.append(keras.layers.MaxPooling2D(2, name=f"block{b + 1}_pool"))
    layers.append(keras.layers.Flatten(name="flatten"))
    for i, units in enumerate(dense):
        layers += [keras.layers.Dense(int(units), activation="relu", name=f"fc{i + 1}"),
                   keras.layers.Dropout(dropout, name=f"dropout{i + 1}")]
    layers.append(keras.layers.Dense(num_classes, name="logits"))
    return assemble(layers, input_shape, name=unique_name(name, "vgg"), sequential=sequential)


def nin(
    input_shape: Shape = (32, 32, 3),
    num_classes: int = 10,
    *,
    blocks: Sequence[tuple[int, int]] = ((32, 5), (64, 3), (96, 3)),
    dropout: float = 0.5,
    sequential: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Builds Network in Network: conv + two 1x1 convs per block, global average pooling head.

    Each `(filters, kernel)` block is followed by a 2x2 max pool; a last NiN
    block maps to `num_classes` channels that global average pooling turns
    into logits (no dense layer, as in Lin et al. 2013).

    Example: `nin((32, 32, 3), 10)` has 114,246 parameters and no Dense layer.

    Args:
        input_shape: `(height, width, channels)`; height and width >= 2**len(blocks).
        num_classes: Logits out.
        blocks: `(filters, kernel_size)` of each NiN block before the head.
        dropout: Dropout before the head block.
        sequential: Return a `keras.Sequential` instead of a functional model.
        name: Model name; None gives `nin`, `nin_1`, ..., unique in the process.

    Returns:
        A `keras.Model`.
    """
    check_pairs("blocks", blocks, "(filters, kernel)")
    _image_shape(input_shape, 2 ** len(blocks), "NiN", f"{len(blocks)} 2x2 pools")

    def nin_block(filters: int, kernel: int, tag: str) -> list[keras.layers.Layer]:
        return [
            keras.layers.Conv2D(filters, kernel, padding="same", activation="relu", name=f"{tag}_conv"),
            keras.layers.Conv2D(filters, 1, activation="relu", name=f"{tag}_mlp1"),
            keras.layers.Conv2D(filters, 1, activation="relu", name=f"{tag}_mlp2"),
        ]

    layers: list[keras.layers.Layer] = []
    for b, (filters, kernel) in enumerate(blocks):
        layers += nin_block(int(filters), int(kernel), f"nin{b + 1}")
        layers.append(keras.layers.MaxPooling2D(2, name=f"pool{b + 1}"))
    layers.append(keras.layers.Dropout(dropout, name="dropout"))
    head = nin_block(num_classes, 3, "head")
    # Logits: the last 1x1 conv of the head block is linear.
    head[-1] = keras.layers.Conv2D(num_classes, 1, name="head_mlp2")
    layers += head + [keras.layers.GlobalAveragePooling2D(name="gap")]
    return assemble(layers, input_shape, name=unique_name(name, "nin"), sequential=sequential)


def inception_block(
    x: keras.KerasTensor, c1: int, c3: tuple[int, int], c5: tuple[int, int], pool_proj: int,
    name: str | None = None,
) -> keras.KerasTensor:
    """Applies a GoogLeNet Inception block: four parallel branches, concatenated.

    Example: `y = inception_block(x, 16, (24, 32), (4, 8), 8, "inc")` gives 64 channels.

    Args:
        x: Input tensor.
        c1: Filters of the 1x1 branch.
        c3: `(reduce, filters)` of the 1x1 -> 3x3 branch.
        c5: `(reduce, filters)` of the 1x1 -> 5x5 branch.
        pool_proj: Filters of the 3x3 max pool -> 1x1 branch.
        name: Prefix of the block's layer names (`{name}_1x1`, ...); None gives
            `inception_block`, `inception_block_1`, ..., unique in the process.

    Returns:
        Output with `c1 + c3[1] + c5[1] + pool_proj` channels.
    """
    name = unique_name(name, "inception_block")

    def conv(t, filters, kernel, tag):
        return keras.layers.Conv2D(filters, kernel, padding="same", activation="relu", name=f"{name}_{tag}")(t)

    b1 = conv(x, c1, 1, "1x1")
    b2 = conv(conv(x, c3[0], 1, "3x3_reduce"), c3[1], 3, "3x3")
    b3 = conv(conv(x, c5[0], 1, "5x5_reduce"), c5[1], 5, "5x5")
    b4 = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    b4 = conv(b4, pool_proj, 1, "pool_proj")
    return keras.layers.Concatenate(name=f"{name}_concat")([b1, b2, b3, b4])


def googlenet(
    input_shape: Shape = (32, 32, 3),
    num_classes: int = 10,
    *,
    stem_filters: int = 32,
    dropout: float = 0.4,
    name: str | None = None,
) -> keras.Model:
    """Builds a small GoogLeNet: a conv stem, three Inception blocks, global average pooling.

    stem conv 3x3 -> pool -> inception(3a) -> inception(3b) -> pool ->
    inception(4a) -> global average pool -> dropout -> logits. Block widths
    are those of GoogLeNet's 3a/3b/4a divided by four.

    Example: `googlenet((32, 32, 3), 10).get_layer("inception3a_concat")` reaches a block's output.

    Args:
        input_shape: `(height, width, channels)`, height and width >= 4.
        num_classes: Logits out.
        stem_filters: Filters of the stem convolution.
        dropout: Dropout before the classifier.
        name: Model name; None gives `googlenet`, `googlenet_1`, ..., unique in the process.

    Returns:
        A functional `keras.Model`.
    """
    check_range("stem_filters", stem_filters, low=1)
    shape = _image_shape(input_shape, 4, "GoogLeNet", "two 2x2 pools")
    inputs = keras.Input(shape, name="inputs")
    x = keras.layers.Conv2D(stem_filters, 3, padding="same", activation="relu", name="stem_conv")(inputs)
    x = keras.layers.MaxPooling2D(2, name="stem_pool")(x)
    x = inception_block(x, 16, (24, 32), (4, 8), 8, "inception3a")
    x = inception_block(x, 32, (32, 48), (8, 24), 16, "inception3b")
    x = keras.layers.MaxPooling2D(2, name="pool3")(x)
    x = inception_block(x, 48, (24, 52), (4, 12), 16, "inception4a")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=unique_name(name, "googlenet"))


def residual_block(x: keras.KerasTensor, filters: int, stride: int, name: str | None = None,
                   bn_momentum: float = 0.99) -> keras.KerasTensor:
    """Applies a ResNet basic block: conv-BN-ReLU-conv-BN plus shortcut, then ReLU.

    The shortcut is the identity, or a strided 1x1 conv + BN when the shape changes.

    Example: `y = residual_block(x, 32, 2, "down")` halves the resolution.

    Args:
        x: Input tensor.
        filters: Output channels.
        stride: 1, or 2 to halve height and width.
        name: Prefix of the block's layer names (`{name}_conv1`, ...); None gives
            `residual_block`, `residual_block_1`, ..., unique in the process.
        bn_momentum: Momentum of BatchNorm's moving statistics.

    Returns:
        The block's output tensor.
    """
    check_range("bn_momentum", bn_momentum, low=0.0, high=1.0, high_open=True)
    name = unique_name(name, "residual_block")
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn2")(y)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_proj_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet(
    input_shape: Shape = (32, 32, 3),
    num_classes: int = 10,
    *,
    stages: Sequence[tuple[int, int]] = ((16, 1), (32, 1), (64, 1)),
    bn_momentum: float = 0.99,
    name: str | None = None,
) -> keras.Model:
    """Builds a CIFAR-style ResNet: conv stem, stages of residual blocks, global average pool.

    Each stage after the first halves the resolution in its first block.
    `stages=((16, 3), (32, 3), (64, 3))` is ResNet-20 (He et al. 2016).

    Example: `resnet((32, 32, 3), 10, stages=((16, 3), (32, 3), (64, 3)))` builds ResNet-20.

    Args:
        input_shape: `(height, width, channels)`; height and width >= 2**(len(stages) - 1).
        num_classes: Logits out.
        stages: `(filters, num_blocks)` per stage.
        bn_momentum: Momentum of BatchNorm's moving statistics (see `vgg`).
        name: Model name; None gives `resnet`, `resnet_1`, ..., unique in the process.

    Returns:
        A functional `keras.Model`.
    """
    check_pairs("stages", stages, "(filters, num_blocks)")
    check_range("bn_momentum", bn_momentum, low=0.0, high=1.0, high_open=True)
    shape = _image_shape(input_shape, 2 ** (len(stages) - 1), "ResNet", f"{len(stages) - 1} stride-2 stages")
    inputs = keras.Input(shape, name="inputs")
    x = keras.layers.Conv2D(int(stages[0][0]), 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for s, (filters, num_blocks) in enumerate(stages):
        for b in range(int(num_blocks)):
            stride = 2 if (s > 0 and b == 0) else 1
            x = residual_block(x, int(filters), stride, f"stage{s + 1}_block{b + 1}", bn_momentum)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=unique_name(name, "resnet"))
