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


def test_runs_export_as_csv_and_markdown_with_a_column_per_metric(logs):
    import csv
    import io

    logdir, runs = logs
    listed = json.loads(run_cli("runs", "--logdir", str(logdir), "--format", "json").stdout)
    proc = run_cli("runs", "--logdir", str(logdir), "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [row["run_id"] for row in rows] == [entry["run_id"] for entry in listed]
    assert list(rows[0])[:7] == ["run_id", "experiment", "status", "meets_bar", "wall_time_s",
                                 "train_samples_per_s", "settings"]
    ok = next(row for row in rows if row["run_id"] == runs["ok"].name)
    ok_json = next(entry for entry in listed if entry["run_id"] == runs["ok"].name)
    assert float(ok["two_layer_accuracy"]) == ok_json["metrics"]["two_layer_accuracy"]  # written in full
    assert ok["settings"] == " ".join(f"{k}={v}" for k, v in ok_json["overrides"].items()) and ok["status"] == "ok"
    assert set(ok_json["overrides"]) == {"train.epochs", "data.repeats"}
    crashed = next(row for row in rows if row["run_id"] == runs["crashed"].name)
    assert crashed["two_layer_accuracy"] == "" and crashed["status"] == "crashed"
    markdown = run_cli("runs", "--logdir", str(logdir), "--format", "md").stdout.splitlines()
    assert markdown[0].startswith("| run_id | experiment | status | meets_bar |") and markdown[1].startswith("|---|")
    assert len(markdown) == 2 + len(listed)
    assert any(line.startswith(f"| {runs['ok'].name} | xor | ok | ") for line in markdown), markdown


def test_runs_diff_shows_the_settings_status_and_figures_that_differ(logs, tmp_path):
    ok = logs[1]["ok"]
    other = tmp_path / "xor" / "20260103-101010-epochs=3"
    shutil.copytree(ok, other)
    config = json.loads((other / "config.json").read_text())
    config["train"]["epochs"] = 3
    (other / "config.json").write_text(json.dumps(config))
    results = json.loads((other / "results.json").read_text())
    before = results["metrics"]["two_layer_accuracy"]
    results["metrics"]["two_layer_accuracy"] = 0.25
    results["status"] = "diverged"
    (other / "results.json").write_text(json.dumps(results))
    proc = run_cli("runs", "diff", str(ok), other.name, "--logdir", str(tmp_path))  # a path, then a RUN_ID
    assert proc.returncode == 0, proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines()]
    assert lines == [[ok.name, other.name], ["status", "ok", "diverged"], ["train.epochs", "2", "3"],
                     ["metrics.two_layer_accuracy", format(before, ".6g"), "0.25"]]
    same = run_cli("runs", "diff", str(ok), str(ok))
    assert same.stdout.strip() == f"{ok.name} and {ok.name}: same settings, status and figures"
    for args, message in ((["diff", str(ok)], "runs diff: received 1 run(s); allowed: exactly two"),
                          (["diff", str(ok), "nowhere"], "runs diff 'nowhere': no run folder there or under logs"),
                          (["xor", "lstm_sine"], "runs: received 'xor lstm_sine'; allowed: one experiment NAME")):
        refused = run_cli("runs", *args)
        assert refused.returncode == 2 and refused.stderr.startswith(f"kexp: error: {message}"), refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
