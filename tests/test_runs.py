"""`kexp runs`: every run folder listed with its state, whatever that state is; never a crash, no TensorFlow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kexp
from helpers import REPO, run_cli
from kexp import registry
from kexp.store import rundir


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """A logs folder with runs in every state: real runs, and copies of them broken the ways files break."""
    logdir = tmp_path_factory.mktemp("logs")
    ok = Path(kexp.run("xor", {"train.epochs": 2, "data.repeats": 8}, logdir=logdir, verbose=0)["run_dir"])
    folder = ok.parent

    def copy(run_id: str) -> Path:
        target = folder / run_id
        shutil.copytree(ok, target)
        return target

    diverged = copy("20260101-000005-aaaaaa")
    results = json.loads((diverged / "results.json").read_text())
    results.update(status="diverged", run_id=diverged.name)
    results["metrics"]["two_layer_accuracy"] = None  # non-finite values are written as null
    (diverged / "results.json").write_text(json.dumps(results))
    crashed = copy("20260101-000004-bbbbbb")
    (crashed / "results.json").unlink()
    torn = copy("20260101-000003-cccccc")
    text = (torn / "results.json").read_text()
    (torn / "results.json").write_text(text[: len(text) // 2])
    stray = folder / "20260101-000002-dddddd"
    stray.mkdir()
    (stray / "notes.txt").write_text("not a run")
    running = copy("20260101-000001-eeeeee")
    (running / "results.json").unlink()
    (folder / "sweep-20260101-000000-ffffff").mkdir()
    (folder / "sweep-20260101-000000-ffffff" / "sweep.json").write_text("{}")
    # An interrupted run, made the way a stop makes one.
    with pytest.raises(KeyboardInterrupt):
        with kexp.open_run("xor", logdir=logdir, config=registry.load("xor").CONFIG, verbose=0) as harness:
            raise KeyboardInterrupt
    return logdir, {"ok": ok, "diverged": diverged, "crashed": crashed, "torn": torn, "stray": stray,
                    "running": running, "interrupted": harness.run_dir}


def test_json_lists_every_state_newest_first(logs):
    logdir, runs = logs
    lock = rundir.RunLock(runs["running"], "test")
    try:
        proc = run_cli("runs", "--logdir", str(logdir), "--json")
    finally:
        lock.release()
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(proc.stdout)
    by_id = {e["run_id"]: e for e in entries}
    assert {by_id[path.name]["status"] for path in runs.values()} == {
        "ok", "diverged", "crashed", "corrupt", "running", "interrupted"}
    assert by_id[runs["ok"].name]["status"] == "ok"
    assert by_id[runs["diverged"].name]["status"] == "diverged"
    assert by_id[runs["crashed"].name]["status"] == "crashed"
    assert by_id[runs["torn"].name]["status"] == "corrupt"
    assert "results.json: not valid JSON" in by_id[runs["torn"].name]["reason"]
    assert by_id[runs["stray"].name]["status"] == "corrupt"
    assert by_id[runs["stray"].name]["reason"] == "not a run folder (no config.json or results.json)"
    assert by_id[runs["running"].name]["status"] == "running"
    assert by_id[runs["interrupted"].name]["status"] == "interrupted"
    assert len(entries) == len(runs)  # the sweep folder is not a run
    # The settings that differ from xor's defaults, the metrics and the declared bar.
    ok = by_id[runs["ok"].name]
    assert ok["overrides"] == {"train.epochs": 2, "data.repeats": 8}
    results = json.loads((runs["ok"] / "results.json").read_text())
    assert ok["metrics"] == results["metrics"]
    assert ok["wall_time_s"] == results["wall_time_s"]
    assert ok["meets_bar"] is (results["metrics"]["two_layer_accuracy"] == 1.0
                               and results["metrics"]["single_layer_accuracy"] <= 0.75)
    diverged = by_id[runs["diverged"].name]
    assert diverged["meets_bar"] is False
    assert diverged["missed"] == ["two_layer_accuracy None (bar = 1)"]
    assert by_id[runs["interrupted"].name]["overrides"] == {}
    # Newest first: the real runs (made today) before the copies dated 2026-01-01, those by their time.
    order = [e["run_id"] for e in entries]
    assert order[-5:] == [runs[k].name for k in ("diverged", "crashed", "torn", "stray", "running")]


def test_table_and_experiment_filter(logs):
    logdir, runs = logs
    proc = run_cli("runs", "xor", "--logdir", str(logdir))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split()[:6] == ["RUN_ID", "EXPERIMENT", "STATUS", "BAR", "WALL_S", "EXAMPLES/S"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows[runs["ok"].name].split()[2] == "ok"
    assert "data.repeats=8 train.epochs=2" in rows[runs["ok"].name]
    assert rows[runs["crashed"].name].split()[2] == "crashed"
    assert rows[runs["torn"].name].split()[2] == "corrupt"
    assert run_cli("runs", "lenet", "--logdir", str(logdir)).stdout.strip() == f"no runs of lenet in {logdir}"


def test_missing_logdir_exits_2_and_no_tensorflow_is_imported(logs, tmp_path):
    proc = run_cli("runs", "--logdir", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"kexp: error: --logdir {str(tmp_path / 'nowhere')!r}: not a folder; allowed: a folder of runs "
        "(kexp run writes LOGDIR/NAME/RUN_ID; default ./logs)"]
    logdir, _ = logs
    code = ("import sys, io, contextlib; from kexp.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()): code = main(['runs', '--logdir', {str(logdir)!r}])\n"
            "print(code, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO / "tests")
    assert out.stdout.split() == ["0", "False", "False"], out.stderr


def test_files_other_tools_wrote_never_break_the_listing(logs, tmp_path):
    import os

    logdir, runs = logs
    folder = tmp_path / "logs" / "xor"
    folder.mkdir(parents=True)
    results = json.loads((runs["ok"] / "results.json").read_text())
    cases = {
        "20260101-000001-nan": {**results, "metrics": {"a": float("nan"), "b": float("inf"), "c": 0.5}},
        "20260101-000002-big": {**results, "metrics": {"a": 10**400}},
        "20260101-000003-list": {**results, "metrics": [1, 2]},
        "20260101-000004-newline": {**results, "metrics": {"x\ny": 1.0}},
    }
    for run_id, data in cases.items():
        (folder / run_id).mkdir()
        # Python's json writes NaN and Infinity unless told not to.
        (folder / run_id / "results.json").write_text(json.dumps(data))
    (folder / "20260101-000005-fifo").mkdir()
    os.mkfifo(folder / "20260101-000005-fifo" / "results.json")
    proc = run_cli("runs", "--logdir", str(tmp_path / "logs"), "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    by_id = {e["run_id"]: e for e in json.loads(proc.stdout)}
    assert by_id["20260101-000001-nan"]["metrics"] == {"a": None, "b": None, "c": 0.5}
    assert by_id["20260101-000002-big"]["metrics"] == {"a": None}
    assert by_id["20260101-000003-list"]["reason"] == "results.json metrics is not a JSON object"
    assert by_id["20260101-000005-fifo"]["reason"] == "results.json: not a regular file"
    table = run_cli("runs", "--logdir", str(tmp_path / "logs"), timeout=60)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.strip().splitlines()
    assert len(lines) == 1 + len(cases) + 1  # one line per run, the newline escaped
    assert "x\\ny=1" in table.stdout and "a=null b=null c=0.5" in table.stdout


def test_runs_made_in_one_second_are_listed_newest_first_whatever_their_labels(logs, tmp_path):
    import os

    from kexp.store import runs as runs_module

    ok = logs[1]["ok"]
    made = []
    for order, label in enumerate(("units=8", "hidden=4", "defaults")):  # made in this order, in one second
        target = tmp_path / "xor" / f"20260102-101010-{label}"
        shutil.copytree(ok, target)
        os.utime(target / "config.json", ns=(10**18 + order, 10**18 + order))
        made.append(target.name)
    listed = [entry["run_id"] for entry in runs_module.collect(tmp_path, "xor")]
    assert listed == made[::-1]


def test_runs_with_one_label_in_one_second_get_run2_run3(tmp_path, monkeypatch):
    from kexp.store import rundir

    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: "20260101-000000")  # one second for all three
    made = [rundir.create_run_dir(tmp_path, "xor", label="hidden=4").name for _ in range(3)]
    assert made == ["20260101-000000-hidden=4", "20260101-000000-hidden=4+run2", "20260101-000000-hidden=4+run3"]
