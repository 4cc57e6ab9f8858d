"""The HParams table as a browser gets it from a real TensorBoard: bars first, an experiment column, one type per key.

Two tiny runs of two experiments share one logdir: xor (`model.hidden` an
int, 8) and heart_mlp (`model.hidden` a tuple, here one element, 8). A
TensorBoard serving kexp's plugins (`kexp.cli.hparams_columns`) is asked what
its HParams tab asks: `/data/plugin/hparams/experiment` (the columns) and
`/data/plugin/hparams/session_groups` (the rows), POSTed JSON as the page
sends them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

import kexp
from kexp import registry
from kexp.store import hparams

_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Returns the HParams plugin's experiment (columns) and session groups (rows) for the two runs."""
    logdir = tmp_path_factory.mktemp("columns")
    kexp.run("xor", {"train.epochs": 1, "data.repeats": 8, "model.hidden": 8}, logdir=logdir, verbose=0)
    # A batch of 128 against xor's 16: "128" < "16" as text, so the filter's order shows whether it is numeric.
    kexp.run("heart_mlp", {"train.epochs": 1, "model.hidden": "8", "train.batch_size": 128}, logdir=logdir,
             verbose=0)
    with _served(logdir) as url:
        deadline = time.monotonic() + 60
        while True:  # until TensorBoard has read both runs, their fits and their final metrics
            experiment = _post(url + "experiment", {"experimentName": ""})
            groups = _groups(url)
            values = [len(g["metricValues"]) for g in groups.get("sessionGroups", [])]
            if (len(values) == 2 and min(values) >= 4) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        yield experiment, groups["sessionGroups"]


def _groups(url: str, col_params: list | None = None) -> dict:
    return _post(url + "session_groups", {"experimentName": "", "allowedStatuses": _STATUSES,
                                          "colParams": col_params or [], "startIndex": 0, "sliceSize": 100})


