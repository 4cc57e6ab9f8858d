"""The command line: list, show, and bad input that exits 2 leaving nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli


def test_list_names_experiments_without_importing_tensorflow():
    code = (
        "import sys; from kexp.cli import main; rc = main(['list']); "
        "assert rc == 0; "
        "assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules), 'TF imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert "lstm_sine" in names
    descriptions = dict(line.split(None, 1) for line in lines)
    assert descriptions["lstm_sine"].startswith("LSTM forecasts sin(x)")


def test_show_prints_resolved_config_with_overrides():
    proc = run_cli("show", "lstm_sine", "--set", "train.epochs=3")
    assert proc.returncode == 0, proc.stderr
    assert "train.epochs = 3  #" in proc.stdout
    assert "data.feature_length = 32" in proc.stdout


BAD_INPUTS = [
    (["run", "lstm_sin"], "unknown experiment 'lstm_sin'; did you mean lstm_sine?"),
    (["run", "lstm_sine", "--set", "train.epoch=3"], "unknown key 'train.epoch'; valid keys of train:"),
    (["run", "lstm_sine", "--set", "train.epochs=x"], "train.epochs: received 'x'; allowed: an integer"),
    (["run", "lstm_sine", "--set", "train.epochs=0"], "train.epochs: received 0; allowed: a value >= 1"),
    (["run", "lstm_sine", "--set", "train.learning_rate=-1"], "train.learning_rate: received -1.0"),
    (["run", "lstm_sine", "--set", "train.batch_size=0"], "train.batch_size: received 0"),
    (["run", "lstm_sine", "--set", "nonsense"], "expected key=value"),
    (["run", "lstm_sine", "--strategy", "tpu"], "argument --strategy: invalid choice: 'tpu'"),
    (["run", "lstm_sine", "--strategy", "multi_worker"], "--strategy multi_worker needs TF_CONFIG"),
    (["show", "nope"], "unknown experiment 'nope'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_no_run_folder(args, message, logdir):
    env = {"TF_CONFIG": ""}
    extra = ["--logdir", str(logdir)] if args[0] == "run" else []
    proc = run_cli(*args, *extra, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert list(logdir.rglob("*")) == []


def test_unwritable_logdir_exits_2(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = run_cli("run", "lstm_sine", "--set", "train.epochs=1", "--logdir", str(blocker / "logs"))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("kexp: error: --logdir "), proc.stderr
    assert "not writable" in lines[-1]


def test_diverged_run_exits_1_with_status_diverged(logdir):
    proc = run_cli(
        "run", "lstm_sine", "--logdir", str(logdir), "--set", "train.optimizer=sgd",
        "--set", "train.learning_rate=1e9", "--set", "train.epochs=3", "--set", "model.units=8",
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "status: diverged" in proc.stdout
    run_dir = Path(proc.stdout.strip().splitlines()[-1].removeprefix("run_dir: "))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "diverged"
    assert results["metrics"]["rollout_mse"] is None  # NaN is written as null
