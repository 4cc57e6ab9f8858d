"""A run's figures and text sit at its root, with its HParams session: one TensorBoard run fewer (issue 25).

TensorBoard's run selector lists every folder with event files; with a
separate `plots/` folder each run showed four times, and with many runs
TensorBoard unticks some and its Images page looks empty. These tests read
the folders through TensorBoard's own multiplexer, and resume real runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import read_events, run_cli_here

import kexp
from kexp.engine.outputs import SummaryWriter
from kexp.store import fitlogs


def _multiplexer(logdir: Path):
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return multiplexer


def _tags(multiplexer, plugin: str, run: str) -> set[str]:
    return set(multiplexer.PluginRunToTagToContent(plugin).get(run, {}))


def test_a_one_fit_run_is_three_tensorboard_runs_with_its_figures_and_text_at_the_root(tmp_path: Path):
    import tensorflow as tf

    results = kexp.run("lstm_sine", {"train.epochs": 1, "model.units": 8}, logdir=tmp_path, verbose=0)
    root = Path(results["run_dir"]).relative_to(tmp_path).as_posix()

    multiplexer = _multiplexer(tmp_path)
    assert set(multiplexer.Runs()) == {root, f"{root}/train", f"{root}/validation"}
    assert not (tmp_path / root / "plots").exists()
    # The root run is the HParams session and holds the figures, the text and the final metrics.
    assert {"_hparams_/session_start_info", "_hparams_/session_end_info"} <= _tags(multiplexer, "hparams", root)
    assert "forecast" in _tags(multiplexer, "images", root)
    assert {"config", "model_summary/model"} <= _tags(multiplexer, "text", root)
    assert "metrics/test_mse" in _tags(multiplexer, "scalars", root)
    (forecast,) = multiplexer.Tensors(root, "forecast")
    width, height, png = tf.make_ndarray(forecast.tensor_proto)
    assert int(width) > 100 and int(height) > 100 and png[:8] == b"\x89PNG\r\n\x1a\n"
    (config,) = multiplexer.Tensors(root, "config")
    assert "| train.epochs | 1 |" in tf.make_ndarray(config.tensor_proto).item().decode()
    (summary,) = multiplexer.Tensors(root, "model_summary/model")
    assert "Total params" in tf.make_ndarray(summary.tensor_proto).item().decode()


class _SamplesThenStop(keras.callbacks.Callback):
    """Logs a text sample at step = epoch (as char_rnn and the GANs do); raises KeyboardInterrupt after `stop_after`.

    It runs before the state is saved, as a caller's callback does: the
    interrupted epoch's sample is logged, its state is not.
    """

    def __init__(self, harness, stop_after: int | None = None) -> None:
        super().__init__()
        self.harness, self.stop_after = harness, stop_after

    def on_epoch_end(self, epoch, logs=None):
        self.harness.log_text("samples", f"epoch {epoch}", step=epoch, filename=f"samples/{epoch}.txt")
        if epoch == self.stop_after:
            raise KeyboardInterrupt


def _dense():
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])


def test_resume_replaces_the_roots_repeated_epoch_and_keeps_its_step_0_records(logdir: Path, tmp_path: Path):
    x = np.linspace(-1, 1, 64, dtype="float32")[:, None]
    train = kexp.TrainConfig(epochs=4, batch_size=16)
    with pytest.raises(KeyboardInterrupt):
        with kexp.open_run("root", logdir=logdir, train=train, verbose=0) as harness:
            harness.fit(_dense, (x, x), (x, x), loss="mse", callbacks=[_SamplesThenStop(harness, stop_after=2)])
    run_dir = harness.run_dir
    assert [step for step, _ in read_events(run_dir)["samples"]] == [0, 1, 2]  # epoch 2 logged, its state not
    # The purge a resume runs on the first fit's folder (the root) cuts train/ and validation/, never the
    # root's own points: with epochs_done = 0 a cut by step would take the config text and the session.
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    root_files = {path.name: path.read_bytes() for path in fitlogs.event_files(copy)}
    fitlogs.truncate(copy, 0)
    assert {path.name: path.read_bytes() for path in fitlogs.event_files(copy)} == root_files
    assert "epoch_loss" not in read_events(copy / "train") and "epoch_loss" not in read_events(copy / "validation")

    with kexp.open_run("root", logdir=logdir, train=train, verbose=0, resume=run_dir) as harness:
        harness.fit(_dense, (x, x), (x, x), loss="mse", callbacks=[_SamplesThenStop(harness)])

    root = read_events(run_dir)
    assert [step for step, _ in root["samples"]] == [0, 1, 2, 3]  # epoch 2's sample written again, once
    assert [step for step, _ in root["config"]] == [0]  # written by the first process only; kept
    assert [step for step, _ in root["model_summary/model"]] == [0]
    assert [step for step, _ in read_events(run_dir / "train")["epoch_loss"]] == [0, 1, 2, 3]
    multiplexer = _multiplexer(logdir)
    root_run = f"root/{run_dir.name}"
    assert set(multiplexer.Runs()) == {root_run, f"{root_run}/train", f"{root_run}/validation"}
    assert {"_hparams_/session_start_info", "_hparams_/session_end_info"} <= _tags(multiplexer, "hparams", root_run)


def test_a_resumed_run_of_the_old_layout_keeps_its_figures_and_text_in_plots(logdir: Path):
    train = kexp.TrainConfig(epochs=1)
    with pytest.raises(KeyboardInterrupt):
        with kexp.open_run("old", logdir=logdir, train=train, verbose=0) as harness:
            # What kexp wrote before issue 25: figures and text in RUN_DIR/plots, a TensorBoard run of its own.
            harness._images = SummaryWriter(harness.run_dir / "plots")
            harness.log_text("samples", "first", step=1)
            raise KeyboardInterrupt
    run_dir = harness.run_dir

    with kexp.open_run("old", logdir=logdir, train=train, verbose=0, resume=run_dir) as harness:
        harness.log_text("samples", "again", step=1)
        harness.log_text("samples", "next", step=2)

    plots = read_events(run_dir / "plots")
    assert plots["samples"] == [(1, "```\nagain\n```"), (2, "```\nnext\n```")]
    assert "samples" not in read_events(run_dir)
    root = f"old/{run_dir.name}"
    multiplexer = _multiplexer(logdir)
    assert set(multiplexer.Runs()) == {root, f"{root}/plots"}
    assert "_hparams_/session_end_info" in _tags(multiplexer, "hparams", root)
    listing = run_cli_here("runs", "--logdir", str(logdir))
    assert listing.returncode == 0, listing.stderr
    assert run_dir.name in listing.stdout
