"""Two worker processes train lstm_sine together under MultiWorkerMirroredStrategy on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import read_events


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_two_workers_train_lstm_sine_and_only_the_chief_writes(tmp_path: Path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    logdir = tmp_path / "logs"
    workers = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            # One CPU device per process: two replicas in all, one per worker.
            "KEXP_CPU_DEVICES": "1",
            # Each worker gets one core's worth of threads, as on two machines.
            "TF_NUM_INTRAOP_THREADS": "1",
            "TF_NUM_INTEROP_THREADS": "1",
        }
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "kexp", "run", "lstm_sine", "--strategy", "multi_worker",
             "--logdir", str(logdir), "--set", "train.epochs=20", "--set", "train.batch_size=16"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = []
    deadline = time.monotonic() + 420
    try:
        for proc in workers:
            out, err = proc.communicate(timeout=max(1, deadline - time.monotonic()))
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for index, (code, out, err) in enumerate(outputs):
        assert code == 0, f"worker {index}: {err[-3000:]}"

    # Only the chief (worker 0) made a run folder; the other left nothing.
    runs = list((logdir / "lstm_sine").iterdir())
    assert len(runs) == 1, runs
    run_dir = runs[0]
    assert outputs[0][1].strip().splitlines()[-1] == f"run_dir: {run_dir}"
    assert list(logdir.rglob("*worker*")) == []
    results = json.loads((run_dir / "results.json").read_text())
    assert results["strategy"] == "multi_worker"
    assert results["num_replicas"] == 2
    assert results["status"] == "ok"
    # The quality bar of the default run.
    assert results["metrics"]["rollout_mse"] <= 1e-3
    assert results["metrics"]["test_mse"] <= 1e-3
    train = read_events(run_dir / "train")
    assert [step for step, _ in train["epoch_loss"]] == list(range(20))
    # Both workers trained every step: the other reports the same test loss.
    assert "test_mse" in outputs[1][1]
