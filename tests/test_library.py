"""The harness as a Keras user meets it: Keras-shaped `fit`, saved models, the public API (issue 12)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO

import kexp
from kexp import TrainConfig
from kexp.errors import UsageError


def _dense(units: int = 1, inputs: int = 2, activation: str | None = None) -> keras.Model:
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(
        units, activation=activation, kernel_initializer=keras.initializers.GlorotUniform(seed=3))])


def _xy(n: int = 120):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 2)).astype("float32")
    return x, (x[:, :1] > 0).astype("float32")


def test_library_docs_api_section_lists_exactly_the_public_names():
    text = (REPO / "docs" / "library.md").read_text()
    section = text[text.index("## API"):text.index("## Model builders")]
    listed = set()
    for cell in re.findall(r"^\| (`[^|]+`) \|", section, flags=re.M):
        cell = re.sub(r"\([^)]*\)", "", cell.replace("`", ""))  # drop the signatures
        listed.update(name.strip() for name in cell.split(","))
    top = {n.removeprefix("kexp.") for n in listed if n.startswith("kexp.") and not n.startswith("kexp.models.")}
    builders = {n.removeprefix("kexp.models.") for n in listed if n.startswith("kexp.models.")}
    builders |= {n for n in listed if not n.startswith("kexp.")}
    assert top == set(kexp.__all__)
    assert builders == set(kexp.models.__all__)


def test_model_instance_trains_and_history_is_exposed(logdir):
    x, y = _xy()
    model = _dense(activation="sigmoid")
    with kexp.open_run("instance", logdir=logdir, train=TrainConfig(epochs=3, batch_size=20), verbose=0) as run:
        trained = run.fit(model, (x, y), 0.25, loss="binary_crossentropy")
    assert trained is model
    assert run.history["model"] is model.history
    assert model.history.epoch == [0, 1, 2] and len(model.history.history["val_loss"]) == 3
    assert run.results["fits"]["model"]["train_examples"] == 90  # 0.25 held out
    assert run.results["fits"]["model"]["validation_examples"] == 30
    # The harness compiled it with 5 steps a call (90 examples of 20) for its fit; it comes back with Keras'
    # default of 1, so a per-batch callback of the user's own fit sees every batch.
    assert run.results["fits"]["model"]["steps_per_execution"] == 5 and model.steps_per_execution == 1
    batches = []
    model.fit(x, y, batch_size=20, epochs=1, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))])
    assert batches == list(range(6))
    # So does the model it saved, and one the user saves (Keras keeps the compile call's arguments for both).
    assert kexp.load_model(run.run_dir).steps_per_execution == 1
    model.save(logdir / "own.keras")
    assert keras.models.load_model(logdir / "own.keras").steps_per_execution == 1


def test_the_harness_evaluates_a_model_changed_after_its_fit_as_keras_does(logdir):
    """A fit with validation traced a test function; changes that Keras' `evaluate` traces again for, without a
    new compile, are scored as the changed model computes (a kept copy of the fit's function gave the unchanged
    model's loss: tried and reverted)."""
    x, y = _xy()

    def loss_now(model):  # an eager call: the model as it is now
        return float(keras.ops.mean(keras.losses.binary_crossentropy(y, model(x))))

    def to_logits(model):
        model.layers[-1].activation = keras.activations.linear

    def replace_head(model):
        model.pop()
        model.add(keras.layers.Dense(1, activation="sigmoid"))

    for change in (to_logits, replace_head):
        with kexp.open_run(change.__name__, logdir=logdir, train=TrainConfig(epochs=2, batch_size=20),
                           verbose=0) as run:
            model = run.fit(lambda: _dense(activation="sigmoid"), (x, y), validation_data=(x, y),
                            loss="binary_crossentropy")
            before = loss_now(model)
            change(model)
            after = run.evaluate(model, (x, y))["test_loss"]
        assert after != pytest.approx(before, rel=1e-3), change.__name__
        assert after == pytest.approx(loss_now(model), rel=1e-5), change.__name__


def test_model_instance_built_outside_a_mirrored_scope_is_refused_with_the_fix(logdir):
    x, y = _xy()
    with pytest.raises(UsageError, match="built outside the scope of --strategy mirrored .2 replicas.; allowed: "
                                         "a function that builds the model"):
        with kexp.open_run("outside", logdir=logdir, strategy="mirrored", verbose=0) as run:
            run.fit(_dense(), (x, y), loss="mse")


@pytest.mark.parametrize("key", ["initial_epoch", "shuffle", "steps_per_epoch", "batch_size"])
def test_arguments_the_harness_owns_are_refused_saying_why(key, logdir):
    x, y = _xy()
    # A refusal is a UsageError (exit 2 in the CLI) and, like every refusal before training, leaves nothing.
    with pytest.raises(UsageError, match=f"fit: {key}(=1)? is set by the harness"):
        with kexp.open_run("owned", logdir=logdir, verbose=0) as run:
            run.fit(_dense, (x, y), loss="mse", **{key: 1})
    assert list(logdir.rglob("*")) == []


def test_class_weight_trains_as_keras_fit_does(logdir):
    x, y = _xy()
    weights = {0: 0.2, 1: 3.0}
    train = TrainConfig(epochs=2, batch_size=20, shuffle=False, learning_rate=0.05)
    with kexp.open_run("weighted", logdir=logdir, train=train, verbose=0) as run:
        ours = run.fit(lambda: _dense(activation="sigmoid"), (x, y), loss="binary_crossentropy", class_weight=weights)
    plain = _dense(activation="sigmoid")
    plain.compile(keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    plain.fit(x, y, batch_size=20, epochs=2, shuffle=False, verbose=0, class_weight=weights)
    for a, b in zip(ours.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    unweighted = _dense(activation="sigmoid")
    unweighted.compile(keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    unweighted.fit(x, y, batch_size=20, epochs=2, shuffle=False, verbose=0)
    assert not np.allclose(ours.get_weights()[0], unweighted.get_weights()[0])


def test_validation_freq_validates_every_nth_epoch(logdir):
    x, y = _xy()
    with kexp.open_run("freq", logdir=logdir, train=TrainConfig(epochs=4, batch_size=20), verbose=0) as run:
        model = run.fit(_dense, (x, y), (x, y), loss="mse", validation_freq=2)
    assert len(model.history.history["val_loss"]) == 2


def test_an_already_batched_dataset_is_refused_naming_the_fix(logdir):
    x, y = _xy()
    with pytest.raises(UsageError, match=r"received a batched tf.data.Dataset .*drop .batch\(\)"):
        with kexp.open_run("batched", logdir=logdir, verbose=0) as run:
            run.fit(_dense, tf.data.Dataset.from_tensor_slices((x, y)).batch(8).prefetch(1), loss="mse")


def test_variable_length_sequences_train_with_pad(logdir):
    lengths = np.random.default_rng(0).integers(2, 9, size=60)
    sequences = [np.arange(1, n + 1, dtype="int32") % 7 + 1 for n in lengths]
    data = tf.data.Dataset.from_generator(
        lambda: ((s, np.float32(len(s) > 5)) for s in sequences),
        output_signature=(tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.float32)))

    def build():
        inputs = keras.Input((None,), dtype="int32")
        hidden = keras.layers.Embedding(8, 4, mask_zero=True)(inputs)
        return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.GRU(4)(hidden)))

    with kexp.open_run("padded", logdir=logdir, train=TrainConfig(epochs=2, batch_size=16), verbose=0) as run:
        model = run.fit(build, data, loss="binary_crossentropy", pad=True)
        scores = run.evaluate(model, data, pad=True)
    assert int(model.optimizer.iterations) == 2 * 4  # 60 sequences, 16 a batch
    assert run.results["status"] == "ok" and np.isfinite(scores["test_loss"])
    # The same sequences as slices of a RaggedTensor: padded_batch takes dense examples only.
    ragged = tf.data.Dataset.from_tensor_slices((tf.ragged.constant(sequences), (lengths > 5).astype("float32")))
    with kexp.open_run("padded", logdir=logdir, train=TrainConfig(epochs=2, batch_size=16), verbose=0) as run:
        model = run.fit(build, ragged, loss="binary_crossentropy", pad=True)
        assert run.evaluate(model, ragged, pad=True)["test_loss"] == pytest.approx(
            model.evaluate(tf.ragged.constant(sequences).to_tensor(), (lengths > 5).astype("float32"), verbose=0),
            rel=1e-5)  # masked: padding to the longest of all, not of each batch, scores the same
    assert int(model.optimizer.iterations) == 2 * 4


def test_a_model_compiled_by_its_user_keeps_fused_automatic_steps(logdir):
    x, y = _xy(400)

    def build():
        model = _dense()
        model.compile(keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.01, 100, 0.5)), "mse")
        return model

    with kexp.open_run("self_compiled", logdir=logdir, train=TrainConfig(epochs=2, batch_size=20), verbose=0) as run:
        model = run.fit(build, (x, y))
    fit = run.results["fits"]["model"]
    # The harness's 20 steps a call were for its fit: the model goes back as compiled, one step a call, so the
    # user's own fit calls a per-batch callback for every batch (it was once an epoch), and so does the saved one.
    batches = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))
    model.fit(x, y, batch_size=20, epochs=1, callbacks=[counter], verbose=0)
    assert batches == list(range(20))
    assert model.steps_per_execution == 1
    assert kexp.load_model(run.run_dir, fit="model").steps_per_execution == 1
    assert fit["compiled_by"] == "user (steps_per_execution chosen by the harness)"
    assert fit["steps_per_execution"] == 20 and fit["fused_steps"] is True
    # What trained is what is recorded: the user's schedule, not the config's adam 0.001.
    assert fit["optimizers"]["optimizer"]["class"] == "Adam"
    schedule = fit["optimizers"]["optimizer"]["learning_rate"]
    assert schedule["class_name"] == "ExponentialDecay" and schedule["config"]["initial_learning_rate"] == 0.01
    assert fit["loss"] == "mse" and fit["params"] == 3


