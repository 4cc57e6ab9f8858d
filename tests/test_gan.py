"""`GAN(reuse_fake_batch=True)`: DCGAN's usual update, checked against the same step written out by hand."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kexp.models import GAN, gan_1d_discriminator, gan_1d_generator


def _gan(reuse: bool, d_steps: int = 1) -> GAN:
    keras.utils.set_random_seed(1)
    gan = GAN(gan_1d_generator(4, 1, hidden=(8,)), gan_1d_discriminator(1, hidden=(8,)), d_steps=d_steps, seed=3,
              reuse_fake_batch=reuse)
    gan.compile(keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1))
    return gan


def test_a_reused_batch_step_is_the_d_step_then_the_g_step_on_the_same_generated_batch():
    real = np.random.default_rng(0).normal(4, 1, (32, 1)).astype("float32")
    gan, by_hand = _gan(reuse=True), _gan(reuse=True)
    for a, b in zip(gan.variables, by_hand.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    logs = gan.train_on_batch(real, return_dict=True)

    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    g, d = by_hand.generator, by_hand.discriminator
    ones, zeros = tf.ones((32, 1)), tf.zeros((32, 1))
    noise = by_hand.sample_noise(32)  # one draw: one generated batch for both updates
    with tf.GradientTape() as tape:
        d_loss = bce(ones, d(real, training=True)) + bce(zeros, d(g(noise, training=True), training=True))
    by_hand.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d.trainable_variables), d.trainable_variables))
    with tf.GradientTape() as tape:  # scored by the discriminator just updated
        g_loss = bce(ones, d(g(noise, training=True), training=True))
    by_hand.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g.trainable_variables), g.trainable_variables))

    np.testing.assert_allclose(logs["d_loss"], float(d_loss), rtol=1e-6)
    np.testing.assert_allclose(logs["g_loss"], float(g_loss), rtol=1e-6)
    for a, b in zip(gan.generator.variables + gan.discriminator.variables, g.variables + d.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7, err_msg=a.path)
    # The fresh-noise update would have scored a second generated batch: the two differ.
    fresh = _gan(reuse=False)
    assert fresh.train_on_batch(real, return_dict=True)["g_loss"] != pytest.approx(logs["g_loss"], rel=1e-6)


@pytest.mark.parametrize("d_steps", [1, 3])
def test_a_reused_batch_draws_one_noise_batch_per_step_fewer(d_steps):
    real = np.zeros((16, 1), "float32")
    for reuse, draws in ((False, d_steps + 1), (True, d_steps)):
        gan = _gan(reuse, d_steps)
        before = np.asarray(gan.seed_generator.state).copy()
        gan.fit(real, batch_size=8, epochs=1, verbose=0)  # two steps
        assert int(np.asarray(gan.seed_generator.state)[1] - before[1]) == 2 * draws


def test_the_option_is_saved_with_the_model_and_checked(tmp_path):
    gan = _gan(reuse=True)
    gan.save(tmp_path / "gan.keras")
    assert keras.models.load_model(tmp_path / "gan.keras").reuse_fake_batch is True
    with pytest.raises(ValueError, match="reuse_fake_batch: received 'yes'; allowed: True or False"):
        GAN(gan_1d_generator(), gan_1d_discriminator(), reuse_fake_batch="yes")
