"""Bad resume folders, failed writes, divergence and concurrent runs: real files and disks, nothing mocked.

The argument and config cases of the bad-input table are in `test_cli.py`. A
command runs in this process (`run_cli_here`) unless a process is the point:
a run killed by SIGKILL, a SIGTERM, two processes at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import read_events, run_cli, run_cli_here
from runkit import copy_run, epochs_logged, made_once, snapshot

from kexp.store import checkpoint
from kexp import registry
from kexp.config import to_dict


def _config_of(name: str) -> dict:
    return to_dict(registry.load(name).CONFIG)


def _make_folder(logdir: Path, experiment: str, files: dict[str, bytes | str]) -> Path:
    run_dir = logdir / experiment / "20260101-000000-abcdef"
    for rel, content in files.items():
        path = run_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _foreign_state(path: Path) -> None:
    """Writes a valid state file of a model other than lstm_sine's."""
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    checkpoint.save(path, model, epochs_done=1, epochs=30)


LSTM_CONFIG = json.dumps(_config_of("lstm_sine"))
RESUME_CASES = {
    "missing folder": ("lstm_sine", None, "not a folder"),
    "other experiment's folder": ("xor", {"config.json": json.dumps(_config_of("xor"))}, "a run of 'xor', not 'lstm_sine'"),
    "no config.json": ("lstm_sine", {"history.csv": "epoch,loss\n"}, "no config.json in it"),
    "corrupt config.json": ("lstm_sine", {"config.json": '{"data": {"function": "si'}, "config.json is not readable JSON"),
    "config of another experiment": ("lstm_sine", {"config.json": json.dumps(_config_of("xor"))},
                                     "config.json does not fit experiment 'lstm_sine'"),
    "torn state file": ("lstm_sine", {"config.json": LSTM_CONFIG, "backup/model/state.npz": b"PK\x03\x04 torn"},
                        "is not a readable kexp training state"),
    "finished run": ("lstm_sine", {"config.json": LSTM_CONFIG, "results.json": json.dumps(
        {"experiment": "lstm_sine", "status": "ok"})}, "this run finished (status ok)"),
    "state of another model": ("lstm_sine", {"config.json": LSTM_CONFIG}, "does not match this model"),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_bad_resume_folder_exits_2_and_changes_nothing(case, logdir):
    experiment, files, message = RESUME_CASES[case]
    if files is None:
        run_dir = logdir / "lstm_sine" / "no-such-run"
    else:
        run_dir = _make_folder(logdir, experiment, files)
        if case == "state of another model":
            _foreign_state(run_dir / "backup" / "model")
    before = snapshot(logdir)
    proc = run_cli_here("run", "lstm_sine", "--resume", str(run_dir))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"kexp: error: --resume '{run_dir}': ") and message in lines[0], lines[0]
    assert snapshot(logdir) == before  # nothing written, nothing removed


def test_resume_with_overrides_exits_2(logdir):
    run_dir = _make_folder(logdir, "lstm_sine", {"config.json": LSTM_CONFIG})
    proc = run_cli_here("run", "lstm_sine", "--resume", str(run_dir), "--set", "train.epochs=3")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("kexp: error: --resume continues with the run's saved config; "
                                   "received --set 'train.epochs=3'; allowed: --resume without --set")


POISONED = textwrap.dedent('''
    """A linear fit whose weights turn NaN as epoch 3 begins: the loss goes NaN mid-run."""
    from kexp.config import ExperimentConfig, TrainConfig

    CONFIG = ExperimentConfig(data=None, model=None, train=TrainConfig(epochs=6, batch_size=16))


    def run(config, harness):
        import keras
        import numpy as np

        x = np.linspace(-1, 1, 256, dtype="float32")[:, None]

        def poison(epoch, logs):
            if epoch == 2:
                kernel = model_ref[0].layers[-1].kernel
                kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))

        model_ref = []

        def build():
            model_ref.append(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
            return model_ref[0]

        model = harness.fit(build, (x, 3 * x), loss="mse",
                            callbacks=[keras.callbacks.LambdaCallback(on_epoch_begin=poison)])
        return harness.evaluate(model, (x, 3 * x))
''')