def test_two_unnamed_fits_keep_separate_histories_and_models(logdir):
    x, y = _xy()
    with kexp.open_run("two_fits", logdir=logdir, train=TrainConfig(epochs=3, batch_size=20), verbose=0) as run:
        run.fit(_dense, (x, y), loss="mse")
        run.fit(lambda: _dense(2), (x, np.hstack([y, y])), loss="mse", epochs=2)

    def epochs(path):
        return [int(line.split(",")[0]) for line in path.read_text().strip().splitlines()[1:]]

    assert epochs(run.run_dir / "history.csv") == [0, 1, 2]
    assert epochs(run.run_dir / "model_2" / "history.csv") == [0, 1]
    assert (run.run_dir / "model_2" / "train").is_dir()
    assert run.results["models"] == {"model": "models/model.keras", "model_2": "models/model_2.keras"}
    assert kexp.load_model(run.run_dir, fit="model_2").output_shape == (None, 2)
    with pytest.raises(UsageError, match="no model 'nope' .* allowed: model, model_2"):
        kexp.load_model(run.run_dir, fit="nope")


def test_seed_none_leaves_the_callers_seed_alone(logdir):
    keras.utils.set_random_seed(1234)
    first = np.random.random()
    keras.utils.set_random_seed(1234)
    with kexp.open_run("unseeded", logdir=logdir, train=TrainConfig(seed=None), verbose=0) as run:
        inside = np.random.random()  # NumPy's global state is still the caller's
    assert inside == first
    assert run.results["seeded_globally"] is False and isinstance(run.results["seed"], int)
    with kexp.open_run("seeded", logdir=logdir, train=TrainConfig(seed=7), verbose=0) as run:
        pass
    assert run.results["seeded_globally"] is True and run.results["seed"] == 7


