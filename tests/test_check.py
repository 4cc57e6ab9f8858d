"""`kexp check` (issue 23): bars met, missed and crashed runs, Ctrl-C, `--list`; and `kexp.quality` itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import finish, run_cli

from kexp import quality

CHECKED = {
    "met_exp": '''
        """Records a score above its bar."""
        from kexp import ExperimentConfig, TrainConfig
        CONFIG = ExperimentConfig(data=None, model=None, train=TrainConfig(epochs=1))
        EXPECTED = {"score": (">=", 0.9), "error": ("between", 0.0, 0.1)}
        EXPECTED_TIME_S = 5
        def run(config, harness):
            return {"score": 0.95 + config.train.seed * 0.0, "error": 0.05}
    ''',
    "missed_exp": '''
        """Records a score below its bar at seed 0, above it at seed 1."""
        from kexp import ExperimentConfig, TrainConfig
        CONFIG = ExperimentConfig(data=None, model=None, train=TrainConfig(epochs=1))
        EXPECTED = {"score": (">=", 0.9)}
        def run(config, harness):
            return {"score": 0.5 if config.train.seed == 0 else 0.99}
    ''',
    "crash_exp": '''
        """Fails while it runs."""
        from kexp import ExperimentConfig, TrainConfig
        CONFIG = ExperimentConfig(data=None, model=None, train=TrainConfig(epochs=1))
        EXPECTED = {"score": (">=", 0.9)}
        def run(config, harness):
            raise RuntimeError("boom in the experiment")
    ''',
    "slow_exp": '''
        """Trains a tiny model for a long time (to be interrupted)."""
        from kexp import ExperimentConfig, TrainConfig
        CONFIG = ExperimentConfig(data=None, model=None, train=TrainConfig(epochs=100000))
        EXPECTED = {"score": (">=", 0.0)}
        def run(config, harness):
            import keras, numpy as np
            x = np.zeros((32, 1), "float32")
            harness.fit(lambda: keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]), (x, x), loss="mse")
            return {"score": 1.0}
    ''',
}


@pytest.fixture
def experiments(tmp_path: Path) -> dict:
    folder = tmp_path / "exps"
    folder.mkdir()
    for name, source in CHECKED.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return {"KEXP_EXPERIMENTS_PATH": str(folder)}


def test_check_reports_met_missed_and_failed_rows_and_exits_1(experiments, logdir):
    proc = run_cli("check", "met_exp", "missed_exp", "crash_exp", "--jobs", "2", "--logdir", str(logdir),
                   env=experiments)
    assert proc.returncode == 1, proc.stderr[-2000:]
    (check_dir,) = logdir.glob("check-*")
    report = json.loads((check_dir / "check.json").read_text())
    results = {(row["experiment"], row["metric"]): (row["result"], row["value"]) for row in report["rows"]}
    assert results == {("met_exp", "score"): ("met", 0.95), ("met_exp", "error"): ("met", 0.05),
                       ("missed_exp", "score"): ("missed", 0.5), ("crash_exp", "score"): ("failed", None)}
    assert report["passed"] is False and report["finished"] is True
    assert "boom in the experiment" in report["experiments"]["crash_exp"]["error"]
    assert "| missed_exp | score | 0.5 | ≥ 0.9 | missed |" in (check_dir / "check.md").read_text()
    assert "| met_exp | score | 0.95 | ≥ 0.9 | met |" in proc.stdout
    # Each run folder stays a normal run folder: kexp runs lists it.
    listed = json.loads(run_cli("runs", "--logdir", str(logdir), "--json", env=experiments).stdout)
    assert {run["experiment"] for run in listed} == {"met_exp", "missed_exp", "crash_exp"}
    assert {report["experiments"][name]["run_dir"] for name in ("met_exp", "missed_exp")} <= {
        run["run_dir"] for run in listed}


def test_check_passes_with_every_bar_met_and_seed_reaches_the_runs(experiments, logdir):
    # missed_exp alone (one child process): it misses its bar at seed 0, meets it at seed 1.
    proc = run_cli("check", "missed_exp", "--seed", "1", "--logdir", str(logdir), "--json", env=experiments)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["passed"] is True and report["seed"] == 1
    assert [(row["experiment"], row["result"], row["value"]) for row in report["rows"]] == [
        ("missed_exp", "met", 0.99)]
    run_dir = Path(report["experiments"]["missed_exp"]["run_dir"])
    assert json.loads((run_dir / "config.json").read_text())["train"]["seed"] == 1


def test_check_list_shows_bars_and_times_without_tensorflow(experiments):
    code = ("import sys; from kexp import cli; code = cli.main(['check', '--list', 'lstm_sine', 'met_exp']); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **experiments})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["lstm_sine", "~8", "s", "rollout_mse", "≤", "1e-3,", "test_mse", "≤", "1e-3"]
    assert lines[1].split()[:3] == ["met_exp", "~5", "s"]


def test_check_refuses_an_unknown_name_with_the_closest_ones(logdir):
    proc = run_cli("check", "lstm_sin", "--logdir", str(logdir))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "kexp: error: unknown experiment 'lstm_sin'; did you mean lstm_sine?"
    assert not list(logdir.iterdir())


def _start_check(experiments: dict, logdir: Path, *names: str) -> subprocess.Popen:
    """Starts `kexp check NAMES` and returns once it says it started the last one."""
    env = {**os.environ, **experiments, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "kexp", "check", *names, "--logdir", str(logdir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:  # type: ignore[union-attr]
        if line.startswith(f"kexp check: started {names[-1]}"):
            break
    return proc


def test_ctrl_c_stops_the_check_cleanly_and_keeps_the_finished_rows(experiments, logdir):
    proc = _start_check(experiments, logdir, "met_exp", "slow_exp")
    slow_folder = None
    while slow_folder is None:  # wait until slow_exp trains (its history has rows)
        slow_folder = next((p for p in (logdir / "slow_exp").glob("*/history.csv")
                            if len(p.read_text().splitlines()) > 2), None) if (logdir / "slow_exp").exists() else None
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc, timeout=180)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err
    report = json.loads(next(logdir.glob("check-*/check.json")).read_text())
    assert report["finished"] is False and report["passed"] is False
    assert {row["experiment"]: row["result"] for row in report["rows"]} == {"met_exp": "met",
                                                                           "slow_exp": "interrupted"}
    # The interrupted run stopped cleanly: resumable.
    assert json.loads((slow_folder.parent / "results.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize("bar, value, met", [
    ((">=", 0.97), 0.97, True), ((">=", 0.97), 0.9699, False), (("<=", 1e-3), 1e-3, True),
    (("<=", 1e-3), 1.1e-3, False), ((">", 0.0), 0.0, False), ((">", 0.0), 1e-9, True), (("<", 1), 1, False),
    (("==", 10), 10.0, True), (("==", 10), 9, False), (("between", 0.8, 1.2), 0.8, True),
    (("between", 0.8, 1.2), 1.21, False), ((">=", 0.0), float("nan"), False), (("<=", 1.0), float("-inf"), False),
    ((">=", 0.0), None, False),
])
def test_meets_each_kind_of_bar(bar, value, met):
    assert quality.meets(bar, value) is met


def test_failures_name_each_missed_or_missing_metric_with_its_bar():
    expected = {"a": (">=", 0.9), "b": ("between", 0.8, 1.2), "c": ("<=", 1e-3)}
    assert quality.failures(expected, {"a": 0.95, "b": 1.0, "c": 1e-4}) == []
    assert quality.failures(expected, {"a": 0.5, "b": 1.0}) == ["a 0.5 (bar ≥ 0.9)", "c None (bar ≤ 1e-3)"]
    assert quality.describe(("between", 0.8, 1.2)) == "0.8–1.2"


HANGING = '''
"""Sleeps in Python code, where a clean stop waits for it."""
import time
from kexp import ExperimentConfig, TrainConfig
CONFIG = ExperimentConfig(data=None, model=None, train=TrainConfig(epochs=1))
EXPECTED = {"score": (">=", 0.0)}
def run(config, harness):
    time.sleep(300)
    return {"score": 1.0}
'''
DIVERGING = '''
"""Records a NaN figure."""
from kexp import ExperimentConfig, TrainConfig
CONFIG = ExperimentConfig(data=None, model=None, train=TrainConfig(epochs=1))
EXPECTED = {"score": (">=", 0.0)}
def run(config, harness):
    return {"score": float("nan")}
'''


def test_a_second_ctrl_c_ends_a_busy_run_at_once_and_a_diverged_run_says_so(experiments, logdir):
    folder = Path(experiments["KEXP_EXPERIMENTS_PATH"])
    (folder / "hang_exp.py").write_text(HANGING)
    (folder / "nan_exp.py").write_text(DIVERGING)
    proc = _start_check(experiments, logdir, "nan_exp", "hang_exp")
    while not list(logdir.glob("hang_exp/*/config.json")):  # its run is open (and sleeping)
        pass
    proc.send_signal(signal.SIGINT)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    code, _, err = finish(proc, timeout=60)  # not the two minutes a run gets to stop cleanly
    assert code == 130 and time.monotonic() - started < 30, err[-2000:]
    report = json.loads(next(logdir.glob("check-*/check.json")).read_text())
    assert report["experiments"]["nan_exp"]["status"] == "failed"
    assert "diverged" in report["experiments"]["nan_exp"]["error"]
    assert report["experiments"]["hang_exp"]["status"] == "interrupted"
