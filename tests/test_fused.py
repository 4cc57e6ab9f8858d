"""Fused steps (`kexp.engine.fused`): a compiled call's batches in one loop, trained exactly as step by step."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kexp
from kexp.config import TrainConfig


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int32")
    return x, y


def _build():
    import keras

    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dropout(0.2), keras.layers.Dense(2)], name="small")


def _fit(logdir, data, fuse: bool, **train_args):
    settings = dict(epochs=3, batch_size=20, learning_rate=0.01, fuse_steps=fuse)
    settings.update(train_args)
    with kexp.open_run("fused", logdir=logdir, train=TrainConfig(**settings), strategy="default", verbose=0) as run:
        model = run.fit(_build, data, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    results = json.loads((run.run_dir / "results.json").read_text())
    return model, results["fits"]["model"]


# XLA or not, a tail or not, shuffled or not: each once. XLA with a tail is the shorter-call test's true-205
# (the same bits asserted); shuffling is the pipeline's, the same with or without XLA or a tail.
@pytest.mark.parametrize("jit, shuffle, n", [
    ("true", True, 600), ("false", False, 600),
    # 29 full batches and one of 10: the partial batch rides beside the stacked ones.
    ("false", True, 590),
])
def test_fused_steps_train_bit_for_bit_like_plain_steps(logdir, jit, shuffle, n):
    data = _data(n)  # 30 batches of (up to) 20: one fused call per epoch
    plain, plain_fit = _fit(logdir, data, fuse=False, jit_compile=jit, shuffle=shuffle)
    fused, fused_fit = _fit(logdir, data, fuse=True, jit_compile=jit, shuffle=shuffle)
    speed = ("steps_per_execution", "jit_compile", "fused_steps")
    assert {k: plain_fit[k] for k in speed} == {"steps_per_execution": 30, "jit_compile": jit == "true",
                                                "fused_steps": False}
    assert {k: fused_fit[k] for k in speed} == {"steps_per_execution": 30, "jit_compile": jit == "true",
                                                "fused_steps": True}
    # Dropout's seed state, Adam's moments and step counter, every weight: the same bits.
    assert len(plain.variables) == len(fused.variables)
    for a, b in zip(plain.variables, fused.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    for a, b in zip(plain.optimizer.variables, fused.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    assert int(fused.optimizer.iterations) == 3 * 30
    assert plain.history.history == fused.history.history
    losses = fused.history.history["loss"]
    assert losses[-1] < 0.8 * losses[0]  # it trains


@pytest.mark.parametrize("jit, n", [("false", 460), ("false", 455), ("true", 205)])
def test_an_epoch_the_call_size_does_not_divide_ends_in_a_shorter_fused_call(logdir, jit, n):
    # 23 batches an epoch (the last of 15 for n=455), 10 per call: calls of 10, 10 and 3 batches.
    # n=205: 10 full batches and 5 examples: calls of 9, and 1 with the 5 (XLA cannot slice a stack of none;
    # each stack size is an XLA compile: was n=405, calls of 10, 9 and 1, and also without XLA, which makes
    # the same calls; a tail without XLA is n=455's).
    data = _data(n)
    plain, plain_fit = _fit(logdir, data, fuse=False, jit_compile=jit, steps_per_execution=10)
    fused, fused_fit = _fit(logdir, data, fuse=True, jit_compile=jit, steps_per_execution=10)
    assert plain_fit["fused_steps"] is False and fused_fit["fused_steps"] is True
    for a, b in zip(plain.variables + plain.optimizer.variables, fused.variables + fused.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    assert int(fused.optimizer.iterations) == 3 * -(-n // 20)
    assert plain.history.history == fused.history.history


def test_a_dataset_input_is_fused_too(logdir):
    import tensorflow as tf

    # 19 full batches and a tail of 10 (held as tensors, a dataset is grouped as arrays are: with or
    # without a tail is the arrays' tests' matter).
    x, y = _data(390)
    plain, _ = _fit(logdir, tf.data.Dataset.from_tensor_slices((x, y)), fuse=False, steps_per_execution=10)
    fused, settings = _fit(logdir, tf.data.Dataset.from_tensor_slices((x, y)), fuse=True, steps_per_execution=10)
    assert settings["fused_steps"] is True
    assert plain.history.history == fused.history.history
    for a, b in zip(plain.weights, fused.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_after_a_fused_fit_the_model_trains_and_saves_as_usual(logdir, tmp_path):
    import keras

    x, y = _data(600)
    model, settings = _fit(logdir, (x, y), fuse=True)
    assert settings["fused_steps"] is True
    # Plain batches, not stacked ones: the fused train function is gone.
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = tmp_path / "small.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0), rtol=1e-6)


# One case per reason `fitrun.fused_group` refuses. (A partial batch of examples of no fixed shape was a case too:
# refused for the same reason as varying_shapes_full_batches, data not held as tensors.)
@pytest.mark.parametrize("case", ["varying_shapes_full_batches", "one_step_per_call", "custom_train_step",
                                  "gan_subclass_step", "fewer_than_a_batch", "two_replicas"])
def test_fits_that_cannot_fuse_run_step_by_step(logdir, case):
    import keras
    import tensorflow as tf

    x, y = _data(600)
    data = (x, y)
    train = dict(epochs=2, batch_size=20, learning_rate=0.01)
    build, strategy = _build, "default"
    if case == "varying_shapes_full_batches":
        # Examples of no fixed shape are not held as tensors. Sorted by length, unshuffled: every batch is
        # uniform but batches differ, so they cannot be stacked.
        lengths = np.repeat([3, 4, 5], 200)
        data = tf.data.Dataset.from_generator(
            lambda: ((np.full(n, 0.5, "float32"), i % 2) for i, n in enumerate(lengths)),
            output_signature=(tf.TensorSpec((None,), tf.float32), tf.TensorSpec((), tf.int32)))
        train["shuffle"] = False

        def build():
            return keras.Sequential([keras.Input((None,)), keras.layers.Reshape((-1, 1)),
                                     keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])
    elif case == "fewer_than_a_batch":
        data = (x[:7], y[:7])
        train["steps_per_execution"] = 4
    elif case == "one_step_per_call":
        train["steps_per_execution"] = 1
    elif case == "custom_train_step":
        class Custom(keras.Sequential):
            def train_step(self, data):
                return super().train_step(data)

        def build():
            return Custom([keras.Input((6,)), keras.layers.Dense(2)])
    elif case == "gan_subclass_step":
        from kexp.models import GAN, gan_1d_discriminator, gan_1d_generator

        class Noisy(GAN):
            # Overrides the fusable step without declaring its own fusable: not fused.
            def train_step(self, data):
                return {**super().train_step(data), "extra": tf.constant(1.0)}

        data = (x[:, :1],)

        def build():
            return Noisy(gan_1d_generator(2, 1, hidden=(4,)), gan_1d_discriminator(1, hidden=(4,)))
    else:
        strategy = "mirrored"
    with kexp.open_run("fused", logdir=logdir, train=TrainConfig(**train), strategy=strategy, verbose=0) as run:
        # A GAN computes its own losses (one given to it is refused).
        model = run.fit(build, data, loss=None if case == "gan_subclass_step" else "sparse_categorical_crossentropy")
    assert run.fit_settings["model"]["fused_steps"] is False
    history = model.history.history
    assert len(history["g_loss" if case == "gan_subclass_step" else "loss"]) == 2
    if case == "gan_subclass_step":
        assert history["extra"] == [1.0, 1.0]  # what its own step returns reaches the logs


def test_dataset_stacks_groups_and_refuses_ones_that_do_not_tile_the_stream(logdir):
    import tensorflow as tf

    x, y = _data(590)
    x600, y600 = _data(600)
    ragged = tf.data.Dataset.from_generator(lambda: zip(x600, y600), output_signature=(
        tf.TensorSpec((None,), tf.float32), tf.TensorSpec((), tf.int32)))
    with kexp.open_run("fused", logdir=logdir, train=TrainConfig(batch_size=20), verbose=0) as run:
        with pytest.raises(ValueError, match="group=7 needs a stream, data of fixed shapes held as tensors"):
            run.dataset(ragged, training=True, epochs=(0, 2), group=7, num_examples=600)  # 30 batches an epoch
        # Held as tensors: 30 batches an epoch in groups of 7, the last of 2.
        short = [tuple(xs.shape) for xs, _ in run.dataset((x600, y600), training=True, epochs=(0, 1), group=7)]
        ds = run.dataset((x[:400], y[:400]), training=True, epochs=(0, 2), group=10)
        shapes = [tuple(t.shape) for t in next(iter(ds))]
        # 590 = 29 x 20 + 10: three elements an epoch, the last 9 full batches and a tail of 10.
        elements = list(run.dataset((x, y), training=True, epochs=(0, 1), group=10))
    assert short == [(7, 20, 6)] * 4 + [(2, 20, 6)]
    assert shapes == [(10, 20, 6), (10, 20)]
    assert [(tuple(s[0].shape), tuple(t[0].shape)) for s, t in elements] == [
        ((10, 20, 6), (0, 6)), ((10, 20, 6), (0, 6)), ((9, 20, 6), (10, 6))]
    seen = np.concatenate([np.concatenate([s[0].numpy().reshape(-1, 6), t[0].numpy()]) for s, t in elements])
    np.testing.assert_array_equal(np.sort(seen[:, 0]), np.sort(x[:, 0]))  # every example once


def test_shuffled_datasets_get_the_arrays_permutation_or_a_seeded_buffer(logdir):
    import tensorflow as tf

    x, y = _data(100)
    with kexp.open_run("fused", logdir=logdir, train=TrainConfig(batch_size=25, seed=3), verbose=0) as run:
        from_arrays = [b[0].numpy() for b in run.dataset((x, y), training=True, epochs=(0, 2))]
        # Fixed shapes: held as tensors, the very batches the arrays give; a
        # single-tensor example stays a single tensor.
        from_dataset = [b[0].numpy() for b in run.dataset(
            tf.data.Dataset.from_tensor_slices((x, y)), training=True, epochs=(0, 2))]
        only_x = list(run.dataset(tf.data.Dataset.from_tensor_slices(x), training=True, epochs=(0, 2)))
        # Varying lengths: a seeded shuffle buffer, the same order each time it is made.
        ragged = tf.data.Dataset.from_generator(
            lambda: (np.arange(i % 3 + 1, dtype="float32") + 10 * i for i in range(100)),
            output_signature=tf.TensorSpec((None,), tf.float32))

        def firsts():
            ds = run.dataset(ragged.map(lambda t: t[:1]), training=True, epochs=(0, 2))
            return [float(t[0]) for batch in ds for t in batch]

        first_run, second_run = firsts(), firsts()
    assert len(from_arrays) == 8  # 4 batches x 2 epochs
    for a, b in zip(from_arrays, from_dataset):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(from_arrays[0], from_arrays[4])  # epoch 1 is another order
    np.testing.assert_array_equal(np.concatenate(from_arrays[:4])[np.argsort(np.concatenate(from_arrays[:4])[:, 0])],
                                  x[np.argsort(x[:, 0])])  # a permutation of all examples
    assert [tuple(t.shape) for t in only_x] == [(25, 6)] * 8
    assert first_run == second_run
    assert sorted(first_run[:100]) == [10.0 * i for i in range(100)]
    assert first_run[:100] != [10.0 * i for i in range(100)]


def _gan_fit(logdir, kind: str, n: int, fuse: bool):
    from kexp.models import GAN, dcgan_discriminator, dcgan_generator, gan_1d_discriminator, gan_1d_generator

    rng = np.random.default_rng(0)
    if kind.startswith("dcgan"):
        real = rng.uniform(-1, 1, (n, 8, 8, 1)).astype("float32")

        def build():
            return GAN(dcgan_generator(8, 1, noise_dim=8, base_filters=4), dcgan_discriminator(8, 1, base_filters=4),
                       reuse_fake_batch=kind == "dcgan_reuse")
    else:
        real = rng.normal(4, 1, (n, 1)).astype("float32")

        def build():
            return GAN(gan_1d_generator(4, 1, hidden=(8,)), gan_1d_discriminator(1, hidden=(8,)), d_steps=2,
                       noise="uniform")
    train = TrainConfig(epochs=3, batch_size=16, fuse_steps=fuse, steps_per_execution=5)
    with kexp.open_run("fused_gan", logdir=logdir, train=train, strategy="default", verbose=0) as run:
        gan = run.fit(build, (real,))
    return gan, run.fit_settings["model"]


@pytest.mark.parametrize("kind, n", [("gan_1d", 160), ("dcgan", 100), ("dcgan_reuse", 100)])
def test_gan_steps_fuse_bit_for_bit_like_plain_steps(logdir, kind, n):
    # 1-D: k=2 discriminator steps per batch, uniform noise; 160 = two whole calls an epoch, no tail.
    # DCGAN: batch norm in both nets, 6 full batches and one of 4: calls of 5 and 1 with the tail.
    plain, plain_fit = _gan_fit(logdir, kind, n, fuse=False)
    fused, fused_fit = _gan_fit(logdir, kind, n, fuse=True)
    assert plain_fit["fused_steps"] is False and fused_fit["fused_steps"] is True
    steps = 3 * -(-n // 16)
    assert int(fused.g_optimizer.iterations) == steps
    assert int(fused.d_optimizer.iterations) == steps * fused.d_steps
    # Every weight and batch-norm statistic, the noise seed's state, both optimizers' slots: the same bits.
    mine = plain.variables + plain.d_optimizer.variables + plain.g_optimizer.variables
    theirs = fused.variables + fused.d_optimizer.variables + fused.g_optimizer.variables
    assert len(mine) == len(theirs) and any("seed" in v.path for v in fused.variables)
    for a, b in zip(mine, theirs):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    assert plain.history.history == fused.history.history
    assert set(fused.history.history) == {"d_loss", "g_loss"}


def test_a_step_declared_fusable_that_returns_other_logs_is_refused(logdir):
    import keras
    import tensorflow as tf

    class Fusable(keras.Sequential):
        fuse_train_step = True

        def train_step(self, data):
            # A fused call reports the metrics after its last step: this extra log would be lost.
            return {**super().train_step(data), "w_norm": tf.norm(self.trainable_variables[0])}

    x, y = _data(200)
    with pytest.raises(ValueError, match=r"Fusable.train_step declares fuse_train_step = True but returned logs "
                                         r"\['loss', 'w_norm'\]; allowed: the model's metric results \['loss'\]"):
        with kexp.open_run("fused", logdir=logdir, train=TrainConfig(epochs=1, batch_size=20), verbose=0) as run:
            run.fit(lambda: Fusable([keras.Input((6,)), keras.layers.Dense(2)]), (x, y),
                    loss="sparse_categorical_crossentropy")
