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


def _start_check(experiments: dict, logdir: Path, *args: str) -> subprocess.Popen:
    """Starts `kexp check ARGS` (names, then options) and returns once it says it started the last name."""
    env = {**os.environ, **experiments, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    last = [arg for arg in args if not arg.startswith("-") and not arg.isdigit()][-1]
    proc = subprocess.Popen([sys.executable, "-m", "kexp", "check", *args, "--logdir", str(logdir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:  # type: ignore[union-attr]
        if line.startswith(f"kexp check: started {last}"):
            break
    return proc


def _wait_until(proc: subprocess.Popen, what: str, found, timeout: float = 240):
    """Polls `found()` every 0.1 s until it returns something truthy; fails if the check ends first or it takes long."""
    deadline = time.monotonic() + timeout
    while not (result := found()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what}: not seen (check exit code {proc.poll()}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.1)
    return result


def _trained(logdir: Path, name: str) -> Path | None:
    """Returns the history.csv of NAME's run once it has rows of trained epochs."""
    return next((p for p in logdir.glob(f"{name}/*/history.csv") if len(p.read_text().splitlines()) > 2), None)


def _status(path: Path) -> str | None:
    """Returns results.json's status (None before the run writes it)."""
    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, ValueError):
        return None


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


def test_ctrl_c_stops_the_check_cleanly_keeps_finished_rows_a_second_ends_a_busy_run_at_once_a_diverged_run_says_so(
        experiments, logdir):
    """One check of three runs (`--jobs 2`); it replaced two tests of two runs each (one TensorFlow start less).

    nan_exp finishes first (its row, failed as diverged, is the finished row the stopped check keeps); hang_exp
    sleeps in Python, so the first Ctrl-C (passed on to both runs) cannot stop it cleanly; slow_exp trains, so
    that Ctrl-C stops it cleanly (interrupted, resumable); the second Ctrl-C then ends hang_exp at once.
    """
    folder = Path(experiments["KEXP_EXPERIMENTS_PATH"])
    (folder / "hang_exp.py").write_text(HANGING)
    (folder / "nan_exp.py").write_text(DIVERGING)
    # Two at a time: nan_exp and hang_exp start; slow_exp takes nan_exp's place once it has finished.
    proc = _start_check(experiments, logdir, "nan_exp", "hang_exp", "slow_exp", "--jobs", "2")
    _wait_until(proc, "hang_exp's open run", lambda: list(logdir.glob("hang_exp/*/config.json")))
    slow_history = _wait_until(proc, "slow_exp's trained epochs", lambda: _trained(logdir, "slow_exp"))
    proc.send_signal(signal.SIGINT)
    # The first Ctrl-C's clean stop of slow_exp is done before the second Ctrl-C.
    _wait_until(proc, "slow_exp's clean stop",
                lambda: _status(slow_history.parent / "results.json") == "interrupted", timeout=180)
    assert proc.poll() is None  # hang_exp still sleeps: the check waits for it
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    code, out, err = finish(proc, timeout=60)  # not the two minutes a run gets to stop cleanly
    assert code == 130 and time.monotonic() - started < 30, err[-2000:]
    assert "Traceback" not in err
    report = json.loads(next(logdir.glob("check-*/check.json")).read_text())
    assert report["finished"] is False and report["passed"] is False
    assert {row["experiment"]: row["result"] for row in report["rows"]} == {
        "nan_exp": "failed", "slow_exp": "interrupted", "hang_exp": "interrupted"}
    assert report["experiments"]["nan_exp"]["status"] == "failed"
    assert "diverged" in report["experiments"]["nan_exp"]["error"]
    assert report["experiments"]["hang_exp"]["status"] == "interrupted"
    # The interrupted run stopped cleanly: resumable.
    assert json.loads((slow_history.parent / "results.json").read_text())["status"] == "interrupted"
