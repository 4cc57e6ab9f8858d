"""Crash, interrupt and resume with real processes and real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import finish, read_events, run_cli, signal_at, start_run

from kexp import checkpoint

# lstm_sine at small settings: 52 steps (about 0.3 s) per epoch on 2 cores,
# long enough for a signal sent as an epoch begins to land inside it.
SMALL = ["--set", "data.train_range=0,200", "--set", "train.deterministic=true"]


def _only_run(logdir: Path, name: str = "lstm_sine") -> Path:
    runs = list((logdir / name).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def _history_epochs(run_dir: Path, fit: str = "") -> list[int]:
    lines = (run_dir / fit / "history.csv").read_text().strip().splitlines()
    return [int(line.split(",")[0]) for line in lines[1:]]


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    killed_logs, whole_logs = tmp_path / "killed", tmp_path / "whole"
    proc = start_run("lstm_sine", "--logdir", str(killed_logs), "--set", "train.epochs=4", *SMALL)
    signal_at(proc, "Epoch 3/4", signal.SIGKILL)
    assert finish(proc)[0] == -signal.SIGKILL
    run_dir = _only_run(killed_logs)
    state_file = checkpoint.state_path(run_dir / "backup" / "model")
    assert checkpoint.load(state_file).epochs_done == 2  # epoch 3 was in progress
    assert not (run_dir / "results.json").exists()

    resumed = run_cli("run", "lstm_sine", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.strip().splitlines()[-1] == f"run_dir: {run_dir}"
    assert "Epoch 1/4" not in resumed.stdout and "Epoch 3/4" in resumed.stdout
    whole = run_cli("run", "lstm_sine", "--logdir", str(whole_logs), "--set", "train.epochs=4", *SMALL)
    assert whole.returncode == 0, whole.stderr[-3000:]
    whole_dir = _only_run(whole_logs)

    # Deterministic ops on CPU, the same batches in the same order and the
    # same restored optimizer state: the runs agree bit for bit.
    ours, theirs = checkpoint.load(state_file), checkpoint.load(checkpoint.state_path(whole_dir / "backup" / "model"))
    assert ours.epochs_done == theirs.epochs_done == 4
    assert ours.arrays.keys() == theirs.arrays.keys()
    for key in ours.arrays:
        np.testing.assert_array_equal(ours.arrays[key], theirs.arrays[key], err_msg=ours.names[key])
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert results["metrics"] == json.loads((whole_dir / "results.json").read_text())["metrics"]

    # One TensorBoard point and one history row per epoch, across both processes.
    losses = read_events(run_dir / "train")["epoch_loss"]
    assert [step for step, _ in losses] == [0, 1, 2, 3]
    whole_losses = read_events(whole_dir / "train")["epoch_loss"]
    assert losses == whole_losses
    assert _history_epochs(run_dir) == [0, 1, 2, 3]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_cleanly_and_resume_finishes(tmp_path, signum, code):
    proc = start_run("lstm_sine", "--logdir", str(tmp_path), "--set", "train.epochs=6", *SMALL)
    signal_at(proc, "Epoch 3/6", signum)
    returncode, out, err = finish(proc)
    assert returncode == code, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("kexp: interrupted"), err[-2000:]
    run_dir = _only_run(tmp_path)
    assert out.strip().splitlines()[-1] == f"run_dir: {run_dir}"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted"
    done = checkpoint.load(checkpoint.state_path(run_dir / "backup" / "model")).epochs_done
    assert 2 <= done < 6
    # The cut-short epoch left no history row and no TensorBoard point.
    assert _history_epochs(run_dir) == list(range(done))
    assert [s for s, _ in read_events(run_dir / "train")["epoch_loss"]] == list(range(done))

    if signum == signal.SIGTERM:
        return  # resuming is the same after either signal; once is enough for the suite's time
    resumed = run_cli("run", "lstm_sine", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "ok"
    assert _history_epochs(run_dir) == list(range(6))
    assert [s for s, _ in read_events(run_dir / "train")["epoch_loss"]] == list(range(6))


def test_second_sigint_exits_at_once(tmp_path):
    # One compiled call covers a whole 1,000-step epoch (seconds), so the
    # first SIGINT alone would wait for it; the second must not.
    proc = start_run("lstm_sine", "--logdir", str(tmp_path), "--set", "train.epochs=3", "--set", "data.train_range=0,3200",
                  "--set", "train.steps_per_execution=1000")
    signal_at(proc, "Epoch 2/3", signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    returncode, out, err = finish(proc, timeout=30)
    assert returncode == 130
    assert "Traceback" not in err
    # It did not wait to write results: the process ended in the middle of the call.
    assert not (_only_run(tmp_path) / "results.json").exists()
    assert "Epoch 3/3" not in out


def test_gan_resumes_with_both_optimizers_state(tmp_path):
    args = ["--set", "train.epochs=4", "--set", "data.num_samples=25600", "--set", "train.steps_per_execution=20"]
    proc = start_run("gan_gaussian_1d", "--logdir", str(tmp_path), *args)
    signal_at(proc, "Epoch 3/4", signal.SIGKILL)
    finish(proc)
    run_dir = _only_run(tmp_path, "gan_gaussian_1d")
    state_file = checkpoint.state_path(run_dir / "backup" / "model")
    saved = checkpoint.load(state_file)
    assert saved.epochs_done == 2
    iterations = {saved.names[k]: int(v) for k, v in saved.arrays.items() if saved.names[k].endswith("/iteration")}
    # 200 steps per epoch; D takes d_steps=2 updates per step, G one.
    assert sorted(iterations.values())[-2:] == [400, 800], iterations

    resumed = run_cli("run", "gan_gaussian_1d", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = checkpoint.load(state_file)
    iterations = {final.names[k]: int(v) for k, v in final.arrays.items() if final.names[k].endswith("/iteration")}
    # Both counters went on from the restored values, not from zero.
    assert sorted(iterations.values())[-2:] == [800, 1600], iterations
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert results["metrics"]["mean_error"] < 0.5  # 4 epochs: moving toward the data, not collapsed


def test_ctrl_c_before_a_run_folder_exists_says_there_is_nothing_to_resume(tmp_path):
    proc = start_run("lstm_sine", "--logdir", str(tmp_path))
    time.sleep(0.5)  # TensorFlow takes seconds to import: no run folder yet
    proc.send_signal(signal.SIGINT)
    returncode, out, err = finish(proc)
    assert returncode == 130, err[-2000:]
    assert err.strip().splitlines() == ["kexp: interrupted (SIGINT) before a run folder was created; nothing to resume"]
    assert not (tmp_path / "lstm_sine").exists() or not list((tmp_path / "lstm_sine").iterdir())


NOTEBOOK_SCRIPT = '''
import os, signal, sys, time
import keras, numpy as np, kexp
from kexp import TrainConfig

x = np.random.default_rng(0).normal(size=(4096, 8)).astype("float32")


class TwoCtrlC(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the second one must not wait for this


try:
    with kexp.open_run("notebook", logdir=sys.argv[1], train=TrainConfig(epochs=20, batch_size=32), verbose=0) as run:
        run.fit(lambda: keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)]), (x, x[:, :1]), loss="mse",
                callbacks=[TwoCtrlC()])
except KeyboardInterrupt as err:
    print("CAUGHT", type(err).__name__, flush=True)
print("ALIVE", run.results["status"], flush=True)
'''


def test_second_ctrl_c_in_a_library_call_raises_and_keeps_the_interpreter(tmp_path):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", NOTEBOOK_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-2:] == ["CAUGHT KeyboardInterrupt", "ALIVE interrupted"]
    assert time.monotonic() - started < 60
