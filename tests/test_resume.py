"""Crash, interrupt and resume with real processes and real signals.

Each `python -m kexp` process spends about 10 s of CPU importing TensorFlow,
so the tests start as few as the behaviour under test needs: a process is
started only to be signalled or killed. Resumes and the uninterrupted
reference runs run in this process: `kexp.run(resume=...)` (the same
`run_experiment` the command calls), and the command's own `run --resume`
once, on the killed run, through its `main()` (`run_cli_here`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from helpers import finish, read_events, run_cli_here, signal_at, start_run

import kexp
from kexp.store import checkpoint

# lstm_sine at small settings: 52 steps (about 0.3 s) per epoch on 2 cores,
# long enough for a signal sent as an epoch begins to land inside it.
QUICK = ["--set", "data.train_range=0,200"]
# Bit-for-bit comparisons need TensorFlow's deterministic ops.
EXACT = [*QUICK, "--set", "train.deterministic=true"]


def _only_run(logdir: Path, name: str = "lstm_sine") -> Path:
    runs = list((logdir / name).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def _history_epochs(run_dir: Path, fit: str = "") -> list[int]:
    lines = (run_dir / fit / "history.csv").read_text().strip().splitlines()
    return [int(line.split(",")[0]) for line in lines[1:]]


def _as_overrides(args: list[str]) -> list[str]:
    """`["--set", "a=1", "--set", "b=2"]` -> `["a=1", "b=2"]` (for `kexp.run`)."""
    return args[1::2]


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    """Only the killed run is a process of its own (SIGKILL is the point): the command's `run --resume` runs its
    `main()` here (it was a second process), and the uninterrupted reference runs here (the same `run_experiment`).

    float32 is set in the killed run's config (the command's default policy): the resume, which takes no
    overrides, then trains under it whatever global dtype policy an earlier test of this worker left.
    """
    killed_logs, whole_logs = tmp_path / "killed", tmp_path / "whole"
    proc = start_run("lstm_sine", "--logdir", str(killed_logs), "--set", "train.epochs=4", *EXACT,
                     "--set", "train.precision=float32")
    signal_at(proc, "Epoch 3/4", signal.SIGKILL)
    assert finish(proc)[0] == -signal.SIGKILL
    run_dir = _only_run(killed_logs)
    state_file = checkpoint.state_path(run_dir / "backup" / "model")
    assert checkpoint.load(state_file).epochs_done == 2  # epoch 3 was in progress
    assert not (run_dir / "results.json").exists()

    from tensorflow.python.framework import config as tf_config

    assert not tf_config.is_op_determinism_enabled()
    resumed = run_cli_here("run", "lstm_sine", "--resume", str(run_dir))
    # A deterministic run turns op determinism off again: this worker's later tests (a user's later fits) run
    # TensorFlow's usual ops.
    assert not tf_config.is_op_determinism_enabled()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.strip().splitlines()[-1] == f"run_dir: {run_dir}"
    assert "Epoch 1/4" not in resumed.stdout and "Epoch 3/4" in resumed.stdout
    whole = kexp.run("lstm_sine", ["train.epochs=4", *_as_overrides(EXACT), "train.precision=float32"],
                     logdir=whole_logs, verbose=0)
    assert not tf_config.is_op_determinism_enabled()
    assert whole["status"] == "ok"
    whole_dir = Path(whole["run_dir"])

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


def _stop_cleanly(signum: int, code: int, name: str, args: list[str], loss_tag: str, logdir: Path) -> tuple[Path, int]:
    """Signals a 4-epoch run as its epoch 3 begins; checks the clean stop; returns its folder and epochs done."""
    proc = start_run(name, "--logdir", str(logdir), "--set", "train.epochs=4", *args)
    signal_at(proc, "Epoch 3/4", signum)
    returncode, out, err = finish(proc)
    assert returncode == code, err[-3000:]
    assert "Traceback" not in err
    run_dir = _only_run(logdir, name)
    assert out.strip().splitlines()[-1] == f"run_dir: {run_dir}"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted"
    done = checkpoint.load(checkpoint.state_path(run_dir / "backup" / "model")).epochs_done
    assert 2 <= done < 4
    # Keras printed the cut-short epoch's line as if whole: the command says it was dropped, and how to resume.
    said, resume = err.strip().splitlines()[-2:]
    signal_name = signal.Signals(signum).name
    assert said in (f"kexp: interrupted ({signal_name}) in epoch {done + 1}; that epoch is dropped (its last "
                    "progress line above is not kept) and trains again on resume",
                    f"kexp: interrupted ({signal_name}); every completed epoch is saved"), err[-2000:]
    assert resume == f"kexp: resume with: kexp run {name} --resume {run_dir}"
    # The cut-short epoch left no history row and no TensorBoard point.
    assert _history_epochs(run_dir) == list(range(done))
    assert [s for s, _ in read_events(run_dir / "train")[loss_tag]] == list(range(done))
    return run_dir, done


def _resume_here(name: str, run_dir: Path, loss_tag: str) -> dict:
    """Resumes a run in this process and checks it finished all 4 epochs, logged once each."""
    results = kexp.run(name, resume=run_dir, logdir=run_dir.parent.parent, verbose=0)
    assert results["status"] == "ok"
    assert json.loads((run_dir / "results.json").read_text())["status"] == "ok"
    assert _history_epochs(run_dir) == list(range(4))
    assert [s for s, _ in read_events(run_dir / "train")[loss_tag]] == list(range(4))
    return results


def test_sigint_stops_cleanly_and_resume_finishes(tmp_path):
    """The resume runs in this process: the command's resume is checked on the killed run above."""
    run_dir, _ = _stop_cleanly(signal.SIGINT, 130, "lstm_sine", QUICK, "epoch_loss", tmp_path)
    _resume_here("lstm_sine", run_dir, "epoch_loss")


