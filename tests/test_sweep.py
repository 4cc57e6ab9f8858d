"""`kexp sweep`: real `kexp run` processes at every grid point, a table, sweep.json, a figure, stop and resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import run_cli
from test_tensorboard import HPARAMS, _hparam_values, _hparams_events

FAST = ["--set", "train.epochs=2", "--set", "data.repeats=8"]


def _sweep_dir(stdout: str) -> Path:
    return Path(stdout.strip().splitlines()[-1].split(": ", 1)[1])


def _signal_sweep_at(logdir: Path, hidden: str, point: int, signum: int) -> tuple[subprocess.CompletedProcess, Path]:
    """Runs a slow xor sweep over `model.hidden=HIDDEN`, sends `signum` once point POINT is in its 2nd epoch.

    Returns the finished sweep process (its output as text) and that point's log.
    """
    command = [sys.executable, "-m", "kexp", "sweep", "xor", "--grid", f"model.hidden={hidden}",
               "--set", "train.epochs=6", "--set", "data.repeats=20000", "--logdir", str(logdir)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        log = None
        while log is None and time.monotonic() < deadline:
            found = list(logdir.glob(f"xor/sweep-*/points/point-{point:03d}.log"))
            if found and "Epoch 2/6" in found[0].read_text():
                log = found[0]
            time.sleep(0.2)
        assert log is not None, "the point never reached its second epoch"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(command, proc.returncode, out, err), log


def test_grid_runs_every_point_as_a_comparable_run(logdir):
    proc = run_cli("sweep", "xor", "--grid", "model.hidden=2,8", "--grid", "train.learning_rate=0.01,0.05",
                   *FAST, "--jobs", "2", "--logdir", str(logdir), timeout=600)
    assert proc.returncode == 0, proc.stderr
    sweep_dir = _sweep_dir(proc.stdout)
    assert sweep_dir.parent == logdir / "xor" and sweep_dir.name.startswith("sweep-")
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert sweep["status"] == "complete"
    assert sweep["grid"] == {"model.hidden": ["2", "8"], "train.learning_rate": ["0.01", "0.05"]}
    assert [p["settings"] for p in sweep["points"]] == [
        {"model.hidden": h, "train.learning_rate": lr} for h in ("2", "8") for lr in ("0.01", "0.05")]
    run_dirs = {p["run_dir"] for p in sweep["points"]}
    assert len(run_dirs) == 4
    for point in sweep["points"]:
        assert point["status"] == "ok" and point["exit_code"] == 0
        results = json.loads((Path(point["run_dir"]) / "results.json").read_text())
        assert results["config"]["model"]["hidden"] == int(point["settings"]["model.hidden"])
        assert results["config"]["train"]["learning_rate"] == float(point["settings"]["train.learning_rate"])
        assert results["config"]["train"]["epochs"] == 2
        assert point["metrics"] == results["metrics"]
        # The HParams plugin sees the point's values.
        values = _hparam_values(_hparams_events(Path(point["run_dir"]))[HPARAMS][0])
        assert values["model.hidden"] == int(point["settings"]["model.hidden"])
        assert values["train.learning_rate"] == float(point["settings"]["train.learning_rate"])
    assert (sweep_dir / "sweep.png").stat().st_size > 10_000
    lines = proc.stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("#  model.hidden"))
    assert lines[header].split() == ["#", "model.hidden", "train.learning_rate", "status", "single_layer_accuracy",
                                     "two_layer_accuracy", "bar", "wall_s"]
    assert [line.split()[:4] for line in lines[header + 1: header + 5]] == [
        ["1", "2", "0.01", "ok"], ["2", "2", "0.05", "ok"], ["3", "8", "0.01", "ok"], ["4", "8", "0.05", "ok"]]


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
            "sweep --resume runs the saved grid with its saved settings; received --grid, --set, --logdir or "
            "--strategy; allowed: --resume with --jobs only",
        ("--resume", str(logdir)):
            f"sweep --resume {str(logdir)!r}: no readable sweep.json; allowed: a folder kexp sweep made "
            "(LOGDIR/NAME/sweep-ID)",
    }
    for args, message in cases.items():
        extra = [] if "--resume" in args else ["--logdir", str(logdir)]
        proc = run_cli("sweep", "xor", *args, *extra)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.strip().splitlines() == [f"kexp: error: {message}"], args
        assert not any(logdir.iterdir()), args


def test_a_diverging_point_is_reported_and_the_others_go_on(logdir):
    # Plain SGD at 1e30 sends heart_mlp's regression outputs to inf: the run says diverged.
    proc = run_cli("sweep", "heart_mlp", "--grid", "train.learning_rate=0.003,1e30", "--set", "train.epochs=2",
                   "--set", "train.optimizer=sgd", "--set", "data.num_train=2000", "--logdir", str(logdir),
                   timeout=600)
    assert proc.returncode == 1, proc.stderr
    sweep = json.loads((_sweep_dir(proc.stdout) / "sweep.json").read_text())
    assert [p["status"] for p in sweep["points"]] == ["ok", "diverged"]
    assert [p["exit_code"] for p in sweep["points"]] == [0, 1]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("1  ", "2  "))]
    assert [row[:3] for row in rows] == [["1", "0.003", "ok"], ["2", "1e30", "diverged"]]


def test_ctrl_c_keeps_finished_points_and_resume_runs_only_the_missing_ones(logdir):
    proc, log = _signal_sweep_at(logdir, "2,4,8", 2, signal.SIGINT)
    sweep_dir, err = log.parent.parent, proc.stderr
    assert proc.returncode == 130, err
    assert f"continue with: kexp sweep --resume {sweep_dir}" in err
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert sweep["status"] == "interrupted"
    assert [p["status"] for p in sweep["points"]] == ["ok", "interrupted", "pending"]
    first, second = sweep["points"][0]["run_dir"], sweep["points"][1]["run_dir"]
    assert json.loads((Path(second) / "results.json").read_text())["status"] == "interrupted"

    again = run_cli("sweep", "--resume", str(sweep_dir), timeout=600)
    assert again.returncode == 0, again.stderr
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert sweep["status"] == "complete"
    assert [p["status"] for p in sweep["points"]] == ["ok", "ok", "ok"]
    # The finished point was not run again; the interrupted one continued in its own folder.
    assert sweep["points"][0]["run_dir"] == first
    assert sweep["points"][1]["run_dir"] == second
    assert "[1/3]" not in again.stdout.split("#  model.hidden")[0]
    assert len(list((logdir / "xor").glob("2*"))) == 3
    history = (Path(second) / "two_layer" / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == [str(e) for e in range(6)]


def test_list_valued_keys_are_split_at_semicolons():
    import pytest

    from kexp.errors import UsageError
    from kexp.sweep import parse_grid, points

    grid = parse_grid("lstm_sine", ["data.train_range=0,100;0,50", "model.cell=lstm,gru"], [])
    assert grid == {"data.train_range": ["0,100", "0,50"], "model.cell": ["lstm", "gru"]}
    assert points(grid)[1] == {"data.train_range": "0,100", "model.cell": "gru"}
    with pytest.raises(UsageError, match="data.train_range: received '0'; allowed: 2 comma-separated float"):
        parse_grid("lstm_sine", ["data.train_range=0,100;0"], [])


FAILING_EXPERIMENT = """
\"\"\"Fails on request (a test experiment).\"\"\"
import dataclasses
from kexp.config import ExperimentConfig, param


