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
from kexp.session import open_run

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


# Evaluation must score every example, whatever the replica count; training
# must run under every strategy name. Each device count needs its own process.
DEVICE_SCRIPT = textwrap.dedent('''
    import json, sys
    import keras, numpy as np
    from kexp.config import TrainConfig
    from kexp.session import open_run

    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 2], [3, 1], [0.5, 0.5]], "float32")
    y = np.array([[0], [1], [1], [0], [1], [0], [1]], "float32")

    def build():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
            1, activation="sigmoid", kernel_initializer=keras.initializers.Constant(0.3),
            bias_initializer=keras.initializers.Constant(-0.2))])
        model.compile("sgd", "binary_crossentropy", metrics=[keras.metrics.BinaryAccuracy(name="accuracy"),
                                                            keras.metrics.AUC(name="auc")])
        return model

    out = {}
    for strategy in ("auto", "default", "one_device", "mirrored"):
        with open_run("devices", logdir=sys.argv[1], strategy=strategy, verbose=0,
                      train=TrainConfig(epochs=2, batch_size=2)) as run:
            with run.strategy.scope():
                fixed = build()
            scores = run.evaluate(fixed, (x, y))
            trained = run.fit(build, (x, y), (x, y))
            run.record(**scores)
        out[strategy] = {"scores": scores, "replicas": run.num_replicas, "status": run.results["status"],
                         "iterations": int(trained.optimizer.iterations.numpy())}
    print("RESULT " + json.dumps(out))
''')


def _devices_run(count: int, logdir: Path) -> dict:
    env = {**os.environ, "KEXP_CPU_DEVICES": str(count), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", DEVICE_SCRIPT, str(logdir)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_every_strategy_trains_and_scores_every_example_on_1_2_3_and_5_devices(logdir):
    # Seven examples: no replica count of 2, 3 or 5 divides them, and with 5
    # replicas the last batch leaves replicas empty.
    results = {count: _devices_run(count, logdir / str(count)) for count in (1, 2, 3, 5)}
    reference = results[1]["default"]["scores"]
    assert round(reference["test_accuracy"] * 7) == pytest.approx(reference["test_accuracy"] * 7, abs=1e-5)
    for count, by_strategy in results.items():
        assert by_strategy["mirrored"]["replicas"] == count
        for strategy, result in by_strategy.items():
            assert result["status"] == "ok", (count, strategy)
            assert result["iterations"] > 0, (count, strategy)
            for key, value in reference.items():
                assert result["scores"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (count, strategy, key)


def test_fewer_training_examples_than_replicas_is_a_usage_error(tmp_path, logdir):
    from helpers import run_cli

    proc = run_cli("run", "xor", "--strategy", "mirrored", "--logdir", str(logdir), "--set", "data.repeats=1",
                   env={"KEXP_CPU_DEVICES": "5"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "train: received 4 examples, fewer than the 5 replicas" in lines[0], proc.stderr
    assert not (logdir / "xor").exists() or list((logdir / "xor").iterdir()) == []
