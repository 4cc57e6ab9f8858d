"""Model builders: shapes, exact parameter counts, save/load, mirrored training, errors."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

import kexp.models as km
from kexp.engine.strategy import make_strategy


# Parameter counts by hand: weights + biases of each layer.
def conv(k: int, cin: int, cout: int, bias: bool = True) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def dense(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def bn(c: int) -> int:
    return 4 * c  # gamma, beta, moving mean, moving variance


def lstm(i: int, u: int) -> int:
    return 4 * (u * (i + u) + u)


def gru(i: int, u: int) -> int:
    return 3 * (u * (i + u) + 2 * u)  # Keras' reset_after=True has two bias vectors


def inception(cin, c1, c3, c5, pp):
    return conv(1, cin, c1) + conv(1, cin, c3[0]) + conv(3, c3[0], c3[1]) + conv(1, cin, c5[0]) + conv(5, c5[0], c5[1]) + conv(1, cin, pp)


def res_block(cin, cout):
    proj = conv(1, cin, cout, False) + bn(cout) if cin != cout else 0
    return conv(3, cin, cout, False) + bn(cout) + conv(3, cout, cout, False) + bn(cout) + proj


CASES = {
    "mlp_fnn": (lambda s: km.mlp((784,), 10, hidden=(500,), sequential=s), (784,), (10,),
                dense(784, 500) + dense(500, 10)),
    "mlp_bn_dropout": (lambda s: km.mlp((2,), 1, hidden=(16, 8), batch_norm=True, dropout=0.2, l2=1e-4, sequential=s),
                       (2,), (1,), dense(2, 16, False) + bn(16) + dense(16, 8, False) + bn(8) + dense(8, 1)),
    "lenet5": (lambda s: km.lenet5((32, 32, 3), sequential=s), (32, 32, 3), (10,),
               conv(5, 3, 6) + conv(5, 6, 16) + dense(5 * 5 * 16, 120) + dense(120, 84) + dense(84, 10)),
    "alexnet": (lambda s: km.alexnet(sequential=s), (32, 32, 3), (10,),
                conv(3, 3, 32) + conv(3, 32, 64) + conv(3, 64, 96) + conv(3, 96, 96) + conv(3, 96, 64)
                + dense(4 * 4 * 64, 256) + dense(256, 256) + dense(256, 10)),
    "vgg": (lambda s: km.vgg(sequential=s), (32, 32, 3), (10,),
            conv(3, 3, 32) + conv(3, 32, 64) + conv(3, 64, 128) + conv(3, 128, 128) + dense(4 * 4 * 128, 256) + dense(256, 10)),
    "nin": (lambda s: km.nin(sequential=s), (32, 32, 3), (10,),
            conv(5, 3, 32) + 2 * conv(1, 32, 32) + conv(3, 32, 64) + 2 * conv(1, 64, 64)
            + conv(3, 64, 96) + 2 * conv(1, 96, 96) + conv(3, 96, 10) + 2 * conv(1, 10, 10)),
    "googlenet": (lambda s: km.googlenet(), (32, 32, 3), (10,),
                  conv(3, 3, 32) + inception(32, 16, (24, 32), (4, 8), 8) + inception(64, 32, (32, 48), (8, 24), 16)
                  + inception(120, 48, (24, 52), (4, 12), 16) + dense(128, 10)),
    "resnet": (lambda s: km.resnet(), (32, 32, 3), (10,),
               conv(3, 3, 16, False) + bn(16) + res_block(16, 16) + res_block(16, 32) + res_block(32, 64) + dense(64, 10)),
    "lstm_seq2seq": (lambda s: km.rnn((None, 32), 32, sequential=s), (20, 32), (20, 32), lstm(32, 64) + dense(64, 32)),
    "deep_bigru_to_one": (lambda s: km.rnn((12, 4), 3, cell="gru", units=(8, 6), bidirectional=True,
                                            return_sequences=False, sequential=s),
                          (12, 4), (3,), 2 * gru(4, 8) + 2 * gru(16, 6) + dense(12, 3)),
    "simple_rnn_tokens": (lambda s: km.rnn((None,), 50, cell="simple", units=(16,), vocab_size=50, embedding_dim=8,
                                            sequential=s), (10,), (10, 50),
                          50 * 8 + (16 * (8 + 16) + 16) + dense(16, 50)),
    "gan_1d_generator": (lambda s: km.gan_1d_generator(), (1,), (1,), dense(1, 32) + dense(32, 32) + dense(32, 1)),
    "dcgan_generator_28": (lambda s: km.dcgan_generator(28, 1, sequential=s), (100,), (28, 28, 1),
                           dense(100, 7 * 7 * 128, False) + bn(7 * 7 * 128) + conv(4, 128, 128, False) + bn(128)
                           + conv(4, 128, 64, False) + bn(64) + conv(3, 64, 1)),
    "dcgan_discriminator_28": (lambda s: km.dcgan_discriminator(28, 1, sequential=s), (28, 28, 1), (1,),
                               conv(4, 1, 64) + conv(4, 64, 128, False) + bn(128) + dense(7 * 7 * 128, 1)),
    "dcgan_generator_64_rgb": (lambda s: km.dcgan_generator(64, 3, noise_dim=16, base_filters=8), (16,), (64, 64, 3),
                               dense(16, 4 * 4 * 64, False) + bn(4 * 4 * 64) + conv(4, 64, 64, False) + bn(64)
                               + conv(4, 64, 32, False) + bn(32) + conv(4, 32, 16, False) + bn(16)
                               + conv(4, 16, 8, False) + bn(8) + conv(3, 8, 3)),
}


def _input(shape, model):
    rng = np.random.default_rng(0)
    if model.inputs[0].dtype.startswith("int"):
        return rng.integers(0, 50, size=(4, *shape)).astype("int32")
    return rng.normal(size=(4, *shape)).astype("float32")


@pytest.mark.parametrize("case", list(CASES))
def test_output_shape_and_exact_parameter_count(case):
    build, in_shape, out_shape, params = CASES[case]
    model = build(False)
    assert isinstance(model, keras.Model)
    assert model.count_params() == params
    assert tuple(model(_input(in_shape, model)).shape) == (4, *out_shape)


@pytest.mark.parametrize("case", ["mlp_fnn", "lenet5", "alexnet", "vgg", "nin", "lstm_seq2seq", "dcgan_generator_28"])
def test_sequential_and_functional_forms_match(case):
    build, _, _, params = CASES[case]
    seq, fun = build(True), build(False)
    assert isinstance(seq, keras.Sequential) and not isinstance(fun, keras.Sequential)
    assert seq.count_params() == fun.count_params() == params
    assert [type(layer) for layer in seq.layers] == [type(layer) for layer in fun.layers[1:]]


def test_lenet_first_layers_match_seed_001():
    model = km.lenet5((32, 32, 3))
    conv1, pool1 = model.get_layer("conv1"), model.get_layer("pool1")
    assert tuple(conv1.output.shape[1:]) == (28, 28, 6) and conv1.count_params() == (5 * 5 * 3 + 1) * 6 == 456
    assert tuple(pool1.output.shape[1:]) == (14, 14, 6) and pool1.count_params() == 0
    classic, modern = km.lenet5(variant="classic"), km.lenet5(variant="modern")
    assert classic.get_layer("conv1").activation.__name__ == "sigmoid"
    assert isinstance(classic.get_layer("pool1"), keras.layers.AveragePooling2D)
    assert modern.get_layer("conv1").activation.__name__ == "relu"
    assert isinstance(modern.get_layer("pool1"), keras.layers.MaxPooling2D)


@pytest.mark.parametrize("case", list(CASES))
def test_save_and_load_round_trip(case, tmp_path: Path):
    build, in_shape, _, _ = CASES[case]
    model = build(False)
    x = _input(in_shape, model)
    path = tmp_path / f"{case}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def _gan(d_steps=1):
    return km.GAN(km.gan_1d_generator(), km.gan_1d_discriminator(), d_steps=d_steps, noise="uniform")


def test_gan_holds_its_two_optimizers_only_refuses_a_third_and_saves_and_loads(tmp_path: Path):
    """One fitted GAN (3 D steps) checked for what two tests checked on a GAN each.

    Replaces test_gan_save_and_load_round_trip and test_gan_holds_its_two_optimizers_only_and_refuses_a_third
    (which fitted a GAN of 2 D steps the same way: its D optimizer's count is now 2 batches x 3).
    """
    from kexp.store import checkpoint

    model = _gan(d_steps=3)
    model.compile()
    model.fit(np.random.default_rng(0).normal(4, 0.5, (64, 1)).astype("float32"), batch_size=32, epochs=1, verbose=0)
    # No unused Keras default optimizer: nothing else is saved in state, restored or logged.
    assert model.optimizer is None
    assert list(checkpoint.optimizers_of(model)) == ["d_optimizer", "g_optimizer"]
    assert int(model.d_optimizer.iterations) == 2 * 3 and int(model.g_optimizer.iterations) == 2
    z = np.linspace(-1, 1, 16, dtype="float32")[:, None]
    model.save(tmp_path / "gan.keras")
    loaded = keras.models.load_model(tmp_path / "gan.keras")
    assert isinstance(loaded, km.GAN) and loaded.d_steps == 3 and loaded.noise == "uniform"
    np.testing.assert_array_equal(np.asarray(loaded(z)), np.asarray(model(z)))
    np.testing.assert_array_equal(
        np.asarray(loaded.discriminator(z)), np.asarray(model.discriminator(z))
    )
    assert loaded.d_optimizer is not None and loaded.g_optimizer is not None
    # The noise seed's state travels too: the loaded GAN goes on drawing where the saved one stopped.
    np.testing.assert_array_equal(loaded.seed_generator.state.numpy(), model.seed_generator.state.numpy())
    assert model.seed_generator.state.numpy()[1] == 2 * (3 + 1)  # 2 batches x (3 D steps + 1 G step)
    with pytest.raises(ValueError, match="received: optimizer='adam'"):
        model.compile(optimizer="adam")


def test_gan_train_step_reduces_discriminator_loss():
    keras.utils.set_random_seed(1)
    model = _gan()
    model.compile(d_optimizer=keras.optimizers.Adam(5e-3), g_optimizer=keras.optimizers.Adam(1e-4))
    real = np.random.default_rng(0).normal(4.0, 0.5, (128, 1)).astype("float32")
    z = np.random.default_rng(1).uniform(-1, 1, (128, 1)).astype("float32")
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    def d_loss():
        fake = model.generator(z)
        return float(bce(np.ones((128, 1)), model.discriminator(real)) + bce(np.zeros((128, 1)), model.discriminator(fake)))

    before = d_loss()
    logs = [model.train_on_batch(real, return_dict=True) for _ in range(20)]
    after = d_loss()
    assert after < before * 0.5, (before, after)
    assert set(logs[-1]) == {"d_loss", "g_loss"}
    assert all(np.isfinite(v) for v in logs[-1].values())


# Every kind of layer the builders use, each in at least one model trained here (a step costs seconds of tracing
# under two replicas, whatever the input size): alexnet's kinds (Conv2D, MaxPooling2D, Dropout, Flatten, Dense) are
# vgg's, nin's are in googlenet, and the mlp builder trains under two replicas in test_studies.py's optimizers study.
MIRRORED = ["lenet5", "vgg", "googlenet", "resnet", "lstm_seq2seq", "deep_bigru_to_one", "simple_rnn_tokens"]


@pytest.mark.parametrize("case", MIRRORED)
def test_one_training_step_under_mirrored_strategy(case):
    build, in_shape, out_shape, _ = CASES[case]
    strategy = make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = build(False)
        model.compile(keras.optimizers.SGD(0.01), loss="mse")
        x = _input(in_shape, model)
        y = np.zeros((4, *out_shape), "float32")
        before = [w.copy() for w in model.get_weights()]
        history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def _layer_kinds(model: keras.Model) -> set[str]:
    kinds = set()
    for layer in model.layers:
        kinds |= _layer_kinds(layer) if isinstance(layer, keras.Model) else {type(layer).__name__}
    return kinds


def test_the_cnns_left_out_of_the_mirrored_step_use_only_layer_kinds_trained_there():
    # What lets MIRRORED leave alexnet and nin out: a new kind of layer in either would need its own step.
    built = {case: CASES[case][0](False) for case in ("alexnet", "vgg", "nin", "googlenet")}
    assert _layer_kinds(built["alexnet"]) <= _layer_kinds(built["vgg"])
    assert _layer_kinds(built["nin"]) <= _layer_kinds(built["googlenet"])


def test_gan_trains_under_mirrored_strategy():
    strategy = make_strategy("mirrored")
    with strategy.scope():
        model = km.GAN(km.dcgan_generator(8, 1, noise_dim=8, base_filters=4),
                        km.dcgan_discriminator(8, 1, base_filters=4), d_steps=2)
        model.compile()
        before = [w.copy() for w in model.generator.get_weights()]
        history = model.fit(np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 1)).astype("float32"),
                            batch_size=4, epochs=1, verbose=0)
    assert set(history.history) == {"d_loss", "g_loss"}
    assert all(np.isfinite(v[0]) for v in history.history.values())
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.generator.get_weights()))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: km.lenet5((8, 8, 1)), "input_shape too small for LeNet-5: height and width must be >= 16"),
        (lambda: km.lenet5((32, 32)), "input_shape must be (height, width, channels); received: input_shape=(32, 32)"),
        (lambda: km.lenet5(variant="fancy"), "variant must be one of classic, modern; received: variant='fancy'"),
        (lambda: km.vgg((4, 4, 3)), "input_shape too small for VGG: height and width must be >= 8"),
        (lambda: km.alexnet(filters=(8, 8)), "alexnet has 5 conv and 2 hidden FC layers"),
        (lambda: km.dcgan_generator(30, 1), "received: image_size=30"),
        (lambda: km.dcgan_generator(7, 1), "received: image_size=7"),
        (lambda: km.dcgan_discriminator(28, 2), "channels must be one of 1, 3; received: channels=2"),
        (lambda: km.mlp((2,), 1, dropout=1.0), "dropout must be >= 0.0 and < 1.0; received: dropout=1.0"),
        (lambda: km.mlp((2,), 1, activation="swish2"), "activation must be one of relu, tanh"),
        (lambda: km.mlp((2,), 1, hidden=(8, 0)), "hidden must be a list of positive integers; received: hidden=[8, 0]"),
        (lambda: km.rnn((None, 3), 1, cell="transformer"), "cell must be one of simple, gru, lstm"),
        (lambda: km.GAN(km.gan_1d_generator(), km.gan_1d_discriminator(), d_steps=0), "d_steps must be >= 1"),
    ],
)
def test_impossible_requests_fail_at_build_time(build, message):
    with pytest.raises(ValueError) as info:
        build()
    assert message in str(info.value)


# Builders combine: default names are unique in the process, explicit ones are kept as given.


def _names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def test_two_default_mlp_stacks_sit_in_one_model(tmp_path: Path):
    first, second = km.mlp_layers(3, hidden=(4,)), km.mlp_layers(2, hidden=(5,))
    seq = keras.Sequential([keras.Input((6,)), *first, *second])
    assert seq.count_params() == dense(6, 4) + dense(4, 3) + dense(3, 5) + dense(5, 2)
    inputs = keras.Input((6,))
    x = inputs
    for layer in km.mlp_layers(3, hidden=(4,)) + km.mlp_layers(2, hidden=(5,)):
        x = layer(x)
    fun = keras.Model(inputs, x)
    assert len(set(_names(fun))) == len(_names(fun)) == 6
    fun.save(tmp_path / "two.keras")
    loaded = keras.models.load_model(tmp_path / "two.keras")
    z = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(z)), np.asarray(fun(z)))


def test_rnn_and_mlp_stacks_sit_in_one_model():
    layers = km.rnn_layers(4, units=(3,), return_sequences=False) + km.mlp_layers(1, hidden=(2,))
    model = keras.Sequential([keras.Input((7, 2)), *layers])
    assert model.count_params() == lstm(2, 3) + dense(3, 4) + dense(4, 2) + dense(2, 1)
    heads = [name for name in _names(model) if name.endswith("head")]
    assert len(heads) == len(set(heads)) == 2


def test_default_names_follow_keras_and_restart_with_the_session():
    keras.backend.clear_session()
    assert [layer.name for layer in km.mlp_layers(1, hidden=(2,))] == ["mlp_dense_0", "mlp_relu_0", "mlp_head"]
    assert [layer.name for layer in km.mlp_layers(1, hidden=())] == ["mlp_1_head"]
    assert km.mlp((2,), 1).name == "mlp_2"
    assert [km.resnet().name, km.resnet().name] == ["resnet", "resnet_1"]


@pytest.mark.parametrize("build", [km.resnet, km.vgg, km.googlenet, km.lenet5])
def test_two_default_cnns_are_sub_models_of_one_model(build, tmp_path: Path):
    shape = (32, 32, 1) if build is km.lenet5 else (32, 32, 3)
    a, b = build(shape), build(shape)
    inputs = keras.Input(shape)
    outer = keras.Model(inputs, keras.layers.Average()([a(inputs), b(inputs)]))
    assert outer.count_params() == 2 * a.count_params()
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
    outer.save(tmp_path / "pair.keras")
    loaded = keras.models.load_model(tmp_path / "pair.keras")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(outer(x)), rtol=1e-6, atol=1e-6)


def test_blocks_used_twice_get_unique_names_and_explicit_ones_are_kept():
    x = keras.Input((8, 8, 4))
    y = km.residual_block(km.residual_block(x, 4, 1), 4, 1)
    y = km.inception_block(km.inception_block(y, 2, (2, 2), (2, 2), 2), 2, (2, 2), (2, 2), 2)
    y = km.residual_block(y, 8, 2, "down")
    model = keras.Model(x, y)
    assert len(set(_names(model))) == len(_names(model))
    assert model.get_layer("down_proj").strides == (2, 2)
    strided_proj = conv(1, 8, 8, False) + bn(8)  # stride 2 projects the shortcut though channels stay 8
    assert model.count_params() == 2 * res_block(4, 4) + inception(4, 2, (2, 2), (2, 2), 2) \
        + inception(8, 2, (2, 2), (2, 2), 2) + res_block(8, 8) + strided_proj


def test_a_prefix_names_the_layers():
    assert [layer.name for layer in km.mlp_layers(2, hidden=(3,), batch_norm=True, dropout=0.1, name="enc")] == [
        "enc_dense_0", "enc_bn_0", "enc_relu_0", "enc_dropout_0", "enc_head"]
    assert [layer.name for layer in km.rnn_layers(5, cell="gru", units=(4,), bidirectional=True, vocab_size=9,
                                                  name="dec-1")] == ["dec-1_embedding", "dec-1_bi_gru_0",
                                                                     "dec-1_per_step_head"]
    assert km.resnet(name="trunk").name == "trunk"
    # The models' own layers keep their short names.
    assert km.mlp((2,), 1, hidden=(3,)).get_layer("head").units == 1
    assert km.rnn((None, 2), 1).get_layer("per_step_head").units == 1


@pytest.mark.parametrize(
    "build, shown",
    [
        (lambda: km.mlp_layers(1, name="my stack"), "received: name='my stack'"),
        (lambda: km.rnn_layers(1, name=""), "received: name=''"),
        (lambda: km.mlp((2,), 1, name="a/b"), "received: name='a/b'"),
        (lambda: km.resnet(name=7), "received: name=7"),
        (lambda: km.residual_block(keras.Input((4, 4, 2)), 2, 1, "blk.1"), "received: name='blk.1'"),
    ],
)
def test_a_bad_prefix_is_refused_naming_it(build, shown):
    with pytest.raises(ValueError, match="name must be a non-empty string of letters, digits") as info:
        build()
    assert shown in str(info.value)