def test_run_that_goes_nan_exits_1_diverged_keeping_its_last_good_state(tmp_path, logdir):
    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "poisoned.py").write_text(POISONED)
    proc = run_cli_here("run", "poisoned", "--logdir", str(logdir),
                        env={"KEXP_EXPERIMENTS_PATH": str(tmp_path / "exps")})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "status: diverged" in proc.stdout
    run_dir = Path(proc.stdout.strip().splitlines()[-1].removeprefix("run_dir: "))
    assert json.loads((run_dir / "results.json").read_text())["status"] == "diverged"
    state = checkpoint.load(checkpoint.state_path(run_dir / "backup" / "model"))
    assert state.epochs_done == 2  # epochs 1 and 2 were good; the NaN epoch was not saved
    assert all(np.isfinite(a).all() for a in state.arrays.values())


RESULTS_BLOCKER = textwrap.dedent('''
    """Trains nothing; a folder named results.json makes the results write fail."""
    from kexp.config import ExperimentConfig

    CONFIG = ExperimentConfig(data=None, model=None)


    def run(config, harness):
        (harness.run_dir / "results.json").mkdir()
        return {"answer": 42.0}
''')


def test_results_write_failure_exits_1_with_one_line_and_no_partial_file(tmp_path, logdir):
    # Folder permissions do not stop root (CI runs as root), so the write is
    # made to fail by a folder standing where the file must go.
    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "blocked_results.py").write_text(RESULTS_BLOCKER)
    proc = run_cli_here("run", "blocked_results", "--logdir", str(logdir),
                        env={"KEXP_EXPERIMENTS_PATH": str(tmp_path / "exps")})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kexp: error: could not write "), proc.stderr
    run_dir = next((logdir / "blocked_results").iterdir())
    assert (run_dir / "results.json").is_dir()
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".results.json")] == []  # no temp file left


XOR_QUICK = ("--set", "train.epochs=2", "--set", "data.repeats=8")


