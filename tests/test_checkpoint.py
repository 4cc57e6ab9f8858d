"""The per-epoch state file and the epoch-seeded data order that make resume exact."""

from __future__ import annotations

import numpy as np
import pytest

from kexp.store import checkpoint
from kexp.config import TrainConfig
from kexp.errors import UsageError


def _gan():
    from kexp.models import GAN, gan_1d_discriminator, gan_1d_generator

    gan = GAN(gan_1d_generator(4, 1, hidden=(8,)), gan_1d_discriminator(1, hidden=(8,)), d_steps=2)
    gan.compile()
    return gan


def test_gan_state_round_trip_restores_weights_and_both_optimizers(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    trained = _gan()
    trained.fit(np.random.default_rng(0).normal(size=(64, 1)).astype("float32"), batch_size=16, epochs=1, verbose=0)
    assert int(trained.d_optimizer.iterations) == 8 and int(trained.g_optimizer.iterations) == 4
    checkpoint.save(tmp_path, trained, epochs_done=1, epochs=3)

    fresh = _gan()
    state = checkpoint.load(checkpoint.state_path(tmp_path))
    assert state.epochs_done == 1
    checkpoint.restore(fresh, state, "test")
    assert int(fresh.d_optimizer.iterations) == 8 and int(fresh.g_optimizer.iterations) == 4
    for ours, theirs in zip(fresh.variables, trained.variables):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    for ours, theirs in zip(fresh.d_optimizer.variables + fresh.g_optimizer.variables,
                            trained.d_optimizer.variables + trained.g_optimizer.variables):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_state_file_is_replaced_whole_and_leaves_no_temp_files(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    for epoch in (1, 2, 3):
        checkpoint.save(tmp_path, model, epochs_done=epoch, epochs=3)
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]
    assert checkpoint.load(tmp_path / "state.npz").epochs_done == 3


def test_torn_state_file_is_a_usage_error(tmp_path):
    path = tmp_path / "state.npz"
    path.write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(UsageError, match="is not a readable kexp training state"):
        checkpoint.load(path)


@pytest.mark.parametrize("header", [[1, 2], "text", 3, None])
def test_state_file_whose_header_is_not_an_object_is_a_usage_error(tmp_path, header):
    import json

    path = tmp_path / "state.npz"
    np.savez(path, __kexp_state__=np.array(json.dumps(header)))
    with pytest.raises(UsageError, match="is not a readable kexp training state \\(header is a JSON"):
        checkpoint.load(path)


def test_epoch_order_depends_only_on_seed_and_epoch():
    import tensorflow as tf

    from kexp.engine.harness import Harness

    x = np.arange(50, dtype="float32")
    harness = Harness("unused", TrainConfig(batch_size=8, seed=3), tf.distribute.get_strategy(), "default")

    def batches(ds):
        return [b[0].numpy().tolist() for b in ds]

    stream = batches(harness.dataset((x, x), training=True, epochs=(0, 3)))  # 7 batches an epoch
    assert len(stream) == 21
    epochs = [sorted(sum(stream[i * 7:(i + 1) * 7], [])) for i in range(3)]
    assert all(e == x.tolist() for e in epochs)  # each epoch is a permutation of all examples
    assert stream[:7] != stream[7:14]  # reshuffled every epoch
    # A stream that starts at epoch 2 (a resumed fit) and a per-epoch pipeline
    # set to epoch 2 both yield what the uninterrupted stream did.
    assert batches(harness.dataset((x, x), training=True, epochs=(2, 3))) == stream[14:]
    per_epoch = harness.dataset((x, x), training=True)
    harness.data_epoch.assign(2)
    assert batches(per_epoch) == stream[14:]
    assert batches(per_epoch) == stream[14:]  # the same epoch again: the same order


@pytest.mark.parametrize("steps, expected", [(16, 16), (52, 52), (600, 100), (240, 80), (313, 100), (2 * 7 * 13, 91)])
def test_auto_steps_per_execution_prefers_a_divisor_of_the_epoch(steps, expected):
    from kexp.engine import speed

    assert speed.steps_per_execution(TrainConfig(), steps, num_replicas=1) == expected
    assert speed.steps_per_execution(TrainConfig(), steps, num_replicas=2) == 1


def test_an_interrupted_gan_resumes_to_the_bits_of_an_uninterrupted_one(logdir):
    """The noise seed is state too: a resumed GAN draws the noise the uninterrupted one drew.

    One D step per batch (d_steps=1; it was 2): each batch still draws noise twice, and tracing the three runs'
    train steps is most of this test's time. test_resume's SIGTERM GAN test resumes d_steps=2 (D's counter at
    twice G's).
    """
    import keras

    import kexp
    from kexp.models import GAN, dcgan_discriminator, dcgan_generator

    real = np.random.default_rng(0).uniform(-1, 1, (100, 8, 8, 1)).astype("float32")

    def build():
        return GAN(dcgan_generator(8, 1, noise_dim=8, base_filters=4), dcgan_discriminator(8, 1, base_filters=4),
                   d_steps=1)

    class StopAtEpoch2(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    # 7 batches an epoch (the last of 4) in calls of 3: fused, with a short last call.
    train = TrainConfig(epochs=4, batch_size=16, steps_per_execution=3)
    with pytest.raises(KeyboardInterrupt):
        with kexp.open_run("gan_resume", logdir=logdir, train=train, verbose=0) as run:
            run.fit(build, (real,), callbacks=[StopAtEpoch2()])
    assert checkpoint.load(checkpoint.state_path(run.run_dir / "backup" / "model")).epochs_done == 2
    with kexp.open_run("gan_resume", logdir=logdir, train=train, verbose=0, resume=run.run_dir) as run:
        resumed = run.fit(build, (real,))
    assert run.fit_settings["model"]["fused_steps"] is True
    with kexp.open_run("gan_whole", logdir=logdir, train=train, verbose=0) as run:
        whole = run.fit(build, (real,))
    assert int(resumed.g_optimizer.iterations) == int(whole.g_optimizer.iterations) == 4 * 7
    for a, b in zip(resumed.variables + resumed.d_optimizer.variables + resumed.g_optimizer.variables,
                    whole.variables + whole.d_optimizer.variables + whole.g_optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
