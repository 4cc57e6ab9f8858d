"""GANs: a 1-D MLP pair (Goodfellow et al. 2014), DCGAN for images, and the `GAN` trainer model.

The `GAN` model trains with plain `fit()`: `k` discriminator steps then one
generator step per batch, two optimizers, loss metrics aggregated across
replicas like Keras' own. Discriminators return logits.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf
from keras import ops

from kexp.data.image_sizes import dcgan_upsamplings
from kexp.models.common import assemble, check_choice, check_range, unique_name
from kexp.models.mlp import mlp


def gan_1d_generator(
    noise_dim: int = 1, output_dim: int = 1, *, hidden: Sequence[int] = (32, 32), name: str | None = None
) -> keras.Model:
    """Builds the 1-D GAN's generator: noise -> MLP (ReLU) -> a sample.

    Example: `gan_1d_generator(1, 1)` maps uniform noise to 1-D samples.

    Args:
        noise_dim: Size of the noise vector.
        output_dim: Size of a sample.
        hidden: Widths of the hidden layers.
        name: Model name; None gives `generator_1d`, `generator_1d_1`, ..., unique in
            the process.

    Returns:
        A `keras.Model` with a linear output.
    """
    return mlp((noise_dim,), output_dim, hidden=hidden, activation="relu", name=unique_name(name, "generator_1d"))


def gan_1d_discriminator(
    input_dim: int = 1, *, hidden: Sequence[int] = (32, 32), name: str | None = None
) -> keras.Model:
    """Builds the 1-D GAN's discriminator: sample -> MLP (LeakyReLU) -> one logit.

    Example: `keras.ops.sigmoid(gan_1d_discriminator()(x))` is D(x).

    Args:
        input_dim: Size of a sample.
        hidden: Widths of the hidden layers.
        name: Model name; None gives `discriminator_1d`, `discriminator_1d_1`, ..., unique in
            the process.

    Returns:
        A `keras.Model` returning the logit of "x is real".
    """
    return mlp((input_dim,), 1, hidden=hidden, activation="leaky_relu", name=unique_name(name, "discriminator_1d"))


def dcgan_generator(
    image_size: int = 32,
    channels: int = 1,
    *,
    noise_dim: int = 100,
    base_filters: int = 64,
    sequential: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Builds a DCGAN generator (Radford et al. 2015).

    noise -> Dense to a seed map -> [Conv2DTranspose stride 2, BatchNorm, ReLU]
    repeated -> Conv2D to `channels` with tanh, so images lie in [-1, 1].

    Example: `dcgan_generator(28, 1)` maps 100-d noise to 28x28x1 via a 7x7 seed.

    Args:
        image_size: Side of the square output; see `dcgan_upsamplings`.
        channels: 1 (grey) or 3 (RGB).
        noise_dim: Size of the noise vector.
        base_filters: Filters of the last upsampling; doubled per earlier one.
        sequential: Return a `keras.Sequential` instead of a functional model.
        name: Model name; None gives `dcgan_generator`, `dcgan_generator_1`, ..., unique in
            the process.

    Returns:
        A `keras.Model` `(batch, noise_dim) -> (batch, image_size, image_size, channels)`.
    """
    check_choice("channels", channels, (1, 3))
    check_range("noise_dim", noise_dim, low=1)
    check_range("base_filters", base_filters, low=1)
    steps = dcgan_upsamplings(image_size)
    seed = image_size // 2**steps
    top = base_filters * 2 ** (steps - 1)
    layers: list[keras.layers.Layer] = [
        keras.layers.Dense(seed * seed * top, use_bias=False, name="project"),
        keras.layers.BatchNormalization(name="project_bn"),
        keras.layers.ReLU(name="project_relu"),
        keras.layers.Reshape((seed, seed, top), name="seed_map"),
    ]
    for i in range(steps):
        filters = base_filters * 2 ** (steps - 1 - i)
        layers += [
            keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False, name=f"up{i + 1}"),
            keras.layers.BatchNormalization(name=f"up{i + 1}_bn"),
            keras.layers.ReLU(name=f"up{i + 1}_relu"),
        ]
    layers.append(keras.layers.Conv2D(channels, 3, padding="same", activation="tanh", name="to_image"))
    return assemble(layers, (noise_dim,), name=unique_name(name, "dcgan_generator"), sequential=sequential)