@pytest.fixture(scope="session")
def xor_runs(tmp_path_factory) -> tuple[Path, dict]:
    """Two xor runs started at once in FOLDER/logs; meanwhile one with model.hidden=4 in FOLDER/other (in this process).

    Made once (`made_once`): the concurrency test reads them, the resume
    tests take copies. Returns the folder and `{"at_once": [[returncode,
    stdout, stderr], ...], "other": [...]}` (asserted by the tests).
    """
    def make(folder: Path) -> None:
        args = [sys.executable, "-m", "kexp", "run", "xor", *XOR_QUICK]
        procs = [subprocess.Popen([*args, "--logdir", str(folder / "logs")], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        try:
            other = run_cli_here("run", "xor", *XOR_QUICK, "--logdir", str(folder / "other"),
                                 "--set", "model.hidden=4")
            outs = [p.communicate(timeout=600) for p in procs]
        finally:
            for p in procs:
                p.kill()
        (folder / "runs.json").write_text(json.dumps({
            "at_once": [[p.returncode, out, err] for p, (out, err) in zip(procs, outs)],
            "other": [other.returncode, other.stdout, other.stderr]}))

    folder = made_once(tmp_path_factory, "xor_runs", make)
    return folder, json.loads((folder / "runs.json").read_text())


def _run_dir_of(stdout: str) -> Path:
    return Path(stdout.strip().splitlines()[-1].removeprefix("run_dir: "))


def test_two_runs_at_once_finish_in_two_folders_that_tensorboard_lists(xor_runs):
    folder, runs = xor_runs
    logdir = folder / "logs"
    assert [code for code, _, _ in runs["at_once"]] == [0, 0], [err[-2000:] for _, _, err in runs["at_once"]]
    dirs = {str(_run_dir_of(out)) for _, out, _ in runs["at_once"]}
    assert len(dirs) == 2
    assert {str(p) for p in (logdir / "xor").iterdir()} == dirs
    for d in dirs:
        assert json.loads((Path(d) / "results.json").read_text())["status"] == "ok"

    from tensorboard.backend.event_processing import plugin_event_multiplexer

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    runs = set(multiplexer.Runs())
    for d in dirs:
        run_id = Path(d).name
        assert f"xor/{run_id}/two_layer/train" in runs, runs
        assert f"xor/{run_id}/two_layer/validation" in runs, runs


def test_killed_run_moved_elsewhere_resumes_by_its_state_and_logs_no_epoch_twice(killed_at_2, killable, logdir,
                                                                                 tmp_path):
    """Was two tests (kill between log and state write; moved unfinished run): one resume checks both."""
    run_dir = copy_run(killed_at_2, logdir)
    assert checkpoint.load(checkpoint.state_path(run_dir / "backup" / "model")).epochs_done == 2
    assert epochs_logged(run_dir)[0] == [0, 1, 2]  # epoch 2 logged, its state never saved
    (run_dir / ".results.json.abc123.tmp").write_text("{")  # writes torn by a kill
    (run_dir / "train" / ".fitlogs-abc123.tmp").write_text("x")
    moved = tmp_path / "elsewhere" / "run"  # out of LOGDIR/killable: the state names the experiment
    moved.parent.mkdir()
    run_dir.rename(moved)
    resumed = run_cli_here("run", "killable", "--resume", str(moved), env=killable)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.strip().splitlines()[-1] == f"run_dir: {moved}"
    assert epochs_logged(moved) == ([0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3])
    assert not list(moved.rglob(".*.tmp"))
    # Run-level TensorBoard points too: the figure of epoch 2 (logged before the kill) and the
    # model summary are written again by the resumed run, and replace the old ones.
    root = read_events(moved)  # the run's own event file, at its root
    assert [step for step, _ in root["per_epoch"]] == [0, 1, 2, 3]
    assert [step for step, _ in root["model_summary/model"]] == [0]
    assert [step for step, _ in root["config"]] == [0]


def test_resume_refuses_an_edited_config_and_changes_nothing(killed_at_2, killable, logdir):
    run_dir = copy_run(killed_at_2, logdir)
    config = json.loads((run_dir / "config.json").read_text())
    config["train"]["epochs"] = 2
    (run_dir / "config.json").write_text(json.dumps(config))
    before = snapshot(run_dir)
    proc = run_cli_here("run", "killable", "--resume", str(run_dir), env=killable)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.json differs from the config backup/model was trained with " \
        "(train.epochs: 2 in config.json, 4 in its state)" in lines[0], proc.stderr
    assert snapshot(run_dir) == before


def test_resume_with_backup_deleted_refuses_to_retrain_over_its_history(killed_at_2, killable, logdir):
    run_dir = copy_run(killed_at_2, logdir)
    shutil.rmtree(run_dir / "backup")
    before = snapshot(run_dir)
    proc = run_cli_here("run", "killable", "--resume", str(run_dir), env=killable)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "history.csv holds 3 epochs but backup/model with their saved state is missing" in proc.stderr
    assert snapshot(run_dir) == before


def test_a_locked_folder_refuses_a_second_process_and_of_two_resumes_at_once_one_trains(killed_at_2, killable,
                                                                                        logdir):
    """Was two tests (locked folder; two resumes at once): the resumes after the lock is let go are the two at once.

    The refused resume runs in this process: a `flock` held on another open of the folder blocks it as
    another process's would. The two resumes at once are two processes.
    """
    run_dir = copy_run(killed_at_2, logdir)
    before = snapshot(run_dir)
    held = os.open(run_dir, os.O_RDONLY)  # locked as the process training in it locks it
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_cli_here("run", "killable", "--resume", str(run_dir), env=killable)
    finally:
        os.close(held)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--resume '{run_dir}': in use by another kexp process" in lines[0], proc.stderr
    assert snapshot(run_dir) == before
    # The lock goes with its holder: now a resume runs. Of two at once, one trains; the second finds the
    # folder locked, or, started after the first ended, finished: exit 2 either way.
    args = [sys.executable, "-m", "kexp", "run", "killable", "--resume", str(run_dir)]
    env = {**os.environ, **killable, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 2], [err[-2000:] for _, err in outs]
    assert epochs_logged(run_dir)[0] == [0, 1, 2, 3]


SIGNAL_IN_RESULTS_WRITE = textwrap.dedent('''
    """Trains nothing; SIGTERM arrives while results.json is being written."""
    import os
    import signal

    from kexp.store import rundir
    from kexp.config import ExperimentConfig

    CONFIG = ExperimentConfig(data=None, model=None)
    _write_json = rundir.write_json


    def _signalled_write(path, data):
        if path.name == "results.json":
            os.kill(os.getpid(), signal.SIGTERM)
        _write_json(path, data)


    def run(config, harness):
        rundir.write_json = _signalled_write
        return {"answer": 42.0}
''')

EXITS_EARLY = textwrap.dedent('''
    """Calls sys.exit(0) in the middle of its run."""
    import sys

    from kexp.config import ExperimentConfig

    CONFIG = ExperimentConfig(data=None, model=None)


    def run(config, harness):
        sys.exit(0)
''')


def test_sigterm_while_results_are_written_leaves_status_interrupted(tmp_path, logdir):
    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "late_signal.py").write_text(SIGNAL_IN_RESULTS_WRITE)
    proc = run_cli("run", "late_signal", "--logdir", str(logdir), env={"KEXP_EXPERIMENTS_PATH": str(tmp_path / "exps")})
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "kexp: interrupted (SIGTERM)" in proc.stderr
    (run_dir,) = (logdir / "late_signal").iterdir()
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"
    assert proc.stdout.strip().splitlines()[-1] == f"run_dir: {run_dir}"


def test_experiment_calling_sys_exit_0_exits_1_with_status_failed(tmp_path, logdir):
    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "exits_early.py").write_text(EXITS_EARLY)
    proc = run_cli_here("run", "exits_early", "--logdir", str(logdir),
                        env={"KEXP_EXPERIMENTS_PATH": str(tmp_path / "exps")})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "experiment exited (sys.exit(0)) before it finished" in proc.stderr
    (run_dir,) = (logdir / "exits_early").iterdir()
    assert json.loads((run_dir / "results.json").read_text())["status"] == "failed"


