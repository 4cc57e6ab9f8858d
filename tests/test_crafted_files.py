"""Crafted files in run and sweep folders: `kexp runs` lists them as corrupt, `--resume` and `sweep --resume`
exit 2 naming the file; never a traceback, a hang or a change to the folder (issue 22 items 11 and 12).

The commands run in this process (`_here`: `run_cli_here` with a deadline, so that a read that blocks on a
FIFO fails the test instead of hanging it), except the one whose bad TF_CONFIG must not reach this process.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli, run_cli_here
from test_faults import _config_of, _make_folder

from kexp.store import rundir
from kexp.cli.sweep import new_sweep

NESTED = "[" * 5000 + "]" * 5000  # deeper than Python's recursion limit: json.loads raised RecursionError
XOR_CONFIG = json.dumps(_config_of("xor"))
XOR_NAN_CONFIG = XOR_CONFIG.replace('"learning_rate": 0.05', '"learning_rate": NaN')


def _sparse(path: Path, size: int = 2**30) -> None:
    """Makes a 1 GiB file of zeros that takes no disk space (`truncate -s 1G`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["truncate", "-s", str(size), str(path)], check=True)


def _fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


class _Hung(BaseException):
    """Raised by `_here`'s deadline; a BaseException, so that no `except Exception` in kexp turns it into a message."""


