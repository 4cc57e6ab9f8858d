"""A non-editable install into a fresh virtualenv works from any directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO


@pytest.mark.slow
def test_wheel_install_lists_and_runs_from_another_directory(tmp_path: Path):
    # A copy of the source tree, so the build leaves nothing in the checkout.
    source = tmp_path / "src"
    shutil.copytree(
        REPO, source,
        ignore=shutil.ignore_patterns(".git", "logs", "build", "*.egg-info", "__pycache__", ".pytest_cache"),
    )
    venv = tmp_path / "venv"
    # System site-packages provide TensorFlow & co. so the test needs no 600 MB
    # download; kexp itself is installed into the venv, not linked.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    shutil.rmtree(source)  # the installed copy must not need the source tree

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
'''


@pytest.mark.slow
def test_outside_project_fits_loads_and_runs_its_entry_point_experiment(tmp_path: Path):
    """Issue 12's user: a project installed with pip beside kexp, in a fresh virtualenv."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "logs", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    project = tmp_path / "myproj_src"
    (project / "myproj").mkdir(parents=True)
    (project / "pyproject.toml").write_text(OUTSIDE_PYPROJECT)
    (project / "myproj" / "__init__.py").write_text("")
    (project / "myproj" / "signals.py").write_text(
        "import numpy as np\n\ndef line():\n    x = np.linspace(-1, 1, 128, dtype='float32')[:, None]\n"
        "    return x, 2 * x + 1\n")
    (project / "myproj" / "my_exp.py").write_text(OUTSIDE_EXPERIMENT)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    for package in (source, project):
        install = subprocess.run([python, "-m", "pip", "install", "-q",
                                  "--disable-pip-version-check", str(package)],
                                 capture_output=True, text=True, timeout=600)
        assert install.returncode == 0, install.stderr[-3000:]
    shutil.rmtree(source)
    work = tmp_path / "work"
    work.mkdir()
    (work / "fit.py").write_text(OUTSIDE_SCRIPT)

    fitted = subprocess.run([python, "fit.py", str(work / "logs")], cwd=work, capture_output=True, text=True,
                            timeout=300)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in fitted.stdout.splitlines() if line.startswith(("RUN_DIR", "PRED")))
    run_dir = Path(lines["RUN_DIR"])
    results = json.loads((run_dir / "results.json").read_text())
    fit = results["fits"]["model"]
    assert fit["train_examples"] == 300 and fit["compiled_by"].startswith("user")
    assert fit["optimizers"]["optimizer"]["class"] == "Adam"  # what really trained, not the config's adam 0.001
    assert fit["optimizers"]["optimizer"]["learning_rate"]["class_name"] == "ExponentialDecay"

    load = ("import json, sys, numpy as np, kexp\n"
            "model = kexp.load_model(sys.argv[1])\n"
            "rng = np.random.default_rng(0)\n"
            "a, b = rng.normal(size=(300, 3)).astype('float32'), rng.normal(size=(300, 2)).astype('float32')\n"
            "print(json.dumps(model.predict({'a': a[:4], 'b': b[:4]}, verbose=0).tolist()))\n")
    loaded = subprocess.run([python, "-c", load, str(run_dir)], cwd=work, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    import numpy as np

    np.testing.assert_allclose(json.loads(loaded.stdout.strip().splitlines()[-1]), json.loads(lines["PRED"]),
                               rtol=1e-6)

    ran = subprocess.run([venv / "bin" / "kexp", "run", "my_exp", "--logdir", str(work / "logs")], cwd=work,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip().splitlines()[-1].startswith(f"run_dir: {work / 'logs' / 'my_exp'}")