@dataclasses.dataclass(frozen=True)
class Model:
    mode: str = param("ok", choices=("ok", "fail"))


CONFIG = ExperimentConfig(data=None, model=Model())


def run(config, harness):
    if config.model.mode == "fail":
        raise RuntimeError("failing on request")
    return {"score": 1.0}
"""


def test_a_failing_point_keeps_its_run_folder_and_the_sweep_goes_on(logdir, tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "fails.py").write_text(FAILING_EXPERIMENT)
    env = {"KEXP_EXPERIMENTS_PATH": str(tmp_path / "experiments")}
    proc = run_cli("sweep", "fails", "--grid", "model.mode=fail,ok", "--logdir", str(logdir), env=env, timeout=600)
    assert proc.returncode == 1, proc.stderr
    sweep = json.loads((_sweep_dir(proc.stdout) / "sweep.json").read_text())
    failed, ok = sweep["points"]
    assert (failed["status"], failed["exit_code"], ok["status"]) == ("failed", 1, "ok")
    # The failed run's folder is known (kexp run ends with run_dir: even when the experiment raises).
    assert json.loads((Path(failed["run_dir"]) / "results.json").read_text())["status"] == "failed"
    assert "RuntimeError: failing on request" in (_sweep_dir(proc.stdout) / "points" / "point-001.log").read_text()
    assert ok["metrics"] == {"score": 1.0}
    # A resume runs the failed point again (failures may pass: a missing file, a path), not the finished one.
    again = run_cli("sweep", "--resume", str(_sweep_dir(proc.stdout)), env=env, timeout=600)
    assert again.returncode == 1
    assert "[1/2] model.mode=fail: started" in again.stdout and "[2/2]" not in again.stdout
    log = (_sweep_dir(proc.stdout) / "points" / "point-001.log").read_text()
    assert log.count("RuntimeError: failing on request") == 2


def test_killed_sweep_takes_its_points_along_and_resume_continues_them_in_their_folders(logdir):
    from kexp import rundir

    _, log = _signal_sweep_at(logdir, "4,8", 1, signal.SIGKILL)  # no chance to stop its points itself
    run_dir = Path(next(line for line in log.read_text().splitlines()
                        if line.startswith("kexp: run folder ")).split("folder ", 1)[1])
    # The point got SIGTERM when the sweep died, saved its state and stopped.
    deadline = time.monotonic() + 120
    while rundir.in_use(run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not rundir.in_use(run_dir)
    sweep_dir = log.parent.parent
    assert [p["status"] for p in json.loads((sweep_dir / "sweep.json").read_text())["points"]] == [
        "running", "pending"]

    again = run_cli("sweep", "--resume", str(sweep_dir), timeout=600)
    assert again.returncode == 0, again.stderr
    points = json.loads((sweep_dir / "sweep.json").read_text())["points"]
    assert [p["status"] for p in points] == ["ok", "ok"]
    assert points[0]["run_dir"] == str(run_dir)  # continued, not started again
    assert len(list((logdir / "xor").glob("2*"))) == 2
    for fit in ("single_layer", "two_layer"):
        history = (run_dir / fit / "history.csv").read_text().splitlines()
        assert [row.split(",")[0] for row in history[1:]] == [str(e) for e in range(6)]


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
    from kexp.sweep import new_sweep

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
        proc = run_cli("sweep", "--resume", str(sweep_dir))
        assert proc.returncode == 2, (what, proc.stderr)
        assert proc.stderr.startswith(f"kexp: error: sweep --resume {str(sweep_dir)!r}: sweep.json is not as kexp "
                                      "sweep wrote it ("), what
        assert len(proc.stderr.strip().splitlines()) == 1, what


def test_resume_never_counts_a_run_folder_trained_with_other_settings(logdir):
    """A point's run folder counts only when its config.json is the point's settings (issue 22 item 3)."""
    from kexp.sweep import new_sweep

    other = run_cli("run", "xor", "--set", "model.hidden=2", "--set", "train.epochs=1", "--set", "data.repeats=8",
                    "--logdir", str(logdir))
    assert other.returncode == 0, other.stderr[-3000:]
    foreign = other.stdout.strip().splitlines()[-1].removeprefix("run_dir: ")
    metrics = json.loads((Path(foreign) / "results.json").read_text())["metrics"]
    sweep_dir, sweep = new_sweep("xor", {"model.hidden": ["4", "8"]}, ["train.epochs=1", "data.repeats=8"],
                                 logdir, "auto")
    # Point 1 says it finished in the foreign folder; point 2 was running, and its log and record name it.
    sweep["points"][0].update(status="ok", run_dir=foreign, metrics=metrics, exit_code=0)
    sweep["points"][1].update(status="running")
    (sweep_dir / "sweep.json").write_text(json.dumps(sweep))
    (sweep_dir / "points").mkdir()
    (sweep_dir / "points" / "point-002.log").write_text(f"kexp: run folder {foreign}\n")
    (sweep_dir / "points" / "point-002.json").write_text(json.dumps({"run_dir": foreign}))

    again = run_cli("sweep", "--resume", str(sweep_dir), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    points = json.loads((sweep_dir / "sweep.json").read_text())["points"]
    assert [p["status"] for p in points] == ["ok", "ok"]
    assert foreign not in {p["run_dir"] for p in points}
    for point in points:
        config = json.loads((Path(point["run_dir"]) / "config.json").read_text())
        assert config["model"]["hidden"] == int(point["settings"]["model.hidden"])
    assert len(list((logdir / "xor").glob("2*"))) == 3  # the foreign run and one fresh run per point


def test_a_newline_in_logdir_breaks_no_point(tmp_path):
    """Each point's run folder comes from the record its process writes, not from its output (issue 22 item 12)."""
    logdir = tmp_path / "two\nlines"
    proc = run_cli("sweep", "xor", "--grid", "model.hidden=2,4", "--set", "train.epochs=1", "--set",
                   "data.repeats=8", "--logdir", str(logdir), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep_dir,) = (logdir / "xor").glob("sweep-*")
    points = json.loads((sweep_dir / "sweep.json").read_text())["points"]
    assert [p["status"] for p in points] == ["ok", "ok"]
    for point in points:
        assert Path(point["run_dir"]).parent == logdir / "xor"
        config = json.loads((Path(point["run_dir"]) / "config.json").read_text())
        assert config["model"]["hidden"] == int(point["settings"]["model.hidden"])
