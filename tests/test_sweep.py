"""`kexp sweep`: real `kexp run` processes at every grid point, a table, sweep.json, a figure, stop and resume.

Every point is a `kexp run` process that imports TensorFlow (seconds of CPU each), so the tests share
sweeps: one sweep checks several behaviours, and only the point a signal must land in trains for long.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_cli, run_cli_here
from test_tensorboard import HPARAMS, _hparam_values, _hparams_events

# The signal test's slow point: 2000 steps an epoch, so that a signal sent as its 2nd epoch starts lands
# while it trains (what is left of its first fit, then its second fit); the other points have 8 or 16 copies.
# Two epochs: the first signal comes after one saved epoch, so that the point has one to continue from.
SLOW_EPOCHS = 2
SLOW_REPEATS = "8000"


def _sweep_dir(stdout: str) -> Path:
    return Path(stdout.strip().splitlines()[-1].split(": ", 1)[1])


def _signal_sweep_at(logdir: Path, args: list[str], point: int, marker: str,
                     signum: int) -> tuple[subprocess.CompletedProcess, Path]:
    """Runs `python -m kexp sweep ARGS`, sends `signum` once point POINT's output in this sweep holds MARKER.

    Read from what this sweep's process of the point appended to the point's log (a resumed sweep appends
    to the log of the sweep before it). Returns the finished sweep process (its output as text) and that
    point's log.
    """
    pattern = f"xor/sweep-*/points/point-{point:03d}.log"
    before = list(logdir.glob(pattern))
    offset = before[0].stat().st_size if before else 0
    command = [sys.executable, "-m", "kexp", "sweep", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        log = None
        while log is None and time.monotonic() < deadline:
            found = list(logdir.glob(pattern))
            if found and marker.encode() in found[0].read_bytes()[offset:]:
                log = found[0]
            time.sleep(0.2)
        assert log is not None, f"the point never printed {marker!r}"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(command, proc.returncode, out, err), log


def test_grid_runs_every_point_as_a_comparable_run(tmp_path):
    """Also: a newline in the logdir breaks no point (issue 22 item 12; was its own test).

    Each point's run folder comes from the record its process writes, not from its output. Two keys, two
    points run at once (--jobs 2); the grid was 2x2 (4 point processes): the order of a product of two
    many-valued keys is `points`' and is checked in test_list_valued_keys_are_split_at_semicolons.
    """
    logdir = tmp_path / "two\nlines"
    proc = run_cli("sweep", "xor", "--grid", "model.hidden=2,8", "--grid", "train.learning_rate=0.05",
                   "--set", "train.epochs=1", "--set", "data.repeats=8", "--jobs", "2", "--logdir", str(logdir),
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep_dir,) = (logdir / "xor").glob("sweep-*")
    assert sweep_dir.name.startswith("sweep-")
    assert proc.stdout.endswith(f"\nsweep_dir: {sweep_dir}\n")
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert sweep["status"] == "complete"
    assert sweep["grid"] == {"model.hidden": ["2", "8"], "train.learning_rate": ["0.05"]}
    assert [p["settings"] for p in sweep["points"]] == [
        {"model.hidden": h, "train.learning_rate": "0.05"} for h in ("2", "8")]
    run_dirs = {p["run_dir"] for p in sweep["points"]}
    assert len(run_dirs) == 2
    for point in sweep["points"]:
        assert point["status"] == "ok" and point["exit_code"] == 0
        assert Path(point["run_dir"]).parent == logdir / "xor"
        config = json.loads((Path(point["run_dir"]) / "config.json").read_text())
        assert config["model"]["hidden"] == int(point["settings"]["model.hidden"])
        results = json.loads((Path(point["run_dir"]) / "results.json").read_text())
        assert results["config"]["model"]["hidden"] == int(point["settings"]["model.hidden"])
        assert results["config"]["train"]["learning_rate"] == float(point["settings"]["train.learning_rate"])
        assert results["config"]["train"]["epochs"] == 1
        assert point["metrics"] == results["metrics"]
        # The HParams plugin sees the point's values.
        values = _hparam_values(_hparams_events(Path(point["run_dir"]))[HPARAMS][0])
        assert values["model.hidden"] == str(int(point["settings"]["model.hidden"]))
        assert values["train.learning_rate"] == float(point["settings"]["train.learning_rate"])
    assert (sweep_dir / "sweep.png").stat().st_size > 10_000
    lines = proc.stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("#  model.hidden"))
    assert lines[header].split() == ["#", "model.hidden", "train.learning_rate", "status", "single_layer_accuracy",
                                     "two_layer_accuracy", "bar", "wall_s"]
    assert [line.split()[:4] for line in lines[header + 1: header + 3]] == [
        ["1", "2", "0.05", "ok"], ["2", "8", "0.05", "ok"]]


def test_bad_grid_exits_2_with_nothing_run(logdir):
    cases = {
        ("--grid", "model.hidden=2,0"): "model.hidden: received 0; allowed: a value >= 1 and <= 100000",
        ("--grid", "model.nope=1,2"): "unknown key 'model.nope'; valid keys of model: hidden, activation",
        ("--grid", "model.hidden=2,02"): "--grid 'model.hidden=2,02': '02' is the same value as '2'; "
                                         "allowed: distinct values",
        ("--grid", "train.shuffle=true,yes"): "--grid 'train.shuffle=true,yes': 'yes' is the same value as "
                                              "'true'; allowed: distinct values",
        ("--grid", "model.hidden"): "--grid 'model.hidden': expected section.key=v1,v2, e.g. --grid train.epochs=5,10",
        ("--grid", "train.epochs=1,2", "--set", "train.epochs=3"):
            "--grid 'train.epochs=1,2': train.epochs is also given with --set; allowed: one of the two",
        (): "sweep: no --grid given; allowed: one or more --grid section.key=v1,v2",
        ("--resume", str(logdir), "--logdir", str(logdir)):
            "sweep --resume runs the saved grid with its saved settings; received --grid, --set, --logdir, "
            "--strategy or --seeds; allowed: --resume with --jobs only",
        ("--resume", str(logdir)):
            f"sweep --resume {str(logdir)!r}: no readable sweep.json; allowed: a folder kexp sweep made "
            "(LOGDIR/NAME/sweep-ID)",
    }
    for args, message in cases.items():
        extra = [] if "--resume" in args else ["--logdir", str(logdir)]
        proc = run_cli_here("sweep", "xor", *args, *extra)  # a refusal: no process of its own needed
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.strip().splitlines() == [f"kexp: error: {message}"], args
        assert not any(logdir.iterdir()), args


def test_list_valued_keys_are_split_at_semicolons():
    import pytest

    from kexp.errors import UsageError
    from kexp.cli.sweep import parse_grid, points

    grid = parse_grid("lstm_sine", ["data.train_range=0,100;0,50", "model.cell=lstm,gru"], [])
    assert grid == {"data.train_range": ["0,100", "0,50"], "model.cell": ["lstm", "gru"]}
    # The last key varies fastest: the order of a sweep's points, its sweep.json and its table.
    assert points(grid) == [{"data.train_range": r, "model.cell": c}
                            for r in ("0,100", "0,50") for c in ("lstm", "gru")]
    with pytest.raises(UsageError, match="data.train_range: received '0'; allowed: 2 comma-separated float"):
        parse_grid("lstm_sine", ["data.train_range=0,100;0"], [])


FAILING_EXPERIMENT = """
\"\"\"Fails, diverges or scores on request (a test experiment).\"\"\"
import dataclasses
from kexp.config import ExperimentConfig, param


