"""A signal at any moment of a run's start ends as the README says (issue 22 item 4): 130/143, no traceback,
and either no run folder or one with `results.json` status `interrupted` that `--resume` finishes."""

from __future__ import annotations

import json
import signal
import time

import pytest
from helpers import finish, run_cli, signal_at, start_run


def _check_ended_cleanly(code: int, err: str, signum: int, logdir) -> list:
    assert code == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    folders = list((logdir / "xor").iterdir()) if (logdir / "xor").exists() else []
    for folder in folders:
        assert (folder / "config.json").is_file()
        assert json.loads((folder / "results.json").read_text())["status"] == "interrupted"
        assert f"continue with --resume {folder}" in err
    if not folders:
        assert err.strip().endswith("nothing to resume") and len(err.strip().splitlines()) == 1, err
    return folders


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_as_the_run_folder_appears_is_a_clean_resumable_stop(signum, logdir):
    proc = start_run("xor", "--logdir", str(logdir), "--set", "train.epochs=2")
    signal_at(proc, "kexp: run folder", signum)
    code, _, err = finish(proc)
    (folder,) = _check_ended_cleanly(code, err, signum, logdir)
    resumed = run_cli("run", "xor", "--resume", str(folder))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((folder / "results.json").read_text())["status"] == "ok"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5])
def test_a_signal_while_tensorflow_starts_leaves_nothing(signum, delay, logdir):
    proc = start_run("xor", "--logdir", str(logdir), "--set", "train.epochs=2")
    time.sleep(delay)
    proc.send_signal(signum)
    code, _, err = finish(proc)
    _check_ended_cleanly(code, err, signum, logdir)
