"""The command line: list, show, and bad input that exits 2 leaving nothing behind."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import finish, run_cli, run_cli_here, start_run


def test_list_names_experiments_without_importing_tensorflow():
    code = (
        "import sys; from kexp.cli import main; rc = main(['list']); "
        "assert rc == 0; "
        "assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules), 'TF imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert "lstm_sine" in names
    descriptions = dict(line.split(None, 1) for line in lines)
    assert descriptions["lstm_sine"].startswith("LSTM forecasts sin(x)")


def test_show_prints_resolved_config_with_overrides():
    proc = run_cli_here("show", "lstm_sine", "--set", "train.epochs=3")
    assert proc.returncode == 0, proc.stderr
    assert "train.epochs = 3  #" in proc.stdout
    assert "data.feature_length = 32" in proc.stdout
    assert proc.stdout.splitlines()[:3] == [
        "# lstm_sine: LSTM forecasts sin(x) from its own past values and rolls out on unseen x (tutorial 003).",
        "# quality bar: rollout_mse ≤ 1e-3, test_mse ≤ 1e-3",
        "# time at defaults: ~8 s (whole command, 2-core CPU; the README's table says which)"]


def test_runs_of_a_mistyped_experiment_suggests_the_name(tmp_path):
    proc = run_cli_here("runs", "lstm_sin", "--logdir", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"kexp: error: runs 'lstm_sin': no experiment or run folder of that name in "
                                   f"{tmp_path}; did you mean lstm_sine?")
    known = run_cli_here("runs", "cnn_zoo", "--logdir", str(tmp_path))
    assert (known.returncode, known.stdout.strip()) == (0, f"no runs of cnn_zoo in {tmp_path}")


BAD_INPUTS = [
    (["bench", "fnn", "--examples", "100000000000000000"], "bench fnn: --examples 100000000000000000: the case's "
                                                           "data (~1.17e+12 GiB, with the harness's copies) does not fit"),
    (["bench", "fnn", "--width", "1000000000000"], "bench fnn: --width 1000000000000: the model (~1.18e+07 GiB with "
                                                   "its gradients and Adam's slots) does not fit in this machine's memory"),
    (["bench", "--sweep", "--width", "1000000000000"], "bench --sweep: --width 1000000000000: the model"),
    (["bench", "--sweep", "--examples", "1"], "bench --sweep: --examples 1: too few to measure its largest batch "
                                              "(1,024) over full steps; allowed: an integer >= 1024"),
    (["sweep", "lstm_sine", "--grid", "=1,2"], "--grid '=1,2': key must be section.name; sections: data, model"),
    (["tensorboard", "--port", "\u0662"], "kexp tensorboard: argument --port: received '\u0662'; allowed: an integer 0-65535"),
    (["bench", "fnn", "--examples", "\u0662"], "kexp bench: argument --examples: received '\u0662'; allowed: an integer >= 1"),
    (["run", "lstm_sin"], "unknown experiment 'lstm_sin'; did you mean lstm_sine?"),
    (["run", "xor", "--name", "../up"], "--name: received '../up'; allowed: letters, digits, '_', '-' and '.' "
                                        "(not first), at most 200 characters: one folder name"),
    (["run", "xor", "--name", "wide", "--resume", "logs/xor/x"],
     "--name 'wide': a resumed run keeps its folder's name; allowed: --name without --resume"),
    (["run", "lstm_sine", "--set", "train.epoch=3"],
     "unknown key 'train.epoch'; did you mean train.epochs? valid keys of train:"),
    (["run", "lstm_sine", "--set", "train.epochs", "5"],
     "--set train.epochs 5: expected key=value; allowed: --set train.epochs=5"),
    (["run", "heart_mlp", "--set", "model.hidden=64x64"],
     "model.hidden: received '64x64'; allowed: integers separated by commas, e.g. model.hidden=64,64"),
    (["run", "lstm_sine", "--set", "train.epochs=x"], "train.epochs: received 'x'; allowed: an integer"),
    (["run", "lstm_sine", "--set", "train.epochs=0"], "train.epochs: received 0; allowed: a value >= 1"),
    (["run", "lstm_sine", "--set", "train.learning_rate=-1"], "train.learning_rate: received -1.0"),
    (["run", "lstm_sine", "--set", "train.batch_size=0"], "train.batch_size: received 0"),
    (["run", "lstm_sine", "--set", "nonsense"], "expected key=value"),
    (["run", "lstm_sine", "--strategy", "tpu"], "argument --strategy: invalid choice: 'tpu'"),
    (["run", "lstm_sine", "--strategy", "multi_worker"], "--strategy multi_worker needs TF_CONFIG"),
    (["show", "nope"], "unknown experiment 'nope'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    # Values past any real use (and past int64) fail on their declared bounds.
    (["run", "lstm_sine", "--set", "train.epochs=10000000000000000000"],
     "train.epochs: received 10000000000000000000; allowed: a value >= 1 and <= 1000000"),
    (["run", "lstm_sine", "--set", "train.batch_size=10000000000000000000"],
     "train.batch_size: received 10000000000000000000; allowed: a value >= 1 and <= 16777216"),
    (["run", "lstm_sine", "--set", "train.seed=4294967296"],
     "train.seed: received 4294967296; allowed: a value >= 0 and <= 4294967295"),
    # A value echoed in an error is cut to 80 characters (the test checks the line length).
    (["run", "lstm_sine", "--set", "train.epochs=" + "9" * 4000],
     "train.epochs: received " + "9" * 77 + "...; allowed: a value >= 1 and <= 1000000"),
    (["run", "lstm_sine", "--set", "train.epochs=" + "9" * 5000],  # past Python's int parsing limit
     "train.epochs: received '" + "9" * 76 + "...; allowed: an integer"),
    (["run", "lstm_sine", "--set", "data.train_range=0,1e12"],
     "data.train_range: received 0.0,1000000000000.0; allowed: at most 10,000,000 samples per range"),
    (["run", "lstm_sine", "--set", "data.interval=1e-6"], "allowed: at most 10,000,000 samples per range"),
    # The interval itself is named, not the range it would cut into too many samples.
    (["run", "lstm_sine", "--set", "data.interval=5e-324"], "data.interval: received 5e-324; allowed: a value >= 1e-06"),
    # Where consecutive x values merge in float64, a range or the rollout would sample the same x over and over.
    (["run", "lstm_sine", "--set", "eval.start=1.7976931348623157e308"],
     "eval.start: received 1.7976931348623157e+308; allowed: sample x values below 5.498e+11 in magnitude at "
     "data.interval 0.1"),
    (["run", "lstm_sine", "--set", "data.test_range=1e15,1.00000000001e15"],
     "data.test_range: received 1000000000000000.0,1000000000010000.0; allowed: sample x values below 5.498e+11"),
    # sigma too small for float32 to resolve next to mu (the figure's histogram failed on it).
    (["run", "dcgan_digits", "--set", "data.image_size=8"], "data.image_size: received 8; allowed: at least 16 "
                                                           "(the LeNet-5 judge) and a seed of 4-7 times a power of two"),
    (["run", "dcgan_digits", "--set", "data.image_size=18"], "data.image_size: received 18; allowed: at least 16"),
    (["run", "dcgan_digits", "--set", "data.image_size=0"], "data.image_size: received 0 (0 keeps digits at 8x8); allowed"),
    (["run", "gan_gaussian_1d", "--set", "data.mu=1e6", "--set", "data.sigma=1e-300"],
     "data.sigma: received 1e-300; allowed: >= 61.04 at data.mu=1000000.0 (sigma >= |mu| / 16384"),
    (["run", "gan_gaussian_1d", "--set", "data.mu=1e6", "--set", "data.sigma=0.001"],
     "data.sigma: received 0.001; allowed: >= 61.04 at data.mu=1000000.0"),
    (["run", "lstm_sine", "--set", "eval.horizon=1e12"], "eval.horizon: received 1000000000000.0; allowed: at most"),
    (["run", "heart_mlp", "--set", "data.grid=1000000"], "data.grid: received 1000000; allowed: a value >= 20 and <= 4096"),
    (["run", "xor", "--set", "data.repeats=" + "9" * 30], "data.repeats: received 999999999999999999999999999999"),
]

# Longest legitimate message (unknown key listing a section's keys) is ~230 characters.
MAX_LINE = 400


def _assert_exit_2_one_line(proc, message: str, logdir: Path) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("kexp: error: ")
    assert message in lines[0], lines[0]
    assert len(lines[0]) <= MAX_LINE, lines[0][:500]
    assert list(logdir.rglob("*")) == []


def _ids(rows) -> list[str]:
    return [" ".join(a)[:60] + ("..." if len(" ".join(a)) > 60 else "") for a, _ in rows]


# One fresh process runs every refused command line of this file, one after the other, each with its own
# environment and run folder (`main` in a fresh `python`, as `kexp` runs it), instead of one process each: they
# all end before TensorFlow, so a process costs its start-up only. It is bounded by a timeout, so a
# command line that is not refused (and starts training) fails its test instead of hanging it.
_RUN_MANY = r"""
import contextlib, io, json, os, sys, traceback
from kexp.cli import main
done = []
for args, env in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as stop:  # argparse's usage errors
                code = stop.code if isinstance(stop.code, int) else 1
            except BaseException:  # what `python -m kexp` would print, for the test to see
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
    done.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(done))
