"""Bad resume folders, failed writes, divergence and concurrent runs: real processes, nothing mocked.

The argument and config cases of the bad-input table are in `test_cli.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from kexp import checkpoint, registry
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


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_bad_resume_folder_exits_2_and_changes_nothing(case, logdir):
    experiment, files, message = RESUME_CASES[case]
    if files is None:
        run_dir = logdir / "lstm_sine" / "no-such-run"
    else:
        run_dir = _make_folder(logdir, experiment, files)
        if case == "state of another model":
            _foreign_state(run_dir / "backup" / "model")
    before = _snapshot(logdir)
    proc = run_cli("run", "lstm_sine", "--resume", str(run_dir))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"kexp: error: --resume '{run_dir}': ") and message in lines[0], lines[0]
    assert _snapshot(logdir) == before  # nothing written, nothing removed


def test_resume_with_overrides_exits_2(logdir):
    run_dir = _make_folder(logdir, "lstm_sine", {"config.json": LSTM_CONFIG})
    proc = run_cli("run", "lstm_sine", "--resume", str(run_dir), "--set", "train.epochs=3")
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
    proc = run_cli("run", "poisoned", "--logdir", str(logdir), env={"KEXP_EXPERIMENTS_PATH": str(tmp_path / "exps")})
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
    proc = run_cli("run", "blocked_results", "--logdir", str(logdir), env={"KEXP_EXPERIMENTS_PATH": str(tmp_path / "exps")})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kexp: error: could not write "), proc.stderr
    run_dir = next((logdir / "blocked_results").iterdir())
    assert (run_dir / "results.json").is_dir()
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".results.json")] == []  # no temp file left


def test_two_runs_at_once_finish_in_two_folders_that_tensorboard_lists(logdir):
    args = [sys.executable, "-m", "kexp", "run", "xor", "--logdir", str(logdir), "--set", "train.epochs=3"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    dirs = {out.strip().splitlines()[-1].removeprefix("run_dir: ") for out, _ in outs}
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