def dcgan_discriminator(
    image_size: int = 32,
    channels: int = 1,
    *,
    base_filters: int = 64,
    sequential: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Builds a DCGAN discriminator: strided convolutions, BatchNorm, LeakyReLU(0.2), one logit.

    The first convolution has no BatchNorm, as in the DCGAN paper.

    Example: `dcgan_discriminator(28, 1)` scores 28x28x1 images in [-1, 1].

    Args:
        image_size: Side of the square input; see `dcgan_upsamplings`.
        channels: 1 (grey) or 3 (RGB).
        base_filters: Filters of the first convolution; doubled per later one.
        sequential: Return a `keras.Sequential` instead of a functional model.
        name: Model name; None gives `dcgan_discriminator`, `dcgan_discriminator_1`, ..., unique in
            the process.

    Returns:
        A `keras.Model` returning the logit of "image is real".
    """
    check_choice("channels", channels, (1, 3))
    check_range("base_filters", base_filters, low=1)
    steps = dcgan_upsamplings(image_size)
    layers: list[keras.layers.Layer] = []
    for i in range(steps):
        layers.append(keras.layers.Conv2D(
            base_filters * 2**i, 4, strides=2, padding="same", use_bias=i == 0, name=f"down{i + 1}"))
        if i > 0:
            layers.append(keras.layers.BatchNormalization(name=f"down{i + 1}_bn"))
        layers.append(keras.layers.LeakyReLU(negative_slope=0.2, name=f"down{i + 1}_lrelu"))
    layers += [keras.layers.Flatten(name="flatten"), keras.layers.Dense(1, name="logit")]
    return assemble(layers, (image_size, image_size, channels), name=unique_name(name, "dcgan_discriminator"),
                    sequential=sequential)


@keras.saving.register_keras_serializable(package="kexp")
class GAN(keras.Model):
    """A generator and a discriminator trained adversarially by `fit()`.

    Per batch of real data: `d_steps` discriminator updates (each on fresh
    noise, with the same real batch), then one generator update with the
    non-saturating loss -log D(G(z)), on fresh noise too, or, with
    `reuse_fake_batch=True`, on the batch the generator made for the last
    discriminator update (DCGAN's usual loop: one generator pass per batch
    fewer). Calling the model generates samples.

    The noise is stateless random numbers drawn from a seed held as a model
    variable (a `keras.random.SeedGenerator`), folded with the replica's id:
    the training is a function of the data, the variables and that seed, so
    it resumes exactly from saved state, and `kexp.engine.fused` may run several of
    its steps in one compiled loop (`fuse_train_step`) with the same result.

    Example:
        gan = GAN(gan_1d_generator(), gan_1d_discriminator(), d_steps=3, noise="uniform")
        gan.compile()
        gan.fit(real_samples, batch_size=64, epochs=10)

    Args:
        generator: Model from noise `(batch, noise_dim)` to samples.
        discriminator: Model from samples to one logit.
        d_steps: Discriminator steps per generator step (`k` in Goodfellow et al.).
        noise: `normal` (standard normal) or `uniform` (on [-1, 1]).
        reuse_fake_batch: Score the generator on the last discriminator
            update's generated batch instead of a new one.
        seed: Seed of the noise; None draws one from Keras' global seed
            (`keras.utils.set_random_seed`).
        **kwargs: Passed to `keras.Model`.
    """

    # `train_step` keeps no Python state between calls and reads its noise from
    # a seed variable: `kexp.engine.fused` may loop over several batches inside one call.
    fuse_train_step = True

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        d_steps: int = 1,
        noise: str = "normal",
        seed: int | None = None,
        reuse_fake_batch: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_range("d_steps", d_steps, low=1)
        check_choice("noise", noise, ("normal", "uniform"))
        if seed is not None:
            check_range("seed", seed, low=0)
        self.generator = generator
        self.discriminator = discriminator
        self.d_steps = int(d_steps)
        self.noise = noise
        if not isinstance(reuse_fake_batch, bool):
            raise ValueError(f"reuse_fake_batch: received {reuse_fake_batch!r}; allowed: True or False")
        self.reuse_fake_batch = reuse_fake_batch
        self.noise_dim = int(generator.input_shape[-1])
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="noise_seed")
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self._bce = keras.losses.BinaryCrossentropy(from_logits=True)
        self.d_optimizer: keras.optimizers.Optimizer | None = None
        self.g_optimizer: keras.optimizers.Optimizer | None = None
        # Both sub-models come built (they start from an Input), so the GAN is too.
        self.built = True

    def compile(
        self,
        d_optimizer: keras.optimizers.Optimizer | None = None,
        g_optimizer: keras.optimizers.Optimizer | None = None,
        **kwargs: Any,
    ) -> None:
        """Sets the two optimizers (default Adam(2e-4, beta_1=0.5), as in DCGAN) and builds them.

        Building both now matters: restoring saved state (`kexp.store.checkpoint`,
        or Keras' `BackupAndRestore`, which builds only `model.optimizer`)
        needs both optimizers' variables to exist first.

        Args:
            d_optimizer: The discriminator's optimizer.
            g_optimizer: The generator's optimizer.
            **kwargs: Passed to `keras.Model.compile` (e.g. `steps_per_execution`).

        Raises:
            ValueError: For an `optimizer`, `loss` or `metrics` argument: the GAN
                trains with its two optimizers and its own losses.
        """
        for key in ("optimizer", "loss", "metrics"):
            if kwargs.get(key) is not None:
                raise ValueError(f"GAN.compile takes d_optimizer and g_optimizer and computes its own losses; "
                                 f"received: {key}={kwargs[key]!r}")
        # No `model.optimizer`: Keras' default would create an RMSprop that
        # nothing trains with, yet is saved, restored and logged.
        super().compile(**{**kwargs, "optimizer": None})
        self.d_optimizer = d_optimizer or keras.optimizers.Adam(2e-4, beta_1=0.5)
        self.g_optimizer = g_optimizer or keras.optimizers.Adam(2e-4, beta_1=0.5)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.d_loss_tracker, self.g_loss_tracker]

    def sample_noise(self, batch_size: Any) -> tf.Tensor:
        """Returns a batch of noise vectors from the configured distribution; advances the noise seed."""
        shape = (batch_size, self.noise_dim)
        seed = self.seed_generator.next()
        context = tf.distribute.get_replica_context()
        # Each replica draws its own noise: one seed state, folded with the replica's id.
        replica = context.replica_id_in_sync_group if context is not None else 0
        seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), tf.cast(replica, tf.int64))
        if self.noise == "uniform":
            return tf.random.stateless_uniform(shape, seed, -1.0, 1.0)
        return tf.random.stateless_normal(shape, seed)

    def call(self, noise: Any, training: bool = False) -> Any:
        return self.generator(noise, training=training)

    def _scaled(self, loss: tf.Tensor) -> tf.Tensor:
        # Gradients are summed over replicas; scale so the step matches one device.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / tf.cast(replicas, loss.dtype)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        real = data[0] if isinstance(data, (tuple, list)) else data
        batch = tf.shape(real)[0]
        ones = tf.ones((batch, 1))
        g_vars = self.generator.trainable_variables
        for _ in range(self.d_steps - 1 if self.reuse_fake_batch else self.d_steps):
            d_loss = self._discriminator_update(real, self.sample_noise(batch))
        with tf.GradientTape() as tape:
            fake = self.generator(self.sample_noise(batch), training=True)
            if self.reuse_fake_batch:
                with tape.stop_recording():
                    d_loss = self._discriminator_update(real, fake=fake)
            g_loss = self._bce(ones, self.discriminator(fake, training=True))
            scaled = self._scaled(g_loss)
        grads = tape.gradient(scaled, g_vars)
        self.g_optimizer.apply_gradients(zip(grads, g_vars))
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {m.name: m.result() for m in self.metrics}

    def _discriminator_update(self, real: Any, noise: Any = None, fake: Any = None) -> tf.Tensor:
        """One discriminator step on `real` and `fake` (generated from `noise` when not given); returns its loss."""
        batch = tf.shape(real)[0]
        d_vars = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            if fake is None:
                fake = self.generator(noise, training=True)
            d_loss = self._bce(tf.ones((batch, 1)), self.discriminator(real, training=True)) + self._bce(
                tf.zeros((batch, 1)), self.discriminator(fake, training=True)
            )
            scaled = self._scaled(d_loss)
        grads = tape.gradient(scaled, d_vars)
        self.d_optimizer.apply_gradients(zip(grads, d_vars))
        return d_loss

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        real = data[0] if isinstance(data, (tuple, list)) else data
        batch = tf.shape(real)[0]
        fake = self.generator(self.sample_noise(batch), training=False)
        fake_logits = self.discriminator(fake, training=False)
        d_loss = self._bce(tf.ones((batch, 1)), self.discriminator(real, training=False)) + self._bce(
            tf.zeros((batch, 1)), fake_logits
        )
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(self._bce(tf.ones((batch, 1)), fake_logits))
        return {m.name: m.result() for m in self.metrics}

    def save_own_variables(self, store: Any) -> None:
        # Keras does not save a SeedGenerator's state: without it a loaded
        # GAN would draw its noise from the start again.
        super().save_own_variables(store)
        store["noise_seed"] = self.seed_generator.state.numpy()

    def load_own_variables(self, store: Any) -> None:
        own = {key: store[key] for key in store.keys() if key != "noise_seed"}
        super().load_own_variables(own)
        if "noise_seed" in store.keys():  # files saved before the noise had a seed state have none
            self.seed_generator.state.assign(store["noise_seed"][...])

    def get_config(self) -> dict[str, Any]:
        base_config = super().get_config()
        config = {
            "generator": keras.saving.serialize_keras_object(self.generator),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "d_steps": self.d_steps,
            "noise": self.noise,
            "seed": self.seed,
            "reuse_fake_batch": self.reuse_fake_batch,
        }
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "GAN":
        config = dict(config)
        generator = keras.saving.deserialize_keras_object(config.pop("generator"))
        discriminator = keras.saving.deserialize_keras_object(config.pop("discriminator"))
        return cls(generator, discriminator, **config)

    def get_compile_config(self) -> dict[str, Any] | None:
        if self.d_optimizer is None:
            return None
        return {
            "d_optimizer": keras.saving.serialize_keras_object(self.d_optimizer),
            "g_optimizer": keras.saving.serialize_keras_object(self.g_optimizer),
        }

    def compile_from_config(self, config: dict[str, Any]) -> None:
        self.compile(
            d_optimizer=keras.saving.deserialize_keras_object(config["d_optimizer"]),
            g_optimizer=keras.saving.deserialize_keras_object(config["g_optimizer"]),
        )


def discriminator_probability(discriminator: keras.Model, x: Any) -> Any:
    """Returns D(x) = sigmoid(logit), the discriminator's probability that x is real."""
    return ops.sigmoid(discriminator(x, training=False))