"""


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> dict:
    """Runs every case of BAD_INPUTS and BAD_TF_CONFIGS in one fresh process: `{(group, i): (proc, logdir)}`."""
    root = tmp_path_factory.mktemp("refused")
    cases, keys = [], []
    for group, rows in (("input", [(args,) for args, _ in BAD_INPUTS]),
                        ("tf_config", [(["run", "xor", "--strategy", "multi_worker"], tf_config)
                                       for tf_config, _ in BAD_TF_CONFIGS])):
        for i, row in enumerate(rows):
            args = list(row[0])
            logdir = root / f"{group}{i}"
            logdir.mkdir()
            if args[0] == "run":
                args += ["--logdir", str(logdir)]
            env = {"TF_CONFIG": row[1] if group == "tf_config" else ""}
            cases.append([args, env])
            keys.append(((group, i), logdir))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", _RUN_MANY], input=json.dumps(cases), capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads(proc.stdout.strip().splitlines()[-1])
    return {key: (subprocess.CompletedProcess(args, *result), logdir)
            for (key, logdir), (args, _), result in zip(keys, cases, done)}


@pytest.mark.parametrize("index", range(len(BAD_INPUTS)), ids=_ids(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_no_run_folder(index, refused):
    proc, logdir = refused["input", index]
    _assert_exit_2_one_line(proc, BAD_INPUTS[index][1], logdir)


def _tf_config(workers=("localhost:12345",), task_type="worker", index=0) -> str:
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": task_type, "index": index}})


BAD_TF_CONFIGS = [
    (_tf_config(workers="localhost:12345"),
     "TF_CONFIG cluster.worker: received 'localhost:12345'; allowed: a non-empty list of \"host:port\" strings"),
    (_tf_config(workers=[1, 2]), "TF_CONFIG cluster.worker: received [1, 2]; allowed: a non-empty list"),
    (_tf_config(workers=[]), "TF_CONFIG cluster.worker: received []; allowed: a non-empty list"),
    (_tf_config(task_type="chief"), "TF_CONFIG task.type: received 'chief'; allowed: a job of the cluster (worker)"),
    (_tf_config(task_type=["worker"]), "TF_CONFIG task.type: received ['worker']; allowed: a job of the cluster"),
    (_tf_config(index=1), "TF_CONFIG task.index: received 1; allowed: an integer 0..0 (cluster.worker has 1 address)"),
    (_tf_config(index=-1), "TF_CONFIG task.index: received -1; allowed: an integer 0..0"),
    (_tf_config(index="0"), "TF_CONFIG task.index: received '0'; allowed: an integer 0..0"),
    (_tf_config(index=True), "TF_CONFIG task.index: received True; allowed: an integer 0..0"),
    (_tf_config(workers=["h" * 5000 + ":1"], index=7), "TF_CONFIG task.index: received 7"),
    (json.dumps([1, 2]), "TF_CONFIG: received '[1, 2]'; allowed: JSON {"),
    (json.dumps({"cluster": {"worker": ["h:1"]}, "task": "worker"}), "TF_CONFIG: received"),
    (json.dumps({"cluster": {"chief": ["h:1"]}, "task": {"type": "chief", "index": 0}}),
     "TF_CONFIG cluster: received {'chief': ['h:1']}; allowed: a cluster with a worker list"),
    (_tf_config(workers=["nohostport"]), 'TF_CONFIG cluster.worker: received [\'nohostport\']; allowed: a non-empty list of "host:port"'),
    (_tf_config(workers=["localhost:99999"]), "TF_CONFIG cluster.worker: received ['localhost:99999']"),
    (json.dumps({"cluster": {"worker": ["localhost:2"], "ps": ["localhost:3"]}, "task": {"type": "ps", "index": 0}}),
     "TF_CONFIG cluster: received a 'ps' job; allowed: worker and chief jobs"),
    (json.dumps({"cluster": {"worker": ["h" * 5000 + ":1"]}, "task": {}}), "TF_CONFIG task.type: received None"),
]


@pytest.mark.parametrize("index", range(len(BAD_TF_CONFIGS)), ids=[m[:50] for _, m in BAD_TF_CONFIGS])
def test_wrong_tf_config_exits_2_with_one_line_before_tensorflow(index, refused):
    proc, logdir = refused["tf_config", index]
    _assert_exit_2_one_line(proc, BAD_TF_CONFIGS[index][1], logdir)


def test_tf_config_whose_own_port_is_in_use_exits_2_before_tensorflow(logdir):
    import socket

    with socket.socket() as holder:  # another program on this worker's port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        tf_config = _tf_config(workers=(f"127.0.0.1:{port}", "127.0.0.1:1"))
        proc = run_cli("run", "xor", "--strategy", "multi_worker", "--logdir", str(logdir), env={"TF_CONFIG": tf_config})
    _assert_exit_2_one_line(proc, f"TF_CONFIG cluster.worker[0] (this worker's own address): received "
                                  f"'127.0.0.1:{port}'; port {port} is in use on this machine", logdir)


@pytest.mark.parametrize("saved, message", [
    ({"train": "abc"}, "train: received 'abc'; allowed: a JSON object of key: value"),
    ({"train": {"epochs": {"a": 1}}}, "train.epochs: received {'a': 1}; allowed: a string, number"),
    ({"data": ["x" * 1000]}, "data: received ['xxxxx"),
])
def test_resume_config_json_of_the_wrong_shape_exits_2(saved, message, logdir):
    run_dir = logdir / "lstm_sine" / "20260101-000000-abcdef"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(saved))
    proc = run_cli_here("run", "lstm_sine", "--resume", str(run_dir))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "config.json does not fit experiment 'lstm_sine'" in lines[0] and message in lines[0], lines[0]
    # The line echoes the run folder, whose length depends on where pytest puts it.
    assert len(lines[0].replace(str(run_dir), "RUN_DIR")) <= MAX_LINE, lines[0][:500]
    assert sorted(p.name for p in logdir.rglob("*")) == ["20260101-000000-abcdef", "config.json", "lstm_sine"]
    assert json.loads((run_dir / "config.json").read_text()) == saved


def test_unwritable_logdir_exits_2(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = run_cli_here("run", "lstm_sine", "--set", "train.epochs=1", "--logdir", str(blocker / "logs"))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("kexp: error: --logdir "), proc.stderr
    assert "not writable" in lines[-1]


def test_run_whose_reader_leaves_trains_to_the_end_and_ends_ok(logdir):
    # `kexp run xor | head -2`: the reader takes two lines and closes the pipe; only the output is lost.
    proc = start_run("xor", "--logdir", str(logdir), "--set", "train.epochs=3")
    first = [proc.stdout.readline() for _ in range(2)]
    proc.stdout.close()
    code, _, err = finish(proc, timeout=300)
    assert code == 0, err[-3000:]
    assert "Traceback" not in err and "BrokenPipeError" not in err, err[-3000:]
    run_dir = Path(first[0].strip().removeprefix("kexp: run folder "))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert list((run_dir / "models").glob("*.keras"))


def test_run_folders_are_named_after_their_settings_or_name_and_the_end_names_figures_and_tensorboard(logdir,
                                                                                                     monkeypatch):
    monkeypatch.chdir(logdir)
    first = run_cli_here("run", "xor", "--set", "train.epochs=1", "--set", "model.hidden=4")
    assert first.returncode == 0, first.stderr[-2000:]
    lines = first.stdout.strip().splitlines()
    run_dir = Path(lines[-1].removeprefix("run_dir: "))
    assert re.fullmatch(r"\d{8}-\d{6}-hidden=4\+epochs=1", run_dir.name), run_dir.name
    assert lines[-3:-1] == [f"figures: decision_boundaries.png (in logs/xor/{run_dir.name})",
                            "tensorboard: kexp tensorboard --logdir logs/xor"]
    # Each of xor's two fits is headed by its name: two blocks of `Epoch 1/1` are told apart.
    headings = [line for line in lines if line.startswith("fit ")]
    assert headings == ["fit single_layer: 1 epoch", "fit two_layer: 1 epoch"], first.stdout[:2000]
    # The same settings twice in one second stay apart; --name replaces the settings; defaults say so.
    named = [run_cli_here("run", "xor", "--set", "train.epochs=1", "--name", "tiny") for _ in range(2)]
    assert [p.returncode for p in named] == [0, 0]
    names = sorted(Path(p.stdout.strip().splitlines()[-1]).name for p in named)
    assert all(re.fullmatch(r"\d{8}-\d{6}-tiny(\+run2)?", name) for name in names) and len(set(names)) == 2, names
    from kexp.store.names import run_label

    assert run_label({}) == "defaults"
    assert run_label({"model.hidden": (64, 64), "train.lr_schedule": "cosine", "data.noise": 0.5,
                      "train.deterministic": True}) == "hidden=64,64+lr_schedule=cosine+noise=0.5+deterministic=true"
    long = run_label({f"model.key{i}": "v" * 12 for i in range(8)})
    assert len(long) <= 60 and long.endswith("-more") and long.startswith("key0=vvvvvvvvvvvv+"), long
    assert run_label({"data.name": "a/b c"}) == "name=a-b-c"
    assert run_label({"train.learning_rate": 1.0000001, "data.noise": 1e-05}) == "learning_rate=1.0000001+noise=1e-05"


def test_diverged_run_exits_1_with_status_diverged(logdir):
    proc = run_cli_here(
        "run", "lstm_sine", "--logdir", str(logdir), "--set", "train.optimizer=sgd",
        "--set", "train.learning_rate=1e9", "--set", "train.epochs=3", "--set", "model.units=8",
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "status: diverged" in proc.stdout
    run_dir = Path(proc.stdout.strip().splitlines()[-1].removeprefix("run_dir: "))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "diverged"
    assert results["metrics"]["rollout_mse"] is None  # NaN is written as null


@pytest.mark.parametrize("value, message", [
    ("100000", "KEXP_CPU_DEVICES: received 100000; allowed: an integer 1..64"),
    ("x" * 500, "KEXP_CPU_DEVICES: received 'xxxxxxxx"),
    ("\u0662", "KEXP_CPU_DEVICES: received '\u0662'; allowed: an integer 1..64"),
])
def test_logical_cpu_devices_are_bounded(value, message, logdir):
    proc = run_cli("run", "xor", "--strategy", "mirrored", "--logdir", str(logdir), env={"KEXP_CPU_DEVICES": value})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and len(lines[0]) < 300, proc.stderr
    assert list(logdir.iterdir()) == []


def test_a_bad_cpu_device_count_stops_a_sweep_resume_before_any_point(tmp_path):
    """Checked once by the sweep, before TensorFlow, not by each point after its import (issue 28)."""
    from kexp.cli.sweep import new_sweep

    sweep_dir, _ = new_sweep("xor", {"model.hidden": ["2", "4"]}, [], tmp_path, "auto")
    before = (sweep_dir / "sweep.json").read_bytes()
    proc = run_cli("sweep", "--resume", str(sweep_dir), env={"KEXP_CPU_DEVICES": "abc"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "kexp: error: KEXP_CPU_DEVICES: received 'abc'; allowed: an integer 1..64"]
    assert (sweep_dir / "sweep.json").read_bytes() == before
    assert not (sweep_dir / "points").exists()


def test_bare_kexp_prints_its_usage_and_commands_and_argparse_errors_say_kexp_once():
    """Issue 25: bare `kexp` printed `kexp: error: kexp: the following arguments are required: command`."""
    proc = run_cli_here()
    assert proc.returncode == 2
    assert proc.stdout.startswith("usage: kexp ")
    for command in ("list", "run", "runs", "sweep", "check", "bench", "tensorboard"):
        assert f"    {command} " in proc.stdout, command  # each command with its help line
    assert proc.stderr.strip().splitlines() == [
        "kexp: error: no command given; allowed: list, show, run, bench, runs, tensorboard, sweep, search, check "
        "(kexp COMMAND --help)"]
    bogus = run_cli_here("bogus")
    assert bogus.returncode == 2
    assert bogus.stderr.strip().startswith("kexp: error: argument command: invalid choice: 'bogus'")
    assert run_cli_here("run").stderr.strip() == "kexp: error: kexp run: the following arguments are required: name"


def test_tensorboard_notes_a_logdir_holding_several_experiments(tmp_path, monkeypatch):
    from kexp.cli.board import several_experiments_note

    for experiment in ("xor", "lstm_sine"):
        (tmp_path / experiment / "20261204-101010-defaults").mkdir(parents=True)
        (tmp_path / experiment / "20261204-101010-defaults" / "config.json").write_text("{}")
    (tmp_path / "stray").mkdir()  # no runs in it: not an experiment
    assert several_experiments_note(str(tmp_path)) == (
        f"kexp: note: {tmp_path} holds runs of 2 experiments (lstm_sine, xor); TensorBoard lists every run of each. "
        f"To compare one experiment's runs: kexp tensorboard --logdir {tmp_path}/lstm_sine")
    assert several_experiments_note(str(tmp_path / "xor")) == ""  # one experiment's runs
    # The command in the note pastes back: a folder with a space is quoted, one starting with `-` is not an option.
    for logdir, shown in (("my logs", "'my logs/lstm_sine'"), ("-logs", "./-logs/lstm_sine")):
        for experiment in ("xor", "lstm_sine"):
            (tmp_path / logdir / experiment / "r").mkdir(parents=True)
            (tmp_path / logdir / experiment / "r" / "config.json").write_text("{}")
        monkeypatch.chdir(tmp_path)
        assert several_experiments_note(logdir).endswith(f"kexp tensorboard --logdir {shown}")
    from kexp.cli.run_command import _from_here

    assert _from_here(tmp_path / "-logs" / "xor") == "./-logs/xor"
    assert _from_here(tmp_path / "my logs" / "xor") == "my logs/xor"  # quoted where it is printed as a command