@dataclasses.dataclass(frozen=True)
class Model:
    mode: str = param("ok", choices=("ok", "fail", "diverge"))


CONFIG = ExperimentConfig(data=None, model=Model())


def run(config, harness):
    if config.model.mode == "fail":
        raise RuntimeError("failing on request")
    if config.model.mode == "diverge":
        # Plain SGD at train.learning_rate=1e30 sends a regression's outputs to inf: the run says diverged.
        import keras
        import numpy as np

        x = np.linspace(-1, 1, 64, dtype="float32")[:, None]
        harness.fit(lambda: keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]), (x, 3 * x + 1),
                    loss="mse", name="line")
    return {"score": 1.0}
"""


def test_failing_and_diverging_points_are_reported_and_the_sweep_goes_on(logdir, tmp_path):
    """A failing point keeps its run folder; a diverging one is reported; the others go on.

    One sweep for both (they were two tests): the points fail, diverge (real training: plain SGD at 1e30)
    and finish, in that order.
    """
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "fails.py").write_text(FAILING_EXPERIMENT)
    env = {"KEXP_EXPERIMENTS_PATH": str(tmp_path / "experiments")}
    proc = run_cli("sweep", "fails", "--grid", "model.mode=fail,diverge,ok", "--set", "train.epochs=2",
                   "--set", "train.optimizer=sgd", "--set", "train.learning_rate=1e30", "--logdir", str(logdir),
                   env=env, timeout=600)
    assert proc.returncode == 1, proc.stderr
    sweep = json.loads((_sweep_dir(proc.stdout) / "sweep.json").read_text())
    failed, diverged, ok = sweep["points"]
    assert [p["status"] for p in sweep["points"]] == ["failed", "diverged", "ok"]
    assert [p["exit_code"] for p in sweep["points"]] == [1, 1, 0]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("1  ", "2  ", "3  "))]
    assert [row[:3] for row in rows] == [["1", "fail", "failed"], ["2", "diverge", "diverged"], ["3", "ok", "ok"]]
    # The failed run's folder is known (kexp run ends with run_dir: even when the experiment raises).
    assert json.loads((Path(failed["run_dir"]) / "results.json").read_text())["status"] == "failed"
    assert json.loads((Path(diverged["run_dir"]) / "results.json").read_text())["status"] == "diverged"
    assert "RuntimeError: failing on request" in (_sweep_dir(proc.stdout) / "points" / "point-001.log").read_text()
    assert ok["metrics"] == {"score": 1.0}
    # A resume runs the failed point again (failures may pass: a missing file, a path), not the finished ones
    # (a diverged point has its result).
    again = run_cli("sweep", "--resume", str(_sweep_dir(proc.stdout)), env=env, timeout=600)
    assert again.returncode == 1
    assert "[1/3] model.mode=fail: started" in again.stdout
    assert "[2/3]" not in again.stdout and "[3/3]" not in again.stdout
    log = (_sweep_dir(proc.stdout) / "points" / "point-001.log").read_text()
    assert log.count("RuntimeError: failing on request") == 2


def test_killed_then_ctrl_c_sweep_keeps_finished_points_and_resumes_the_others_in_their_own_folders(logdir):
    """One sweep's life: SIGKILL, a resume stopped by Ctrl-C, a resume to the end; foreign folders never count.

    Replaced two tests that ran a slow sweep each (same assertions, on one sweep of 3 points, 5 point
    processes instead of 8):
    test_killed_sweep_takes_its_points_along_and_resume_continues_them_in_their_folders: a killed sweep
    takes its points along (they get SIGTERM and save their state), and resume continues the killed
    point in its folder, known only from the point's record; also issue 22 item 3: resume never counts a
    run folder trained with other settings (a point's folder counts only when its config.json is the
    point's settings): the killed point's folder is point 3's foreign folder, which point 3 is made to say
    it finished in (before the 1st resume), then to have been running in (its log and record name it,
    before the 2nd resume).
    test_ctrl_c_keeps_finished_points_and_resume_runs_only_the_missing_ones: Ctrl-C keeps finished points,
    says how to continue, and resume runs only the missing ones, the interrupted one in its own folder.
    """
    from kexp.store import rundir

    # Point 2 trains for long; point 1 finishes before it, point 3 waits.
    _, log = _signal_sweep_at(logdir, ["xor", "--grid", f"data.repeats=8,{SLOW_REPEATS},16",
                                       "--set", f"train.epochs={SLOW_EPOCHS}", "--logdir", str(logdir)],
                              2, f"Epoch 2/{SLOW_EPOCHS}", signal.SIGKILL)  # no chance to stop its points
    run_dir = Path(next(line for line in log.read_text().splitlines()
                        if line.startswith("kexp: run folder ")).split("folder ", 1)[1])
    # The point got SIGTERM when the sweep died, saved its state and stopped.
    deadline = time.monotonic() + 120
    while rundir.in_use(run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not rundir.in_use(run_dir)
    sweep_dir = log.parent.parent
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert [p["status"] for p in sweep["points"]] == ["ok", "running", "pending"]
    assert sweep["points"][1]["run_dir"] is None  # a fresh point: its folder is in its record alone
    first, foreign = sweep["points"][0]["run_dir"], str(run_dir)

    # Point 3 says it finished in the killed point's folder.
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    sweep["points"][2].update(status="ok", run_dir=foreign, metrics=metrics, exit_code=0)
    (sweep_dir / "sweep.json").write_text(json.dumps(sweep))

    # Ctrl-C as the resumed point 2 starts its first epoch (the first fit's 2nd, or the second fit's 1st when
    # the kill came after the first fit): both compile first, so the signal lands while it trains.
    proc, _ = _signal_sweep_at(logdir, ["--resume", str(sweep_dir)], 2, "Epoch ", signal.SIGINT)
    err = proc.stderr
    assert proc.returncode == 130, err
    assert f"continue with: kexp sweep --resume {sweep_dir}" in err
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert sweep["status"] == "interrupted"
    assert [p["status"] for p in sweep["points"]] == ["ok", "interrupted", "pending"]  # point 3's claim: not counted
    assert sweep["points"][0]["run_dir"] == first
    assert sweep["points"][1]["run_dir"] == foreign  # the killed point continued, not started again
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"
    assert "[1/3]" not in proc.stdout.split("#  data.repeats")[0]

    # Point 3 says it was running in the killed point's folder.
    sweep["points"][2].update(status="running")
    (sweep_dir / "sweep.json").write_text(json.dumps(sweep))
    (sweep_dir / "points" / "point-003.log").write_text(f"kexp: run folder {foreign}\n")
    (sweep_dir / "points" / "point-003.json").write_text(json.dumps({"run_dir": foreign}))

    again = run_cli("sweep", "--resume", str(sweep_dir), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert sweep["status"] == "complete"
    points = sweep["points"]
    assert [p["status"] for p in points] == ["ok", "ok", "ok"]
    # The finished point was not run again; the interrupted one continued in its own folder.
    assert points[0]["run_dir"] == first
    assert points[1]["run_dir"] == foreign
    assert "[1/3]" not in again.stdout.split("#  data.repeats")[0]
    assert points[2]["run_dir"] != foreign
    for point in points:
        config = json.loads((Path(point["run_dir"]) / "config.json").read_text())
        assert config["data"]["repeats"] == int(point["settings"]["data.repeats"])
    assert len(list((logdir / "xor").glob("2*"))) == 3  # one run folder per point: the killed point kept its own
    for fit in ("single_layer", "two_layer"):
        history = (run_dir / fit / "history.csv").read_text().splitlines()
        assert [row.split(",")[0] for row in history[1:]] == [str(e) for e in range(SLOW_EPOCHS)]


def test_sigterm_stops_the_sweep_with_143(logdir):
    command = [sys.executable, "-m", "kexp", "sweep", "xor", "--grid", "model.hidden=4",
               "--set", "data.repeats=20000", "--logdir", str(logdir)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "started" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "continue with: kexp sweep --resume" in err
    assert out.strip().splitlines()[-1].startswith("sweep_dir: ")


def test_resume_refuses_a_sweep_json_that_kexp_did_not_write(tmp_path):
    from kexp.cli.sweep import new_sweep

    sweep_dir, sweep = new_sweep("xor", {"model.hidden": ["2", "4"]}, [], tmp_path, "auto")
    edits = {
        "points": lambda s: s.update(points=[1, 2]),
        "settings": lambda s: s["points"][1].update(settings={"model.hidden": "abc"}),
        "logdir": lambda s: s.pop("logdir"),
        "strategy": lambda s: s.update(strategy="bogus"),
    }
    for what, edit in edits.items():
        data = json.loads(json.dumps(sweep))
        edit(data)
        (sweep_dir / "sweep.json").write_text(json.dumps(data))
        proc = run_cli_here("sweep", "--resume", str(sweep_dir))  # a refusal: no process of its own needed
        assert proc.returncode == 2, (what, proc.stderr)
        assert proc.stderr.startswith(f"kexp: error: sweep --resume {str(sweep_dir)!r}: sweep.json is not as kexp "
                                      "sweep wrote it ("), what
        assert len(proc.stderr.strip().splitlines()) == 1, what


def test_seeds_repeat_each_point_and_report_mean_and_std_per_setting(logdir):
    import statistics

    refused = run_cli_here("sweep", "linear_regression", "--grid", "train.learning_rate=0.01,0.03", "--seeds", "2",
                           "--set", "train.seed=1", "--logdir", str(logdir))
    assert refused.returncode == 2 and not any(logdir.iterdir())
    assert refused.stderr.strip() == "kexp: error: sweep: --seeds sweeps train.seed itself; allowed: --seeds or a " \
                                     "train.seed setting"
    proc = run_cli("sweep", "linear_regression", "--grid", "train.learning_rate=0.01,0.03", "--seeds", "2",
                   "--set", "data.num_examples=200", "--set", "train.epochs=2", "--jobs", "2",
                   "--logdir", str(logdir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = json.loads((_sweep_dir(proc.stdout) / "sweep.json").read_text())
    assert [p["settings"] for p in sweep["points"]] == [
        {"train.learning_rate": lr, "train.seed": seed} for lr in ("0.01", "0.03") for seed in ("0", "1")]
    for summary, lr in zip(sweep["seed_summary"], ("0.01", "0.03")):
        runs_ = [p for p in sweep["points"] if p["settings"]["train.learning_rate"] == lr]
        values = [json.loads((Path(p["run_dir"]) / "results.json").read_text())["metrics"]["weight_error"]
                  for p in runs_]
        assert [json.loads((Path(p["run_dir"]) / "config.json").read_text())["train"]["seed"] for p in runs_] == [0, 1]
        assert summary["settings"] == {"train.learning_rate": lr} and summary["seeds_ok"] == 2
        assert summary["metrics"]["weight_error"]["mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert summary["metrics"]["weight_error"]["std"] == pytest.approx(statistics.stdev(values), rel=1e-12)
    assert "train.learning_rate  seeds ok  weight_error (mean ± std)" in proc.stdout