def _here(*args: str, timeout: int = 90, env: dict | None = None) -> subprocess.CompletedProcess:
    """`run_cli_here(ARGS)` that fails with `_Hung` after `timeout` seconds (a blocking read: a FIFO opened)."""
    def expired(signum, frame):
        raise _Hung(f"kexp {' '.join(args)[:200]} still running after {timeout} s (a blocking read?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(timeout)
    try:
        return run_cli_here(*args, env=env)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry's size and modification time (a 1 GiB file is not read)."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


def _state_bytes(header: str) -> bytes:
    """A state file as `kexp.store.checkpoint.save` lays it out, with `header` as its JSON header."""
    buffer = io.BytesIO()
    np.savez(buffer, __kexp_state__=np.array(header), **{"model/0": np.zeros((2, 1), "float32")})
    return buffer.getvalue()


def _header(**changes) -> str:
    header = {"format": 1, "epochs_done": 1, "epochs": 4, "names": {"model/0": "dense/kernel"},
              "run": {"experiment": "xor", "fit": "single_layer", "config": _config_of("xor")}}
    header.update(changes)
    return json.dumps(header)


# --- the one reader ------------------------------------------------------------------------------------------


def test_read_json_refuses_what_kexp_never_writes_without_reading_it(tmp_path, monkeypatch):
    cases = {
        "nested.json": (lambda p: p.write_text(NESTED), "nested deeper than 32 levels"),
        "nan.json": (lambda p: p.write_text('{"a": NaN}'), "holds a non-finite number (NaN)"),
        "inf.json": (lambda p: p.write_text('{"a": 1e999}'), "holds a non-finite number (1e999)"),
        "latin1.json": (lambda p: p.write_bytes(b'{"a": "\xe9"}'), "not valid UTF-8"),
        "torn.json": (lambda p: p.write_text('{"a": '), "not valid JSON"),
        "huge.json": (_sparse, "larger than 16 MiB"),
        "fifo.json": (_fifo, "not a regular file"),
        "folder.json": (lambda p: p.mkdir(), "not a regular file"),
        "broken.json": (lambda p: p.symlink_to(tmp_path / "nowhere"), "a broken link"),
    }
    (tmp_path / "real_fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(tmp_path / "real_fifo")
    cases["link_to_fifo.json"] = (lambda p: p.symlink_to(tmp_path / "real_fifo"), "not a regular file")
    for name, (make, reason) in cases.items():
        make(tmp_path / name)
        with pytest.raises(rundir.CorruptFile) as info:
            rundir.read_json(tmp_path / name)
        assert info.value.reason.startswith(reason), (name, info.value.reason)
        assert str(tmp_path / name) in str(info.value)
    assert rundir.read_json(tmp_path / "missing.json", missing=None) is None
    with pytest.raises(rundir.CorruptFile, match="missing"):
        rundir.read_json(tmp_path / "missing.json")
    assert rundir.read_json(tmp_path / "nan.json", null_nonfinite=True) == {"a": None}
    # Unreadable (tests run as root, who reads any file: the open itself is made to fail).
    (tmp_path / "locked.json").write_text("{}")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(rundir.os, "open", denied)
    with pytest.raises(rundir.CorruptFile, match=r"locked.json: not readable \(Permission denied\)"):
        rundir.read_json(tmp_path / "locked.json")


# --- kexp runs ------------------------------------------------------------------------------------------------


def test_runs_lists_crafted_folders_as_corrupt_with_the_reason(logdir):
    folder = logdir / "xor"
    crafted = {
        "20260101-000001-nested": {"results.json": NESTED, "config.json": XOR_CONFIG},
        "20260101-000002-nestcfg": {"config.json": NESTED},
        "20260101-000003-nancfg": {"config.json": XOR_NAN_CONFIG},
        "20260101-000004-huge": {"config.json": XOR_CONFIG},
        "20260101-000005-fifocfg": {},
    }
    for run_id, files in crafted.items():
        (folder / run_id).mkdir(parents=True)
        for name, text in files.items():
            (folder / run_id / name).write_text(text)
    _sparse(folder / "20260101-000004-huge" / "results.json")
    _fifo(folder / "20260101-000005-fifocfg" / "config.json")
    proc = _here("runs", "--logdir", str(logdir), "--json", timeout=60)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr[-3000:]
    by_id = {e["run_id"]: (e["status"], e["reason"]) for e in json.loads(proc.stdout)}
    assert by_id["20260101-000001-nested"] == ("corrupt", "results.json: nested deeper than 32 levels")
    assert by_id["20260101-000002-nestcfg"] == ("corrupt", "config.json: nested deeper than 32 levels")
    assert by_id["20260101-000003-nancfg"][0] == "corrupt"
    assert by_id["20260101-000003-nancfg"][1].startswith("config.json: holds a non-finite number (NaN)")
    assert by_id["20260101-000004-huge"] == ("corrupt", "results.json: larger than 16 MiB")
    assert by_id["20260101-000005-fifocfg"] == ("corrupt", "config.json: not a regular file")
    table = _here("runs", "--logdir", str(logdir), timeout=60)
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 1 + len(crafted), table.stderr


def test_runs_calls_a_crashed_folder_that_resume_would_refuse_corrupt_not_resumable(logdir):
    # No results.json, a config.json that is not xor's (an edited epoch count of the wrong type).
    config = json.loads(XOR_CONFIG)
    config["train"]["epochs"] = True
    _make_folder(logdir, "xor", {"config.json": json.dumps(config)})
    (entry,) = json.loads(_here("runs", "--logdir", str(logdir), "--json", timeout=60).stdout)
    assert entry["status"] == "corrupt" and entry["reason"].startswith("config.json does not fit experiment 'xor'")
    assert "resume it" not in entry["reason"]


# --- kexp run --resume ----------------------------------------------------------------------------------------

STATE_REFUSED = "backup/single_layer/state.npz is not a readable kexp training state"


def _with_state(header: str) -> dict[str, str | bytes]:
    """A run folder of xor whose first fit's state has `header`."""
    return {"config.json": XOR_CONFIG, "backup/single_layer/state.npz": _state_bytes(header)}


RESUME_CASES = {
    "nested results.json": ({"config.json": XOR_CONFIG, "results.json": NESTED},
                            "results.json is not readable JSON (nested deeper than 32 levels)"),
    "nested config.json": ({"config.json": NESTED}, "config.json is not readable JSON (nested deeper than 32 levels)"),
    "NaN in config.json": ({"config.json": XOR_NAN_CONFIG},
                           "config.json is not readable JSON (holds a non-finite number (NaN)"),
    "1 GiB results.json": ({"config.json": XOR_CONFIG}, "results.json is not readable JSON (larger than 16 MiB)"),
    "FIFO config.json": ({}, "config.json is not a regular file"),
    "FIFO results.json": ({"config.json": XOR_CONFIG}, "results.json is not a regular file"),
    "FIFO state.npz": ({"config.json": XOR_CONFIG}, "backup/single_layer/state.npz is not a regular file"),
    "FIFO history.csv": ({"config.json": XOR_CONFIG}, "single_layer/history.csv is not a regular file"),
    "state.npz a link to itself": ({"config.json": XOR_CONFIG},
                                   "backup/single_layer/state.npz is not readable (Too many levels of symbolic links)"),
    "link to a FIFO as config.json": ({}, "config.json is not a regular file"),
    "nested state header": (_with_state(NESTED), f"{STATE_REFUSED} (nested deeper than 32 levels)"),
    "epochs_done -3": (_with_state(_header(epochs_done=-3)), f"{STATE_REFUSED} (epochs_done -3 of epochs 4"),
    "epochs_done 2.5": (_with_state(_header(epochs_done=2.5)), f"{STATE_REFUSED} (epochs_done 2.5 of epochs 4"),
    "epochs_done 1e30": (_with_state(_header(epochs_done=1e30)), f"{STATE_REFUSED} (epochs_done 1e+30 of epochs 4"),
    "epochs_done Infinity": (_with_state(_header(epochs_done=float("inf"))),
                             f"{STATE_REFUSED} (holds a non-finite number (Infinity)"),
    "experiment 5": (_with_state(_header(run={"experiment": 5, "config": _config_of("xor")})),
                     f"{STATE_REFUSED} (run.experiment 5"),
    "experiment a list": (_with_state(_header(run={"experiment": ["xor"]})),
                          f"{STATE_REFUSED} (run.experiment ['xor']"),
    "history.csv of NUL bytes": ({"config.json": XOR_CONFIG, "single_layer/history.csv": "\0" * 4096},
                                 "single_layer/history.csv holds NUL bytes, not CSV text"),
    "20 GiB history.csv": ({"config.json": XOR_CONFIG}, "single_layer/history.csv is larger than 64 MiB"),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_of_a_crafted_folder_exits_2_naming_the_file_and_changes_nothing(case, logdir):
    files, message = RESUME_CASES[case]
    run_dir = _make_folder(logdir, "xor", files)
    if case == "1 GiB results.json":
        _sparse(run_dir / "results.json")
    elif case == "20 GiB history.csv":
        _sparse(run_dir / "single_layer" / "history.csv", 20 * 2**30)
    elif case.startswith("FIFO "):
        _fifo(run_dir / {"FIFO config.json": "config.json", "FIFO results.json": "results.json",
                         "FIFO state.npz": "backup/single_layer/state.npz",
                         "FIFO history.csv": "single_layer/history.csv"}[case])
    elif case == "state.npz a link to itself":
        state = run_dir / "backup" / "single_layer" / "state.npz"
        state.parent.mkdir(parents=True)
        state.symlink_to(state)
    elif case == "link to a FIFO as config.json":
        _fifo(logdir / "fifo")
        (run_dir / "config.json").symlink_to(logdir / "fifo")
    before = _listing(logdir)
    proc = _here("run", "xor", "--resume", str(run_dir), timeout=90)  # a FIFO read would hang: the timeout fails
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"kexp: error: --resume '{run_dir}': ") and message in lines[0], lines[0][:600]
    assert len(lines[0]) < 600
    assert _listing(logdir) == before


def test_nested_tf_config_exits_2_in_one_line(logdir):
    # A process of its own: were the TF_CONFIG let through, a MultiWorkerMirroredStrategy made in the
    # test process would change the collective set-up of every test after it.
    proc = run_cli("run", "xor", "--strategy", "multi_worker", "--logdir", str(logdir),
                   env={"TF_CONFIG": "[" * 20000 + "]" * 20000})
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kexp: error: TF_CONFIG: received '[[[["), proc.stderr[-3000:]
    assert "(nested deeper than 32 levels)" in lines[0] and len(lines[0]) < 400
    assert list(logdir.iterdir()) == []


# --- kexp sweep --resume --------------------------------------------------------------------------------------


def _edit_point(**changes):
    def edit(sweep):
        sweep["points"][0].update(status="ok", **changes)
        return json.dumps(sweep)
    return edit


SWEEP_CASES = {
    "nested": (lambda sweep: NESTED, "sweep.json is not readable JSON (nested deeper than 32 levels)"),
    "NaN metric": (lambda sweep: _edit_point()(sweep).replace('"metrics": {}', '"metrics": {"a": NaN}', 1),
                   "sweep.json is not readable JSON (holds a non-finite number (NaN)"),
    "meets_bar maybe": (_edit_point(meets_bar="maybe"), "point 1's meets_bar is 'maybe'"),
    "meets_bar a list": (_edit_point(meets_bar=[True]), "point 1's meets_bar is [True]"),
    "metrics a list": (_edit_point(metrics=[1, 2]), "point 1's metrics is [1, 2]"),
    "a string as a metric": (_edit_point(metrics={"two_layer_accuracy": "high"}),
                             "point 1's metrics is {'two_layer_accuracy': 'high'}"),
    "wall_time_s a string": (_edit_point(wall_time_s="5"), "point 1's wall_time_s is '5'"),
    "exit_code true": (_edit_point(exit_code=True), "point 1's exit_code is True"),
    "1 GiB": (None, "sweep.json is not readable JSON (larger than 16 MiB)"),
    "a folder": (None, "sweep.json is not readable JSON (not a regular file)"),
    "a FIFO": (None, "sweep.json is not readable JSON (not a regular file)"),
}


@pytest.mark.parametrize("case", list(SWEEP_CASES))
def test_sweep_resume_of_a_crafted_sweep_json_exits_2_naming_it(case, logdir):
    sweep_dir, sweep = new_sweep("xor", {"model.hidden": ["2", "4"]}, [], logdir, "auto")
    edit, message = SWEEP_CASES[case]
    target = sweep_dir / "sweep.json"
    if edit is not None:
        target.write_text(edit(json.loads(json.dumps(sweep))))
    else:
        target.unlink()
        {"1 GiB": _sparse, "a folder": Path.mkdir, "a FIFO": _fifo}[case](target)
    before = _listing(logdir)
    proc = _here("sweep", "--resume", str(sweep_dir), timeout=90)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"kexp: error: sweep --resume {str(sweep_dir)!r}: ") and message in lines[0], lines[0]
    assert _listing(logdir) == before


# --- a run folder moved or linked before its first state -----------------------------------------------------


def test_moved_or_linked_run_killed_before_its_first_state_resumes(logdir, tmp_path):
    """Neither results.json nor a state names the experiment yet: the real folder or config.json does (item 12).

    The two resumes run one after the other in this process (they were two processes at once).
    """
    config = {**_config_of("xor")}
    config["train"] = {**config["train"], "epochs": 1}
    config["data"] = {"repeats": 8}
    linked_to = _make_folder(logdir, "xor", {"config.json": json.dumps(config, indent=2) + "\n"})
    link = tmp_path / "links" / "run"
    link.parent.mkdir()
    link.symlink_to(linked_to)
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    (linked_to.parent / "copy").mkdir()
    (linked_to.parent / "copy" / "config.json").write_text(json.dumps(config))
    (linked_to.parent / "copy").rename(moved)
    for folder in (link, moved):
        proc = _here("run", "xor", "--resume", str(folder), timeout=600)
        assert proc.returncode == 0, (folder, proc.stderr[-3000:])
        assert json.loads((folder / "results.json").read_text())["status"] == "ok"
    # A config.json of another experiment is still refused by the folder it is in.
    stray = tmp_path / "stray" / "run"
    stray.mkdir(parents=True)
    (stray / "config.json").write_text(json.dumps(_config_of("lstm_sine")))
    proc = _here("run", "xor", "--resume", str(stray))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"kexp: error: --resume '{stray}': a run of 'stray', not 'xor'; allowed: a run folder of xor "
        "(LOGDIR/xor/RUN_ID) that did not finish"]
