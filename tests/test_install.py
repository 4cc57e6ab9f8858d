"""A non-editable install into a fresh virtualenv works from any directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

OUTSIDE_VAE = '''"""Keras' VAE example, small: a subclassed model whose train_step never calls self(x)."""
import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="myproj")
class VAE(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                                         keras.layers.Dense(4)])
        self.decoder = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4)])
        self.total = keras.metrics.Mean(name="loss")
        self.seed_generator = keras.random.SeedGenerator(7)

    @property
    def metrics(self):
        return [self.total]

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            mean, log_var = tf.split(self.encoder(x), 2, axis=-1)
            z = mean + tf.exp(0.5 * log_var) * keras.random.normal(tf.shape(mean), seed=self.seed_generator)
            loss = tf.reduce_mean(tf.square(x - self.decoder(z))) - 0.005 * tf.reduce_mean(1 + log_var - mean ** 2)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self.total.update_state(loss)
        return {"loss": self.total.result()}

'''

# A Keras user's own models through the harness (issue 22 items 1, 2, 6, 7, 8), in the outside project's venv.
OUTSIDE_KERAS_USER = '''
import json, sys
import keras, numpy as np
import kexp
from kexp import TrainConfig
from myproj.vae import VAE

logdir = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.normal(size=(128, 4)).astype("float32")
y = (x[:, :1] > 0).astype("float32")
dense = lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])

keras.mixed_precision.set_global_policy("mixed_bfloat16")  # 1: the user's policy holds
with kexp.open_run("policy", logdir=logdir, train=TrainConfig(epochs=1), verbose=0) as run:
    model = run.fit(dense, (x, y), loss="binary_crossentropy")
assert model.layers[-1].compute_dtype == "bfloat16", model.layers[-1].compute_dtype
assert run.results["precision"] == {"policy": "mixed_bfloat16", "set_by": "the global policy"}
keras.mixed_precision.set_global_policy("float32")

def compiled():
    model = dense()
    model.compile("adam", "mse")
    return model

try:  # 2: compile arguments for a compiled model are refused, not dropped
    with kexp.open_run("compiled", logdir=logdir, verbose=0) as run:
        run.fit(compiled, (x, y), loss="mae", metrics=["mae"])
    raise AssertionError("not refused")
except kexp.UsageError as err:
    assert "fit: received loss, metrics for a model that is already compiled" in str(err), err

def vae():
    model = VAE()
    model.compile(keras.optimizers.Adam(1e-2))
    return model

with kexp.open_run("vae", logdir=logdir, train=TrainConfig(epochs=2), verbose=0) as run:  # 6
    model = run.fit(vae, (x,))
assert run.results["status"] == "ok" and run.results["fits"]["model"]["params"] == 88
loaded = kexp.load_model(run.run_dir)
np.testing.assert_array_equal(loaded.decoder.layers[-1].kernel.numpy(), model.decoder.layers[-1].kernel.numpy())

inputs = keras.Input((4,))  # 7: per-output metrics, loss_weights, weighted_metrics
outputs = {"reg": keras.layers.Dense(1, name="reg")(inputs),
           "cls": keras.layers.Dense(1, activation="sigmoid", name="cls")(inputs)}
with kexp.open_run("multi", logdir=logdir, train=TrainConfig(epochs=2), verbose=0) as run:
    model = run.fit(lambda: keras.Model(inputs, outputs), (x, {"reg": 2 * x[:, :1], "cls": y}),
                    loss={"reg": "mse", "cls": "binary_crossentropy"}, metrics={"reg": ["mae"], "cls": ["accuracy"]},
                    loss_weights={"reg": 0.5, "cls": 2.0}, weighted_metrics={"cls": ["accuracy"]})
assert {"reg_mae", "cls_accuracy", "cls_weighted_accuracy"} <= set(model.history.history)

