"""Internal: the three ways `kexp bench` trains a case: the harness, plain `model.fit`, a bare compiled step.

Each returns steady-state examples/s: the median epoch after the first,
which holds tracing and compilation.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kexp.cli.bench import Case


def steady(durations: list[float]) -> float:
    """Returns the median epoch duration after the first (all of them when there is one)."""
    steady = durations[1:] or durations
    return statistics.median(steady)


def losses(history: dict[str, list[float]]) -> list[float]:
    """Returns a fit's per-epoch training losses: `loss`, or a GAN's `d_loss` then `g_loss`."""
    return history["loss"] if "loss" in history else history["d_loss"] + history["g_loss"]


def harness_run(case: Case, epochs: int, logdir: str, shuffle: bool, strategy: str, profile: str | None = None,
                 **train_settings: Any) -> tuple[float, list[float], Any]:
    """Fits the case through `kexp.open_run` and returns (examples/s, per-epoch losses, the fit's settings).

    Args:
        case: The benchmark case.
        epochs: Epochs of the fit.
        logdir: Where the run folder goes.
        shuffle: Reshuffle every epoch.
        strategy: The harness's strategy name.
        profile: Where to trace the last epoch with the profiler (None: no trace).
        **train_settings: Other `TrainConfig` fields (e.g. `precision`).

    Returns:
        The run's steady throughput, its losses and the settings it chose.
    """
    from kexp.config import TrainConfig
    from kexp.cli.profiling import ProfileEpoch
    from kexp.engine.session import open_run

    train = TrainConfig(**{**train_settings, "epochs": epochs, "batch_size": case.batch_size,
                           "learning_rate": case.learning_rate, "shuffle": shuffle})
    with open_run(f"bench_{case.name}", logdir=logdir, train=train, strategy=strategy, verbose=0) as run:
        callbacks = [ProfileEpoch(profile, epoch=epochs - 1)] if profile else []
        model = run.fit(case.build, case.data, loss=case.loss, callbacks=callbacks)
        history = losses(model.history.history)
    # The fit's settings; its own examples_per_s is a measurement, reported once as harness_examples_per_s.
    settings = {key: value for key, value in run.fit_settings["model"].items() if key != "examples_per_s"}
    return run.train_samples_per_s, history, {
        **settings, "num_replicas": run.num_replicas, "global_batch_size": run.global_batch_size,
    }


def baseline_run(case: Case, epochs: int, shuffle: bool = True) -> tuple[float, list[float]]:
    """Fits the case with plain `model.fit` at Keras' defaults; returns (examples/s, per-epoch losses)."""
    import keras

    from kexp.engine.callbacks import EpochTimer

    keras.utils.set_random_seed(0)
    model = case.build_plain()
    case.compile(model, steps_per_execution=1, jit_compile=False)
    timer = EpochTimer()
    history = model.fit(*case.data, batch_size=case.batch_size, epochs=epochs, shuffle=shuffle, verbose=0,
                        callbacks=[timer])
    return len(case.x) / steady(timer.durations), losses(history.history)


def bare_run(case: Case, epochs: int) -> float:
    """Trains the case with a compiled `tf.function` step called per batch; returns examples/s."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = case.build_plain()
    if case.y is None:
        # A GAN's step is its own `train_step` (k discriminator steps, one generator step).
        case.compile(model)
        gan_step = tf.function(model.train_step)

        def step(*batch):
            return gan_step(batch)["g_loss"]
    else:
        optimizer = keras.optimizers.Adam(case.learning_rate)
        loss_fn = keras.losses.get(case.loss) if isinstance(case.loss, str) else case.loss

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(loss_fn(y, model(x, training=True)))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

    ds = tf.data.Dataset.from_tensor_slices(case.data).cache().batch(case.batch_size).prefetch(tf.data.AUTOTUNE)
    durations = []
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in ds:
            loss = step(*batch)
        float(loss)  # wait for the last step
        durations.append(time.perf_counter() - start)
    return len(case.x) / steady(durations)