@contextlib.contextmanager
def _served(logdir):
    """Yields the HParams data URL of `kexp tensorboard --logdir LOGDIR` (the command itself, kexp's plugin)."""
    proc = subprocess.Popen([sys.executable, "-m", "kexp", "tensorboard", "--logdir", str(logdir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        line = proc.stdout.readline()
        assert " at http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield line.split(" at ", 1)[1].split()[0] + "data/plugin/hparams/"
    finally:
        proc.kill()
        proc.communicate()


def test_the_first_metric_columns_are_the_experiments_bars(served):
    experiment, _ = served
    names = [(m["name"]["tag"], m["name"].get("group", "")) for m in experiment["metricInfos"]]
    bars = [f"metrics/{name}" for exp in ("heart_mlp", "xor") for name in registry.load(exp).EXPECTED]
    assert [tag for tag, _ in names[:len(bars)]] == bars
    # Then heart_mlp's other final metric, then every fit's epoch_* columns (TensorBoard's own order there).
    assert names[len(bars)] == ("metrics/outside_rel_mse", "")
    rest = names[len(bars) + 1:]
    assert rest and all(tag.startswith("epoch_") and group for tag, group in rest)
    assert {("epoch_loss", "two_layer/validation"), ("epoch_examples_per_s", "train")} <= set(rest)


def test_an_experiment_column_names_each_runs_experiment(served):
    experiment, groups = served
    info = next(h for h in experiment["hparamInfos"] if h["name"] == "experiment")
    assert info["type"] == "DATA_TYPE_STRING" and info["domainDiscrete"] == ["heart_mlp", "xor"]
    assert info["differs"] is True
    assert sorted(g["hparams"]["experiment"] for g in groups) == ["heart_mlp", "xor"]


def test_integers_come_back_as_integer_text_with_a_numeric_filter_and_floats_as_numbers(served):
    experiment, groups = served
    infos = {h["name"]: h for h in experiment["hparamInfos"]}
    by_experiment = {g["hparams"]["experiment"]: g["hparams"] for g in groups}
    assert by_experiment["xor"]["train.epochs"] == "1" and by_experiment["heart_mlp"]["train.epochs"] == "1"
    assert by_experiment["xor"]["train.batch_size"] == "16" and by_experiment["heart_mlp"]["train.batch_size"] == "128"
    assert infos["train.batch_size"]["type"] == "DATA_TYPE_STRING"
    assert infos["train.batch_size"]["domainDiscrete"] == ["16", "128"]  # ticked to filter, in numeric order
    assert infos["train.learning_rate"]["type"] == "DATA_TYPE_FLOAT64"
    assert isinstance(by_experiment["xor"]["train.learning_rate"], float)
    assert isinstance(by_experiment["xor"]["train.shuffle"], bool)


def test_every_key_has_one_type_across_runs_whatever_its_value(served):
    experiment, groups = served
    # xor's int 8 and heart_mlp's one-element tuple (8,) are both the text "8".
    assert [g["hparams"]["model.hidden"] for g in groups] == ["8", "8"]
    infos = {h["name"]: h for h in experiment["hparamInfos"]}
    assert infos["model.hidden"]["type"] == "DATA_TYPE_STRING" and infos["model.hidden"]["domainDiscrete"] == ["8"]
    for key in {key for g in groups for key in g["hparams"]}:
        kinds = {type(g["hparams"][key]) for g in groups if key in g["hparams"]}
        assert len(kinds) == 1, (key, kinds)
        assert float not in kinds or infos[key]["type"] == "DATA_TYPE_FLOAT64", key


def test_session_values_write_one_type_per_field():
    config = {"model": {"hidden": [64, 64, 64], "units": 8, "one": [8], "dropout": 0.5, "act": "tanh",
                        "flags": [True, False], "bias": True}}
    assert hparams.session_values("mlp", config) == {
        "experiment": "mlp", "model.hidden": "64,64,64", "model.units": "8", "model.one": "8",
        "model.dropout": 0.5, "model.act": "tanh", "model.flags": "true,false", "model.bias": True}
    # `kexp runs` and the run labels keep each value's own type.
    assert hparams.flatten(config)["model.units"] == 8


def test_metric_and_value_order():
    metrics = [("epoch_loss", "train"), ("metrics/other", ""), ("metrics/b", ""), ("epoch_loss", "validation"),
               ("metrics/a", "")]
    assert hparams.metric_order(metrics, ["a", "b", "a"]) == [
        ("metrics/a", ""), ("metrics/b", ""), ("metrics/other", ""), ("epoch_loss", "train"),
        ("epoch_loss", "validation")]
    assert hparams.value_order(["128", "16", "64,64", "8,8", "None", "16"]) == ["8,8", "16", "64,64", "128", "None"]


def test_a_key_older_runs_wrote_as_a_number_and_newer_as_text_sorts_as_text(tmp_path):
    """Runs from before integers were written as text (`64.0`) beside newer ones (`"64"`): sorting by that column
    was a server error (floats compared with strings); now every value of the key is text."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    for run, hidden in (("old", 64.0), ("new", "64"), ("older", 8.0), ("unset", "None")):
        with tf.summary.create_file_writer(str(tmp_path / "xor" / run)).as_default():
            hp.hparams({"experiment": "xor", "model.hidden": hidden, "train.learning_rate": 0.01}, trial_id=run)
    with _served(tmp_path) as url:
        deadline = time.monotonic() + 60
        while len(_groups(url).get("sessionGroups", [])) < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
        ordered = _groups(url, [{"hparam": "model.hidden", "order": "ORDER_ASC", "includeInResult": True},
                                {"hparam": "train.learning_rate", "includeInResult": True}])
        info = next(h for h in _post(url + "experiment", {"experimentName": ""})["hparamInfos"]
                    if h["name"] == "model.hidden")
    assert [g["hparams"]["model.hidden"] for g in ordered["sessionGroups"]] == ["64", "64", "8", "None"]
    assert all(g["hparams"]["train.learning_rate"] == 0.01 for g in ordered["sessionGroups"])
    assert info["type"] == "DATA_TYPE_STRING" and info["domainDiscrete"] == ["8", "64", "None"]