def test_kexp_run_takes_a_mapping_and_refuses_a_bare_string(logdir):
    results = kexp.run("xor", {"train.epochs": 1, "data.repeats": 1}, logdir=logdir, verbose=0)  # defaults: 30, 64
    assert results["config"]["train"]["epochs"] == 1 and results["config"]["data"]["repeats"] == 1
    with pytest.raises(TypeError, match="received the string 'train.epochs=2'"):
        kexp.run("xor", "train.epochs=2", logdir=logdir)


def test_import_kexp_loads_no_tensorflow_then_a_saved_gan_loads_compiled_without_kexp_models(logdir):
    """One fresh process checks both (each costs a TensorFlow import; replaces two tests of one process each).

    `import kexp` and its light names load no TensorFlow; then, in that process, which never imported
    `kexp.models`, `kexp.load_model` rebuilds a saved GAN compiled as it was; then the lazy names resolve.
    """
    from kexp.models import GAN, gan_1d_discriminator, gan_1d_generator

    def build():
        gan = GAN(gan_1d_generator(), gan_1d_discriminator(), d_steps=2, noise="uniform")
        gan.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(2e-3))
        return gan

    real = np.random.default_rng(0).normal(4, 1, size=(256, 1)).astype("float32")
    with kexp.open_run("gan", logdir=logdir, train=TrainConfig(epochs=1, batch_size=64), verbose=0) as run:
        gan = run.fit(build, (real,))
    noise = np.linspace(-1, 1, 8, dtype="float32")[:, None]
    expected = gan.generator(noise).numpy()
    assert set(run.results["fits"]["model"]["optimizers"]) == {"d_optimizer", "g_optimizer"}
    code = textwrap.dedent(f"""
        import sys, kexp
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules
        kexp.TrainConfig, kexp.param, kexp.ConfigError, kexp.run
        assert "tensorflow" not in sys.modules
        import numpy as np
        assert "kexp.models" not in sys.modules
        gan = kexp.load_model({str(run.run_dir)!r})
        assert type(gan).__name__ == "GAN" and gan.d_steps == 2
        assert float(gan.g_optimizer.learning_rate.numpy()) == np.float32(2e-3)
        out = gan.generator(np.linspace(-1, 1, 8, dtype="float32")[:, None]).numpy()
        print("OUT", out.ravel().tolist())
        assert kexp.open_run.__module__ == "kexp.engine.session" and kexp.Harness.__name__ == "Harness"
        assert kexp.models.GAN and kexp.load_model
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("OUT ")).removeprefix("OUT "))
    np.testing.assert_allclose(out, expected.ravel(), rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "fit: epochs: received '0'; allowed: an integer 1..1,000,000"),
    ({"epochs": -3}, "fit: epochs: received '-3'"),
    ({"epochs": True}, "fit: epochs: received 'True'"),
    ({"validation_freq": 0}, "fit: validation_freq: received '0'"),
])
def test_fit_counts_are_checked(kwargs, message, logdir):
    x, y = _xy()
    with pytest.raises(UsageError, match=re.escape(message)):
        with kexp.open_run("counts", logdir=logdir, verbose=0) as run:
            run.fit(_dense, (x, y), loss="mse", **kwargs)


def test_an_endless_dataset_of_unknown_length_is_refused_not_counted_forever(logdir, monkeypatch):
    from kexp.engine import inputs

    monkeypatch.setattr(inputs, "MAX_COUNTED_EXAMPLES", 50_000)  # the real cap, 1e8, takes seconds to reach
    x, y = _xy()
    endless = tf.data.Dataset.from_tensor_slices((x, y)).repeat().filter(lambda a, b: True)
    with pytest.raises(UsageError, match="more than 50,000 examples .endless..; allowed: a finite"):
        with kexp.open_run("endless", logdir=logdir, verbose=0) as run:
            run.fit(_dense, endless, loss="mse")


def test_a_model_without_an_input_layer_trains_as_with_keras_fit(logdir):
    x, y = _xy()
    lazy = lambda: keras.Sequential([keras.layers.Dense(4), keras.layers.Dense(1)])  # noqa: E731
    with kexp.open_run("lazy", logdir=logdir, train=TrainConfig(epochs=2, batch_size=20), verbose=0) as run:
        model = run.fit(lazy, (x, y), loss="mse")
    assert run.results["status"] == "ok" and int(model.optimizer.iterations) == 12
    assert run.results["fits"]["model"]["params"] == 2 * 4 + 4 + 4 + 1


def test_a_model_keras_cannot_save_still_trains_and_says_so(logdir, capsys):
    class Thing:
        pass

    class Scale(keras.layers.Layer):  # an argument Keras cannot serialize, and no get_config: no save
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def call(self, x):
            return x * 2.0

    x = np.zeros((40, 2), "float32")

    def build():
        inputs = keras.Input((2,))
        hidden = Scale(Thing())(inputs)
        model = keras.Model(inputs, {"a": keras.layers.Dense(1, name="a")(hidden),
                                     "b": keras.layers.Dense(1, name="b")(hidden)})
        model.compile("sgd", {"a": "mse", "b": keras.losses.MeanAbsoluteError()})
        return model

    with kexp.open_run("unsaveable", logdir=logdir, train=TrainConfig(epochs=1, batch_size=8), verbose=0) as run:
        run.fit(build, (x, {"a": x[:, :1], "b": x[:, 1:]}))
    fit = run.results["fits"]["model"]
    assert run.results["status"] == "ok" and run.results["models"] == {}
    assert fit["not_saved"].startswith("NotImplementedError: ")
    assert fit["loss"] == {"a": "mse", "b": "mean_absolute_error"}
    assert list((run.run_dir / "models").iterdir()) == []  # no temp file left
    assert "kexp: warning: fit 'model' trained, but Keras cannot save it" in capsys.readouterr().err


def test_library_use_prints_no_tensorflow_start_up_lines_and_keeps_a_level_the_user_set(tmp_path):
    """`import kexp` + `kexp.run` as a script would: TensorFlow's C++ lines (start-up, cuInit, and the harmless
    `use_unbounded_threadpool` error of a deterministic run) stay hidden, unless the user chose a level."""
    script = textwrap.dedent(f"""
        import os, kexp
        results = kexp.run("xor", {{"train.epochs": 1, "train.deterministic": True}}, logdir={str(tmp_path)!r},
                           verbose=0)
        print(results["status"], os.environ["TF_CPP_MIN_LOG_LEVEL"])
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                           cwd=REPO)
    assert quiet.stdout.split() == ["ok", "3"], quiet.stderr[-2000:]
    assert quiet.stderr == ""
    chosen = subprocess.run([sys.executable, "-c", "import os, kexp.models; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"],
                            capture_output=True, text=True, env={**env, "TF_CPP_MIN_LOG_LEVEL": "1"}, timeout=300,
                            cwd=REPO)
    assert chosen.stdout.split() == ["1"], chosen.stderr[-2000:]
    # The command line: the same run, nothing on stderr either.
    command = subprocess.run([sys.executable, "-m", "kexp", "run", "xor", "--set", "train.epochs=1", "--set",
                              "train.deterministic=true", "--logdir", str(tmp_path)],
                             capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert command.returncode == 0 and command.stderr == "", command.stderr[-2000:]


@pytest.mark.parametrize("failure, code, last_line", [('raise ImportError("broken TensorFlow")', 1,
                                                        "ImportError: broken TensorFlow"),
                                                       ("raise SystemExit(3)", 3, "")])
def test_a_tensorflow_that_fails_to_import_shows_what_it_printed(tmp_path, failure, code, last_line):
    """The start-up lines are captured, not thrown away: when the import fails (an error, or an exit) they
    explain why. A stand-in `tensorflow` package that prints a loader error on fd 2, as a broken install does."""
    package = tmp_path / "broken" / "tensorflow"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('import os\nos.write(2, b"F0000 loader.cc:1] libfoo.so: cannot open '
                                         f'shared object file\\n")\n{failure}\n')
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(package.parent)
    proc = subprocess.run([sys.executable, "-m", "kexp", "run", "xor", "--logdir", str(tmp_path / "logs")],
                          capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert proc.returncode == code
    assert "F0000 loader.cc:1] libfoo.so: cannot open shared object file" in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.rstrip().endswith(last_line), proc.stderr[-2000:]


def test_a_deterministic_run_leaves_op_determinism_as_the_caller_had_it(logdir):
    """Op determinism is a setting of the whole process: on while a `train.deterministic` run is open (an error
    in it included), then off again, unless the caller had turned it on."""
    from tensorflow.python.framework import config as tf_config

    deterministic = TrainConfig(epochs=1, deterministic=True)
    with pytest.raises(ValueError, match="the user's own error"):
        with kexp.open_run("det", logdir=logdir, train=deterministic, verbose=0):
            assert tf_config.is_op_determinism_enabled()
            raise ValueError("the user's own error")
    assert not tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        with kexp.open_run("det", logdir=logdir, train=deterministic, verbose=0) as run:
            run.fit(_dense, _xy(), loss="mse")
        assert run.results["status"] == "ok" and tf_config.is_op_determinism_enabled()
    finally:
        tf_config.disable_op_determinism()
    # Runs that overlap in two threads: on until the last one closes (the first closing turned it off under B).
    import threading

    a_open, b_open, a_closed, inside_b = threading.Event(), threading.Event(), threading.Event(), []

    def run_a():
        with kexp.open_run("det_a", logdir=logdir, train=deterministic, verbose=0):
            a_open.set()
            b_open.wait(60)
        a_closed.set()

    thread = threading.Thread(target=run_a)
    thread.start()
    a_open.wait(60)
    with kexp.open_run("det_b", logdir=logdir, train=deterministic, verbose=0):
        b_open.set()
        assert a_closed.wait(60)
        inside_b.append(tf_config.is_op_determinism_enabled())
    thread.join(60)
    assert inside_b == [True] and not tf_config.is_op_determinism_enabled()
