"""Every example given is trained on or scored, under every input structure and strategy (issue 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from kexp.config import TrainConfig
from kexp.errors import UsageError
from kexp.engine.session import open_run

N = 1000


def _inputs(form: str, x1: np.ndarray, x2: np.ndarray):
    if form == "dict":
        return {"a": x1, "b": x2}
    return (x1, x2) if form == "tuple" else [x1, x2]


def _two_input_model(form: str = "dict") -> keras.Model:
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    hidden = keras.layers.Dense(4, activation="tanh", kernel_initializer=keras.initializers.GlorotUniform(seed=1))(
        keras.layers.Concatenate()([a, b]))
    out = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed=2))(hidden)
    return keras.Model({"a": a, "b": b} if form == "dict" else [a, b], out)


@pytest.mark.parametrize("form", ["dict", "tuple", "list"])
def test_multi_input_fit_trains_on_every_example_like_keras_fit(form, logdir):
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(N, 3)).astype("float32")
    x2 = rng.normal(size=(N, 2)).astype("float32")
    y = (x1.sum(1) - x2.sum(1)).astype("float32")[:, None]
    train = TrainConfig(epochs=2, batch_size=100, shuffle=False, learning_rate=0.01)
    with open_run("multi", logdir=logdir, train=train, verbose=0) as run:
        model = run.fit(lambda: _two_input_model(form), (_inputs(form, x1, x2), y), loss="mse")
    assert int(model.optimizer.iterations) == 20  # 1,000 examples / 100 a batch x 2 epochs
    assert run.results["fits"]["model"]["train_examples"] == N

    plain = _two_input_model(form)
    plain.compile(keras.optimizers.Adam(0.01), loss="mse")
    plain.fit(_inputs(form, x1, x2), y, batch_size=100, epochs=2, shuffle=False, verbose=0)
    for ours, theirs in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_sample_weights_as_third_element_are_used(logdir):
    x = np.linspace(-1, 1, 64, dtype="float32")[:, None]
    y = 2 * x
    weights = np.zeros(64, dtype="float32")  # zero weight: no gradient, no change
    train = TrainConfig(epochs=1, batch_size=16, shuffle=False)
    with open_run("weighted", logdir=logdir, train=train, verbose=0) as run:
        model = run.fit(lambda: keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, kernel_initializer="ones")]),
                        (x, y, weights), loss="mse", optimizer=keras.optimizers.SGD(0.1))
    assert float(model.layers[0].kernel.numpy()[0, 0]) == 1.0


@pytest.mark.parametrize("x_rows, y_rows", [(256, 356), (356, 256)])
def test_leaves_of_different_lengths_are_refused_naming_each_length(x_rows, y_rows, logdir):
    x = np.zeros((x_rows, 2), "float32")
    y = np.zeros((y_rows, 1), "float32")
    with pytest.raises(ValueError) as info:
        with open_run("ragged", logdir=logdir, verbose=0) as run:
            run.fit(lambda: keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), (x, y), loss="mse")
    assert f"x: {x_rows}" in str(info.value) and f"y: {y_rows}" in str(info.value)
    assert isinstance(info.value, UsageError)
    assert list(logdir.iterdir()) == []  # the run folder went again, and its empty experiment folder


def test_nested_leaves_of_different_lengths_name_their_paths(logdir):
    x = {"a": np.zeros((10, 3), "float32"), "b": np.zeros((9, 2), "float32")}
    with pytest.raises(UsageError, match=r"x\['a'\]: 10, x\['b'\]: 9, y: 10"):
        with open_run("ragged", logdir=logdir, verbose=0) as run:
            run.fit(_two_input_model, (x, np.zeros((10, 1), "float32")), loss="mse")


def test_empty_data_is_refused(logdir):
    with pytest.raises(UsageError, match="train: received no examples"):
        with open_run("empty", logdir=logdir, verbose=0) as run:
            run.fit(lambda: keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]),
                    (np.zeros((0, 2), "float32"), np.zeros((0, 1), "float32")), loss="mse")


def test_nan_in_the_inputs_marks_the_run_diverged(logdir):
    x = np.linspace(-1, 1, 64, dtype="float32")[:, None]
    y = 3 * x
    x[5, 0] = np.nan
    clean = np.linspace(-1, 1, 16, dtype="float32")[:, None]
    with open_run("nan_input", logdir=logdir, train=TrainConfig(epochs=2, batch_size=16), verbose=0) as run:
        model = run.fit(lambda: keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]), (x, y), loss="mse")
        run.record(**run.evaluate(model, (clean, 3 * clean)))
    assert run.results["status"] == "diverged"


@pytest.mark.parametrize("name", ["../../x", "/abs/path", "a/b", ".hidden", ""])
def test_run_names_stay_inside_the_logdir(name, logdir, tmp_path):
    with pytest.raises(ValueError, match="allowed: letters, digits"):
        with open_run(name, logdir=logdir, verbose=0):
            pass
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["logs"]


def test_fit_names_stay_inside_the_run(logdir):
    with pytest.raises(ValueError, match="fit name: received '../../../x'"):
        with open_run("named", logdir=logdir, verbose=0) as run:
            run.fit(lambda: keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]),
                    (np.zeros((4, 1)), np.zeros((4, 1))), loss="mse", name="../../../x")
    assert not (logdir.parent / "x").exists()


# Evaluation must score every example, whatever the replica count; training must run under every strategy
# name. Seven examples: no replica count of 2 or 5 divides them, and with 5 replicas the last batch leaves
# replicas empty.
X_SEVEN = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 2], [3, 1], [0.5, 0.5]], "float32")
Y_SEVEN = np.array([[0], [1], [1], [0], [1], [0], [1]], "float32")


def _build_scored() -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
        1, activation="sigmoid", kernel_initializer=keras.initializers.Constant(0.3),
        bias_initializer=keras.initializers.Constant(-0.2))])
    model.compile("sgd", "binary_crossentropy", metrics=[keras.metrics.BinaryAccuracy(name="accuracy"),
                                                        keras.metrics.AUC(name="auc")])
    return model


def strategies_run(logdir: str, strategies: list[str]) -> dict:
    """Scores a fixed model and trains one under each strategy: `{strategy: {scores, replicas, status, iterations}}`.

    Runs in the pytest process (conftest's 2 logical devices) and, imported from this module, in the
    subprocesses that have 1 or 5 (`_start_devices_run`).
    """
    out = {}
    for strategy in strategies:
        with open_run("devices", logdir=logdir, strategy=strategy, verbose=0,
                      train=TrainConfig(epochs=2, batch_size=2)) as run:
            with run.strategy.scope():
                fixed = _build_scored()
            scores = run.evaluate(fixed, (X_SEVEN, Y_SEVEN))
            trained = run.fit(_build_scored, (X_SEVEN, Y_SEVEN), (X_SEVEN, Y_SEVEN))
            run.record(**scores)
        out[strategy] = {"scores": scores, "replicas": run.num_replicas, "status": run.results["status"],
                         "iterations": int(trained.optimizer.iterations.numpy())}
    return out


# argv: logdir, strategies, this folder, and optionally a logdir for `kexp run xor` with fewer examples than
# replicas, run first, by the CLI's main() in this process (`helpers.run_cli_here`).
DEVICE_SCRIPT = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, sys.argv[3])
    from helpers import run_cli_here
    from test_integrity import strategies_run

    cli = None
    if len(sys.argv) > 4:
        proc = run_cli_here("run", "xor", "--strategy", "mirrored", "--logdir", sys.argv[4],
                            "--set", "data.repeats=1")
        cli = {"returncode": proc.returncode, "stderr": proc.stderr}
    print("RESULT " + json.dumps({"cli": cli, "strategies": strategies_run(sys.argv[1], sys.argv[2].split(","))}))
''')


def _start_devices_run(count: int, logdir: Path, strategies: list[str],
                       cli_logdir: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "KEXP_CPU_DEVICES": str(count), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-c", DEVICE_SCRIPT, str(logdir), ",".join(strategies),
                             str(Path(__file__).parent), *([str(cli_logdir)] if cli_logdir else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _devices_result(proc: subprocess.Popen) -> dict:
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err[-3000:]
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_strategies_train_and_score_every_example_on_1_2_and_5_devices_and_refuse_fewer_examples_than_replicas(logdir):
    """Every strategy on 2 devices, in this process; `mirrored` on 1 and 5, each in a process of its own.

    Only `mirrored`'s replicas follow the logical CPU devices: `auto`, `default` and `one_device` train one
    replica on the CPU whatever their count (`kexp.engine.strategy.make_strategy`), so one process runs them.
    The two processes run while this one does its part. One device, two, and an odd count whose last
    batch leaves replicas empty: 5 (a 3-device process was dropped: it split the examples unevenly and
    left replicas empty, as 5 does).

    The 5-device process first runs `kexp run xor --strategy mirrored` on 4 examples: a usage error, one
    line, nothing left in the logdir (was test_fewer_training_examples_than_replicas_is_a_usage_error,
    a `python -m kexp` process of its own).
    """
    procs = {1: _start_devices_run(1, logdir / "1", ["mirrored"]),
             5: _start_devices_run(5, logdir / "5", ["mirrored"], cli_logdir=logdir / "cli")}
    try:
        results = {2: strategies_run(str(logdir / "2"), ["auto", "default", "one_device", "mirrored"])}
        outputs = {count: _devices_result(proc) for count, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results.update({count: output["strategies"] for count, output in outputs.items()})
    reference = results[2]["default"]["scores"]
    assert round(reference["test_accuracy"] * 7) == pytest.approx(reference["test_accuracy"] * 7, abs=1e-5)
    assert set(results[2]) == {"auto", "default", "one_device", "mirrored"}
    assert results[2]["auto"]["replicas"] == results[2]["default"]["replicas"] == results[2]["one_device"][
        "replicas"] == 1
    for count, by_strategy in results.items():
        assert by_strategy["mirrored"]["replicas"] == count
        for strategy, result in by_strategy.items():
            assert result["status"] == "ok", (count, strategy)
            assert result["iterations"] > 0, (count, strategy)
            for key, value in reference.items():
                assert result["scores"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (count, strategy, key)

    # Fewer training examples than replicas: xor's 4 points on 5 replicas.
    cli = outputs[5]["cli"]
    assert cli["returncode"] == 2, cli["stderr"][-3000:]
    lines = cli["stderr"].strip().splitlines()
    assert len(lines) == 1 and "train: received 4 examples, fewer than the 5 replicas" in lines[0], cli["stderr"]
    assert not (logdir / "cli" / "xor").exists() or list((logdir / "cli" / "xor").iterdir()) == []
