"""What a run leaves for TensorBoard, read back with TensorBoard's own readers, and `kexp tensorboard` serving it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import kexp
from helpers import read_events, run_cli, run_cli_here

HPARAMS = "_hparams_/session_start_info"
SESSION_END = "_hparams_/session_end_info"


def _hparams_events(folder: Path) -> dict[str, list]:
    """Returns the HParams plugin's session start and end infos in `folder`, parsed: `{tag: [proto, ...]}`."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import metadata

    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    out: dict[str, list] = {HPARAMS: [], SESSION_END: []}
    for tag in out:
        if tag not in acc.Tags()["tensors"]:
            continue
        content = acc.SummaryMetadata(tag).plugin_data.content
        assert acc.SummaryMetadata(tag).plugin_data.plugin_name == "hparams"
        parse = (metadata.parse_session_start_info_plugin_data if tag == HPARAMS
                 else metadata.parse_session_end_info_plugin_data)
        out[tag] = [parse(content) for _ in acc.Tensors(tag)]
    return out


def _hparam_values(info) -> dict:
    values = {}
    for key, value in info.hparams.items():
        kind = value.WhichOneof("kind")
        values[key] = getattr(value, kind)
    return values


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two xor runs in one logdir, shared by this module's tests (each run costs seconds of tracing).

    The first (`kexp.run`, model.hidden 4, 3 epochs) is the run whose event files are read; the second
    (`kexp run` on the command line, model.hidden 8, 2 epochs, profiling compiled calls 1-2) is the
    profiled run; `kexp tensorboard` serves both. Replaces a run per profile test and two more served runs.
    """
    logdir = tmp_path_factory.mktemp("served")
    results = kexp.run("xor", {"train.epochs": 3, "model.hidden": 4, "data.repeats": 8}, logdir=logdir, verbose=0)
    profiled = run_cli_here("run", "xor", "--logdir", str(logdir), "--set", "train.epochs=2", "--set",
                            "model.hidden=8", "--set", "data.repeats=8", "--set", "train.profile_steps=1,2")
    return logdir, (Path(results["run_dir"]), results), profiled


@pytest.fixture(scope="module")
def xor_run(runs):
    return runs[1]


def test_run_is_an_hparams_session_with_its_flat_config_and_final_metrics(xor_run):
    run_dir, results = xor_run
    events = _hparams_events(run_dir)
    assert len(events[HPARAMS]) == 1
    values = _hparam_values(events[HPARAMS][0])
    # Every key of the resolved config, not only the changed ones, so runs line up; integers as text (64, not
    # 64.000), floats as numbers, and the experiment's name.
    assert values["model.hidden"] == "4"
    assert values["train.epochs"] == "3"
    assert values["train.learning_rate"] == pytest.approx(0.05)
    assert values["train.optimizer"] == "adam"
    assert values["model.activation"] == "tanh"
    assert values["train.profile_steps"] == "0,0"
    assert values["experiment"] == "xor"
    assert len(values) == 1 + sum(len(section) for section in results["config"].values())
    from tensorboard.plugins.hparams import api_pb2

    assert [end.status for end in events[SESSION_END]] == [api_pb2.STATUS_SUCCESS]
    scalars = read_events(run_dir)
    for name, value in results["metrics"].items():
        assert scalars[f"metrics/{name}"] == [(0, pytest.approx(value))]


def test_fit_scalars_include_learning_rate_and_throughput_and_the_conceptual_graph(xor_run):
    run_dir, results = xor_run
    train = read_events(run_dir / "two_layer" / "train")
    assert [step for step, _ in train["epoch_loss"]] == [0, 1, 2]
    assert train["epoch_learning_rate"] == [(s, pytest.approx(0.05)) for s in range(3)]
    rates = [value for _, value in train["epoch_examples_per_s"]]
    assert len(rates) == 3 and all(rate > 0 for rate in rates)
    assert "keras" in train  # Keras' model config: the Graphs tab's conceptual graph
    validation = read_events(run_dir / "two_layer" / "validation")
    assert [step for step, _ in validation["epoch_accuracy"]] == [0, 1, 2]
    texts = read_events(run_dir)  # figures and text sit at the run's root
    assert "| model.hidden | 4 |" in texts["config"][0][1]
    # 2 inputs -> 4 tanh units -> 1: (2 * 4 + 4) + (4 + 1) parameters.
    assert "Total params: 17 " in texts["model_summary/two_layer"][0][1]
    assert "decision_boundaries" in texts


def test_gan_logs_both_learning_rates_and_a_cosine_schedule_decays(logdir):
    from kexp.models import GAN, gan_1d_discriminator, gan_1d_generator

    real = np.random.default_rng(0).normal(4, 1, size=(256, 1)).astype("float32")
    train = kexp.TrainConfig(epochs=3, batch_size=64, lr_schedule="cosine", learning_rate=0.01)
    with kexp.open_run("gan_lr", logdir=logdir, train=train, verbose=0) as harness:
        harness.fit(lambda: GAN(gan_1d_generator(4, 1, hidden=(8,)), gan_1d_discriminator(1, hidden=(8,))), (real,))
    events = read_events(harness.run_dir / "train")
    for name in ("learning_rate_d_optimizer", "learning_rate_g_optimizer"):
        rates = [value for _, value in events[f"epoch_{name}"]]
        assert len(rates) == 3
        assert 0.01 > rates[0] > rates[1] > rates[2] >= 0


def test_resumed_run_keeps_one_session_start_end_and_metric_point(logdir):
    x = np.linspace(-1, 1, 64, dtype="float32")[:, None]
    train = kexp.TrainConfig(epochs=2, batch_size=16)
    with pytest.raises(KeyboardInterrupt):
        with kexp.open_run("resumed", logdir=logdir, train=train, verbose=0) as harness:
            harness.record(partial=1.0)
            raise KeyboardInterrupt
    run_dir = harness.run_dir
    assert _hparams_events(run_dir)[SESSION_END]  # the interrupted run's end, status unknown
    with kexp.open_run("resumed", logdir=logdir, train=train, verbose=0, resume=run_dir) as harness:
        import keras

        harness.fit(lambda: keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]), (x, x), loss="mse")
        harness.record(partial=2.0)
    from tensorboard.plugins.hparams import api_pb2

    events = _hparams_events(run_dir)
    assert len(events[HPARAMS]) == 1
    assert [end.status for end in events[SESSION_END]] == [api_pb2.STATUS_SUCCESS]
    assert read_events(run_dir)["metrics/partial"] == [(0, 2.0)]


def test_profile_steps_write_a_trace_and_say_where(runs):
    proc = runs[2]
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    assert list((run_dir / "two_layer" / "train" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert "kexp: profiling compiled calls 1-2 into" in proc.stderr
    import importlib.util

    if importlib.util.find_spec("tensorboard_plugin_profile") is None:
        assert "once its optional plugin is installed: pip install tensorboard-plugin-profile" in proc.stderr
    else:
        assert "open it in TensorBoard's Profile tab" in proc.stderr


def test_profile_range_past_the_fit_says_nothing_is_profiled(logdir):
    proc = run_cli_here("run", "xor", "--logdir", str(logdir), "--set", "train.epochs=2", "--set", "data.repeats=8",
                   "--set", "train.profile_steps=1000,1001")
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    assert "kexp: warning: train.profile_steps=1000,1001: fit 'two_layer' runs 2 compiled call(s)" in proc.stderr
    assert not list(run_dir.rglob("*.xplane.pb"))


def test_bad_profile_range_exits_2_before_anything(logdir):
    proc = run_cli_here("run", "xor", "--logdir", str(logdir), "--set", "train.profile_steps=3,2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "kexp: error: train.profile_steps: received 3,2; allowed: 0,0 (off) or START,STOP with 1 <= START <= STOP "
        "(compiled calls of a fit, counted from 1)"]
    assert not any(logdir.iterdir())


def _get(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def two_runs(runs):
    return runs[0]


def test_kexp_tensorboard_serves_both_runs_scalars_and_hparams(two_runs):
    proc = subprocess.Popen([sys.executable, "-m", "kexp", "tensorboard", "--logdir", str(two_runs / "xor"),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split(" at ", 1)[1].split()[0]
        run_ids = sorted(p.name for p in (two_runs / "xor").iterdir())
        deadline = time.monotonic() + 90
        while True:
            runs = _get(url + "data/runs")
            if all(f"{r}/two_layer/train" in runs for r in run_ids) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert set(run_ids) <= set(runs)
        plugins = _get(url + "data/plugins_listing")
        assert all(plugins[name]["enabled"] for name in ("scalars", "images", "text", "hparams", "graphs"))
        tags = _get(url + "data/plugin/scalars/tags")
        assert {"epoch_loss", "epoch_learning_rate", "epoch_examples_per_s"} <= set(tags[f"{run_ids[0]}/two_layer/train"])
        assert "metrics/two_layer_accuracy" in tags[run_ids[0]]
        experiment = _get(url + "data/plugin/hparams/experiment", {"experimentName": ""})
        assert {"model.hidden", "train.epochs", "train.learning_rate"} <= {h["name"] for h in experiment["hparamInfos"]}
        assert {"tag": "metrics/two_layer_accuracy", "group": ""} in [m["name"] for m in experiment["metricInfos"]]
        groups = _get(url + "data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                      "STATUS_RUNNING"],
            "colParams": [], "startIndex": 0, "sliceSize": 100})["sessionGroups"]
        assert sorted(g["hparams"]["model.hidden"] for g in groups) == ["4", "8"]
        for group in groups:
            results = json.loads((two_runs / "xor" / group["name"] / "results.json").read_text())
            metric = [m["value"] for m in group["metricValues"] if m["name"]["tag"] == "metrics/two_layer_accuracy"]
            assert metric == [pytest.approx(results["metrics"]["two_layer_accuracy"])]
            assert group["sessions"][0]["status"] == "STATUS_SUCCESS"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "TensorBoard stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_kexp_tensorboard_port_in_use_and_missing_logdir_exit_2(tmp_path):
    import socket

    # A fresh process: TensorBoard starts its data server and loader threads before it binds the port.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli("tensorboard", "--logdir", str(tmp_path), "--port", str(port), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"kexp: error: --port {port}: TensorBoard could not bind to port {port}, it was already in use; "
        "allowed: a free port (0: any free one)"]
    proc = run_cli_here("tensorboard", "--logdir", str(tmp_path / "nowhere"))  # refused before TensorBoard
    assert proc.returncode == 2
    assert "not a folder" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
