"""A GAN learns to turn uniform noise into samples of a 1-D Gaussian (tutorial 003, Goodfellow et al. 2014).

What it shows: the minimax game of the original GAN paper in one dimension.
G maps uniform noise to samples; D is trained `model.d_steps` (k) steps per
G step. At the optimum p_g = p_data, and D*(x) = p_data / (p_data + p_g)
flattens to 1/2. Plots at the start, middle and end show the data density,
the generator's density and D(x), as in the paper's figure 1.

Metrics (10,000 generated samples): `mean_error` = |mean(G(z)) − μ| / σ,
`std_ratio` = std(G(z)) / σ, `d_mid` = mean D(x) over the central 90% of the data.

Command:  python -m kexp run gan_gaussian_1d
Expected: mean_error <= 0.1, 0.8 <= std_ratio <= 1.2, 0.4 <= d_mid <= 0.6.
Runtime:  about 10 s on a 2-core CPU, TensorFlow import included (README: measured figures).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from kexp import ExperimentConfig, TrainConfig, param
from kexp import ConfigError

if TYPE_CHECKING:
    from kexp import Harness


@dataclasses.dataclass(frozen=True)
class GaussianData:
    """The data distribution N(mu, sigma)."""

    # Upper limits, generous for real use, keep a typo from asking NumPy for
    # terabytes (or overflowing float32) instead of failing with one line.
    mu: float = param(4.0, ge=-1e6, le=1e6, help="data mean")
    sigma: float = param(1.25, gt=0, le=1e6, help="data standard deviation")
    num_samples: int = param(20_000, ge=64, le=10_000_000, help="real samples per epoch")

    def check(self) -> None:
        """Raises `ConfigError` for a sigma too small for float32 to resolve next to mu.

        Samples, the grid of D(x) and the networks are float32, whose steps near
        |mu| are |mu| * 2**-23 apart. sigma >= |mu| * 2**-14 keeps about 500 of
        them per sigma: the 400-point grid over mu +- 4 sigma and the figure's
        60 bins hold distinct values, and mean_error and std_ratio (divided by
        sigma) measure the generator, not rounding. The floor 2**-100 keeps
        sigma / 50 a normal float32 at mu = 0.
        """
        least = max(abs(self.mu) * 2.0**-14, 2.0**-100)
        if self.sigma < least:
            raise ConfigError(
                f"data.sigma: received {self.sigma!r}; allowed: >= {least:.4g} at data.mu={self.mu!r} "
                "(sigma >= |mu| / 16384 and >= 2**-100, so that float32 samples resolve the distribution)"
            )


@dataclasses.dataclass(frozen=True)
class Gan1dModel:
    """Generator, discriminator and the training game."""

    noise_dim: int = param(4, ge=1, le=100_000, help="size of the uniform noise vector")
    g_hidden: tuple[int, ...] = param((32, 32), ge=1, le=100_000, help="generator hidden widths")
    d_hidden: tuple[int, ...] = param((32, 32), ge=1, le=100_000, help="discriminator hidden widths")
    d_steps: int = param(2, ge=1, le=1_000, help="k: discriminator steps per generator step")
    beta_1: float = param(0.5, ge=0, lt=1, help="beta_1 of both Adam optimizers (DCGAN's 0.5)")


CONFIG = ExperimentConfig(
    data=GaussianData(),
    model=Gan1dModel(),
    train=TrainConfig(epochs=30, batch_size=128, learning_rate=5e-4),
)

# The quality bar, declared once: the slow tests and the README's table follow it.
EXPECTED = {"mean_error": ("<=", 0.1), "std_ratio": ("between", 0.8, 1.2), "d_mid": ("between", 0.4, 0.6)}
EXPECTED_TIME_S = 16  # a default run, whole command, on the README's machine (kexp check)
# Small settings at which the README's test command runs it (its bars need the defaults: kexp check).
SMOKE_SETTINGS = {"train.epochs": 2, "data.num_samples": 2048}


def run(config: ExperimentConfig, harness: Harness) -> dict[str, float]:
    """Trains the GAN and measures the generated distribution and D."""
    import keras
    import numpy as np

    from kexp.study import plots
    from kexp.models import (
        GAN,
        discriminator_probability,
        gan_1d_discriminator,
        gan_1d_generator,
    )

    d, m = config.data, config.model
    rng = np.random.default_rng(config.train.seed)
    real = rng.normal(d.mu, d.sigma, size=(d.num_samples, 1)).astype("float32")
    grid = np.linspace(d.mu - 4 * d.sigma, d.mu + 4 * d.sigma, 400, dtype="float32")
    noise = rng.uniform(-1, 1, size=(10_000, m.noise_dim)).astype("float32")

    def build():
        # Uncompiled: the harness gives it two optimizers of train.optimizer.
        return GAN(gan_1d_generator(m.noise_dim, 1, hidden=m.g_hidden), gan_1d_discriminator(1, hidden=m.d_hidden),
                   d_steps=m.d_steps, noise="uniform", name="gan_1d")

    snapshots = []

    def snapshot(title, gan, epoch):
        samples = gan.generator.predict(noise, batch_size=4096, verbose=0)[:, 0]
        d_of_x = np.asarray(discriminator_probability(gan.discriminator, grid[:, None]))[:, 0]
        snapshots.append((title, grid, samples, d_of_x))
        # Also alone, at its epoch: TensorBoard's Images tab steps through training.
        harness.log_figure("gan_1d_along_training", plots.gan_1d_figure(snapshots[-1:], d.mu, d.sigma), step=epoch,
                           filename=f"gan_1d_along_training/epoch_{epoch:03d}.png")

    epochs = config.train.epochs
    middle = max(1, epochs // 2)
    # Epoch-indexed, so that a resumed run (which starts past epoch 0) does
    # not label its restored generator "start".
    recorder = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: snapshot("start", recorder.model, 0) if epoch == 0 else None,
        on_epoch_end=lambda epoch, logs: snapshot(f"middle (epoch {middle})", recorder.model, middle)
        if epoch + 1 == middle else None,
    )
    gan = harness.fit(build, (real,), callbacks=[recorder], optimizer_options={"beta_1": m.beta_1})
    snapshot(f"end (epoch {epochs})", gan, epochs)
    harness.log_figure("gan_1d", plots.gan_1d_figure(snapshots, d.mu, d.sigma))

    samples = snapshots[-1][2]
    low, high = np.quantile(real, [0.05, 0.95])
    central = real[(real >= low) & (real <= high)][:, None]
    return {
        "mean_error": float(abs(samples.mean() - d.mu) / d.sigma),
        "std_ratio": float(samples.std() / d.sigma),
        "d_mid": float(np.mean(discriminator_probability(gan.discriminator, central))),
    }