def test_sigterm_stops_a_gan_cleanly_and_it_resumes_with_both_optimizers_state(tmp_path):
    """SIGTERM's clean stop and the GAN's resume share one process start (was one run for each).

    200 steps an epoch in calls of 20; D takes d_steps=2 updates per step, G one.
    """
    args = ["--set", "data.num_samples=25600", "--set", "train.steps_per_execution=20"]
    run_dir, done = _stop_cleanly(signal.SIGTERM, 143, "gan_gaussian_1d", args, "epoch_d_loss", tmp_path)
    state_file = checkpoint.state_path(run_dir / "backup" / "model")
    saved = checkpoint.load(state_file)
    iterations = {saved.names[k]: int(v) for k, v in saved.arrays.items() if saved.names[k].endswith("/iteration")}
    assert sorted(iterations.values())[-2:] == [200 * done, 400 * done], iterations

    results = _resume_here("gan_gaussian_1d", run_dir, "epoch_d_loss")
    final = checkpoint.load(state_file)
    iterations = {final.names[k]: int(v) for k, v in final.arrays.items() if final.names[k].endswith("/iteration")}
    # Both counters went on from the restored values, not from zero.
    assert sorted(iterations.values())[-2:] == [800, 1600], iterations
    assert results["metrics"]["mean_error"] < 0.5  # 4 epochs: moving toward the data, not collapsed


def test_second_sigint_exits_at_once(tmp_path):
    # One compiled call covers a whole 333-step epoch (seconds, and its tracing before it: the signals come as
    # epoch 1 begins, so no epoch is trained before them), so the first SIGINT alone would wait for it; the
    # second must not.
    proc = start_run("lstm_sine", "--logdir", str(tmp_path), "--set", "train.epochs=3", "--set", "data.train_range=0,1100",
                     "--set", "train.steps_per_execution=1000")
    signal_at(proc, "Epoch 1/3", signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    returncode, out, err = finish(proc, timeout=30)
    assert returncode == 130
    assert "Traceback" not in err
    # It did not wait to write results: the process ended in the middle of the call.
    assert not (_only_run(tmp_path) / "results.json").exists()
    assert "Epoch 2/3" not in out and "Epoch 3/3" not in out


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


def test_runs_ended_out_of_order_put_back_the_callers_signal_handlers(logdir):
    """Run b opened inside run a, a ended first (a library holding both, say): b's end raised `OSError: [Errno 9]`
    restoring a's closed wakeup socket. Both end `ok` and the caller's handlers and wakeup fd come back."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    wakeup_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_fd)
    first, second = (kexp.open_run(name, logdir=logdir, verbose=0) for name in ("a", "b"))
    runs = [first.__enter__(), second.__enter__()]
    first.__exit__(None, None, None)
    assert signal.getsignal(signal.SIGINT) is not handlers[signal.SIGINT]  # b is still open: its handler holds
    second.__exit__(None, None, None)
    assert [run.results["status"] for run in runs] == ["ok", "ok"]
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers
    assert signal.set_wakeup_fd(wakeup_fd) == wakeup_fd