class Batches(keras.utils.PyDataset):  # 8: a PyDataset, a generator, validation_data, verbose
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return x[index * 32:(index + 1) * 32], y[index * 32:(index + 1) * 32]

def batches():
    while True:
        yield from (Batches()[i] for i in range(4))

with kexp.open_run("streams", logdir=logdir, train=TrainConfig(epochs=2), verbose=2) as run:
    run.fit(dense, Batches(), validation_data=Batches(), loss="binary_crossentropy", verbose=0)
    run.fit(dense, batches(), steps_per_epoch=4, loss="binary_crossentropy", verbose=0)
assert run.results["fits"]["model"]["input"]["examples_per_epoch"] == [128, 128]
assert run.results["fits"]["model_2"]["input"]["examples_pulled"] >= 256

# fit.py's model, loaded in this process, which never built it (saves a process and its TensorFlow import).
model = kexp.load_model(sys.argv[2])
rng = np.random.default_rng(0)
a, b = rng.normal(size=(300, 3)).astype("float32"), rng.normal(size=(300, 2)).astype("float32")
print("LOADED_PRED", json.dumps(model.predict({"a": a[:4], "b": b[:4]}, verbose=0).tolist()))
print("KERAS_USER_OK")
'''


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with kexp pip-installed (not linked) from a copy of the source tree, the copy then removed.

    Shared by the module's two tests: each made its own (a venv and a pip install each, about 20 s). The outside
    project's test installs its own package into it too, which adds one entry point to `kexp list`.
    """
    tmp = tmp_path_factory.mktemp("install")
    # A copy of the source tree, so the build leaves nothing in the checkout.
    source = tmp / "src"
    shutil.copytree(
        REPO, source,
        ignore=shutil.ignore_patterns(".git", "logs", "build", "*.egg-info", "__pycache__", ".pytest_cache"),
    )
    venv = tmp / "venv"
    # System site-packages provide TensorFlow & co. so the test needs no 600 MB
    # download; kexp itself is installed into the venv, not linked.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    install = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    shutil.rmtree(source)  # the installed copy must not need the source tree
    return venv


@pytest.mark.slow
def test_wheel_install_lists_and_runs_from_another_directory(venv: Path, tmp_path: Path):
    python = venv / "bin" / "python"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [python, "-c", "import kexp, kexp.experiments as e; print(kexp.__file__); print(e.__path__[0])"],
        cwd=elsewhere, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert all(path.startswith(str(venv)) for path in where), where

    listing = subprocess.run([venv / "bin" / "kexp", "list"], cwd=elsewhere, capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.startswith("lstm_sine  ") or "\nlstm_sine  " in listing.stdout

    run = subprocess.run(
        [python, "-m", "kexp", "run", "lstm_sine", "--set", "train.epochs=1", "--set", "model.units=8"],
        cwd=elsewhere, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = Path(run.stdout.strip().splitlines()[-1].removeprefix("run_dir: "))
    assert run_dir.is_relative_to(elsewhere / "logs" / "lstm_sine")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["versions"]["kexp"] == "0.1.0"


OUTSIDE_PYPROJECT = '''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "myproj"
version = "0.1.0"

[project.entry-points."kexp.experiments"]
my_exp = "myproj.my_exp"

[tool.setuptools]
packages = ["myproj"]
'''

OUTSIDE_EXPERIMENT = '''"""An outside project's experiment that imports its data from a sibling module."""
from kexp import ExperimentConfig, TrainConfig

from .signals import line

CONFIG = ExperimentConfig(data=None, model=None, train=TrainConfig(epochs=3, batch_size=16))


def run(config, harness):
    import keras

    x, y = line()
    model = harness.fit(lambda: keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]), (x, y), loss="mse")
    return harness.evaluate(model, (x, y))
'''

OUTSIDE_SCRIPT = '''
import json, sys
import keras, numpy as np
import kexp
from kexp import TrainConfig