def test_resume_whose_second_fit_state_is_foreign_fails_before_the_first_fit_trains(xor_runs, logdir):
    # xor trains two fits; give the second one the state of a run with other settings (model.hidden=4).
    folder, runs = xor_runs
    assert runs["other"][0] == 0, runs["other"][2][-2000:]
    run_dir = copy_run(_run_dir_of(runs["at_once"][0][1]), logdir)
    other_dir = _run_dir_of(runs["other"][1])
    (run_dir / "results.json").unlink()  # as if killed in the second fit
    state = checkpoint.state_path(run_dir / "backup" / "two_layer")
    state.write_bytes(checkpoint.state_path(other_dir / "backup" / "two_layer").read_bytes())
    before = snapshot(run_dir)
    proc = run_cli_here("run", "xor", "--resume", str(run_dir))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "config.json differs from the config backup/two_layer was trained with (model.hidden: " in proc.stderr
    assert snapshot(run_dir) == before


def test_a_state_copied_into_another_fits_backup_is_refused(xor_runs, logdir):
    folder, runs = xor_runs
    assert runs["at_once"][1][0] == 0, runs["at_once"][1][2][-2000:]
    run_dir = copy_run(_run_dir_of(runs["at_once"][1][1]), logdir)
    (run_dir / "results.json").unlink()  # as if killed in the second fit
    single = checkpoint.state_path(run_dir / "backup" / "single_layer").read_bytes()
    checkpoint.state_path(run_dir / "backup" / "two_layer").write_bytes(single)
    before = snapshot(run_dir)
    resumed = run_cli_here("run", "xor", "--resume", str(run_dir))
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    assert "backup/two_layer holds the state of fit \"single_layer\"" in resumed.stderr
    assert snapshot(run_dir) == before
