"""Two worker processes train lstm_sine together under MultiWorkerMirroredStrategy on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import read_events

from kexp.cli.workers import free_ports
from kexp.store import checkpoint
from kexp import quality, registry


def _start_workers(tmp_path: Path, *args: str) -> list[subprocess.Popen]:
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            # One CPU device per process: two replicas in all, one per worker.
            "KEXP_CPU_DEVICES": "1",
            # Each worker gets one core's worth of threads, as on two machines.
            "TF_NUM_INTRAOP_THREADS": "1",
            "TF_NUM_INTEROP_THREADS": "1",
        }
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "kexp", "run", "lstm_sine", "--strategy", "multi_worker", *args],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    return workers


def _wait_all(workers: list[subprocess.Popen], timeout: float = 420) -> list[tuple[int, str, str]]:
    outputs = []
    deadline = time.monotonic() + timeout
    try:
        for proc in workers:
            out, err = proc.communicate(timeout=max(1, deadline - time.monotonic()))
            outputs.append((proc.returncode, out, err))
    finally:
        _kill_all(workers)
    return outputs


def _kill_all(workers: list[subprocess.Popen]) -> None:
    for proc in workers:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


EPOCHS = 10
# lstm_sine's ranges, 16 per replica (32 a step in all, the default run's batch) and a faster learning rate:
# its quality bars hold after ten epochs (a default run takes 30 at 1e-3). mixed_bfloat16, what lstm_sine's `auto`
# picks on a CPU with native bfloat16, on every CPU: the workers gather its bfloat16 forecasts (a collective op
# that takes no bfloat16; kexp.engine.compat).
SETTINGS = ("--set", f"train.epochs={EPOCHS}", "--set", "train.batch_size=16", "--set", "train.learning_rate=3e-3",
            "--set", "train.precision=mixed_bfloat16")


@pytest.mark.slow
def test_killed_workers_resume_together_from_the_chiefs_state_and_only_the_chief_writes(tmp_path: Path):
    """Killed workers resume from the chief's state; the finished run shows only the chief wrote.

    One test, so that one cluster's run (killed, then resumed) proves both: starting two more
    worker processes for an uninterrupted run would assert nothing this run does not.
    """
    logdir = tmp_path / "logs"
    workers = _start_workers(tmp_path, "--logdir", str(logdir), *SETTINGS)
    try:
        deadline = time.monotonic() + 300
        for line in workers[0].stdout:  # type: ignore[union-attr]
            if line.startswith(f"Epoch 3/{EPOCHS}"):
                break
            assert time.monotonic() < deadline, "no epoch 3 in time"
        else:
            pytest.fail(f"chief ended early: {workers[0].stderr.read()[-2000:]}")  # type: ignore[union-attr]
    finally:
        _kill_all(workers)  # SIGKILL both, as when the machines go down
    # Only the chief (worker 0) made a run folder; the other left nothing.
    runs = list((logdir / "lstm_sine").iterdir())
    assert len(runs) == 1, runs
    run_dir = runs[0]
    assert checkpoint.load(checkpoint.state_path(run_dir / "backup" / "model")).epochs_done == 2

    # The resume is one command: `--workers 2` starts both workers on this machine, as the pair above was.
    resumed = subprocess.run([sys.executable, "-m", "kexp", "run", "lstm_sine", "--strategy", "multi_worker",
                              "--workers", "2", "--resume", str(run_dir)], cwd=tmp_path, capture_output=True,
                             text=True, timeout=420, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    outputs = [(0, resumed.stdout, resumed.stderr), (0, (run_dir / "workers" / "worker-1.log").read_text(), "")]
    assert "kexp: started 2 workers on 127.0.0.1" in resumed.stderr
    for index, (code, out, err) in enumerate(outputs):
        assert f"Epoch 1/{EPOCHS}" not in out and f"Epoch {EPOCHS}/{EPOCHS}" in out  # both went on from epoch 3
    # Still the one folder: the resumed run, too, is written by the chief alone.
    assert list((logdir / "lstm_sine").iterdir()) == [run_dir]
    assert sorted(p.name for p in (run_dir / "workers").iterdir()) == ["worker-1.log"]
    assert outputs[0][1].strip().splitlines()[-1] == f"run_dir: {run_dir}"
    assert outputs[1][1].strip().splitlines()[-1].startswith("run_dir: none (not the chief worker")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["strategy"] == "multi_worker"
    assert results["num_replicas"] == 2
    assert results["status"] == "ok"
    # lstm_sine's declared bars (registry, not copied here) hold at these settings too, across the kill.
    assert quality.failures(registry.load("lstm_sine").EXPECTED, results["metrics"]) == []
    assert [step for step, _ in read_events(run_dir / "train")["epoch_loss"]] == list(range(EPOCHS))
    assert (run_dir / "history.csv").read_text().count("\n") == EPOCHS + 1  # header and every epoch
    # Both workers trained the same model in step: the other reports the same test loss.
    assert f"test_mse: {results['metrics']['test_mse']:.6g}" in outputs[1][1]


@pytest.mark.slow
def test_workers_2_starts_a_local_cluster_whose_workers_score_every_held_out_example(tmp_path: Path):
    """`--workers 2`: one command, two workers, one run folder. Each worker scores all four XOR points:
    a sharded evaluation scored two each, and the chief reported its half (accuracy 0 where the model has
    0.5, the other worker 1)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-m", "kexp", "run", "xor", "--strategy", "multi_worker", "--workers",
                           "2", "--set", "train.epochs=2", "--logdir", str(tmp_path / "logs")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=420, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "xor").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["num_replicas"] == 2 and results["strategy"] == "multi_worker"
    other = (run_dir / "workers" / "worker-1.log").read_text()
    import kexp
    import numpy as np

    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], "float32")
    single, two = (float(((kexp.load_model(run_dir, fit=fit).predict(x, verbose=0).ravel() > 0.5)
                          == np.array([0, 1, 1, 0])).mean()) for fit in ("single_layer", "two_layer"))
    assert results["metrics"] == {"single_layer_accuracy": single, "two_layer_accuracy": two}
    assert f"single_layer_accuracy: {single:.6g}" in other and f"two_layer_accuracy: {two:.6g}" in other
    refused = subprocess.run([sys.executable, "-m", "kexp", "run", "xor", "--workers", "2"], capture_output=True,
                             text=True, timeout=60, env=env, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr == ("kexp: error: --workers 2: starts a multi-worker cluster on "
                                                          "this machine; allowed: --workers with --strategy "
                                                          "multi_worker\n")