rng = np.random.default_rng(0)
a, b = rng.normal(size=(300, 3)).astype("float32"), rng.normal(size=(300, 2)).astype("float32")
y = (a.sum(1) > 0).astype("int32")
epochs_seen = []

def build():
    ia, ib = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Concatenate()([ia, ib]))
    model = keras.Model({"a": ia, "b": ib}, out)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=10, decay_rate=0.9)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model

with kexp.open_run("outside", logdir=sys.argv[1], train=TrainConfig(epochs=3, batch_size=30), verbose=0) as run:
    model = run.fit(build, ({"a": a, "b": b}, y), class_weight={0: 1.0, 1: 2.0},
                    callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: epochs_seen.append(e))])
assert epochs_seen == [0, 1, 2], epochs_seen
print("RUN_DIR", run.run_dir)
print("PRED", json.dumps(model.predict({"a": a[:4], "b": b[:4]}, verbose=0).tolist()))
# The project's entry-point experiment, found by name (the console script itself: the wheel test's `kexp list`).
print("MY_EXP", kexp.run("my_exp", logdir=sys.argv[1], verbose=0)["run_dir"])
'''


@pytest.mark.slow
def test_outside_project_fits_loads_and_runs_its_entry_point_experiment(venv: Path, tmp_path: Path):
    """Issue 12's user: a project installed with pip beside kexp, in a fresh virtualenv (the module's `venv`)."""
    project = tmp_path / "myproj_src"
    (project / "myproj").mkdir(parents=True)
    (project / "pyproject.toml").write_text(OUTSIDE_PYPROJECT)
    (project / "myproj" / "__init__.py").write_text("")
    (project / "myproj" / "signals.py").write_text(
        "import numpy as np\n\ndef line():\n    x = np.linspace(-1, 1, 128, dtype='float32')[:, None]\n"
        "    return x, 2 * x + 1\n")
    (project / "myproj" / "my_exp.py").write_text(OUTSIDE_EXPERIMENT)
    (project / "myproj" / "vae.py").write_text(OUTSIDE_VAE)
    python = venv / "bin" / "python"
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(project)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    work = tmp_path / "work"
    work.mkdir()
    (work / "fit.py").write_text(OUTSIDE_SCRIPT)
    (work / "keras_user.py").write_text(OUTSIDE_KERAS_USER)
    fitted = subprocess.run([python, "fit.py", str(work / "logs")], cwd=work, capture_output=True, text=True,
                            timeout=300)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in fitted.stdout.splitlines()
                 if line.startswith(("RUN_DIR", "PRED", "MY_EXP")))
    run_dir = Path(lines["RUN_DIR"])
    results = json.loads((run_dir / "results.json").read_text())
    fit = results["fits"]["model"]
    assert fit["train_examples"] == 300 and fit["compiled_by"].startswith("user")
    assert fit["optimizers"]["optimizer"]["class"] == "Adam"  # what really trained, not the config's adam 0.001
    assert fit["optimizers"]["optimizer"]["learning_rate"]["class_name"] == "ExponentialDecay"

    # The Keras user's models, then fit.py's model loaded in that process, which never built it.
    user = subprocess.run([python, "keras_user.py", str(work / "user_logs"), str(run_dir)], cwd=work,
                          capture_output=True, text=True, timeout=300)
    assert user.returncode == 0 and "KERAS_USER_OK" in user.stdout, user.stderr[-3000:]
    loaded = next(line for line in user.stdout.splitlines() if line.startswith("LOADED_PRED "))
    import numpy as np

    np.testing.assert_allclose(json.loads(loaded.removeprefix("LOADED_PRED ")), json.loads(lines["PRED"]), rtol=1e-6)

    # The entry-point experiment ran from the project's folder (in fit.py's process: one TensorFlow start fewer).
    my_exp = Path(lines["MY_EXP"])
    assert my_exp.parent == work / "logs" / "my_exp"
    assert json.loads((my_exp / "results.json").read_text())["status"] == "ok"
