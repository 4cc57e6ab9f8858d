"""Internal: the harness's speed decisions: steps per compiled call and XLA, from the model and the data.

Kept apart from the harness so that each rule reads, and tests, on its own;
the measurements behind each constant are in docs/performance.md.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import keras
import tensorflow as tf
from keras.src.models.functional import Functional

from kexp.config import TrainConfig
from kexp.models.gan import GAN
from kexp.models.lstm import LSTM

# Upper bound of batches per compiled call when chosen automatically: enough
# to amortize Keras' per-call Python overhead (keras#18648), small enough that
# the progress bar still moves. `kexp bench fnn` measured tutorial 000's FNN on 2 CPU
# cores at 1.2x the plain-fit throughput with 32 and more with 100 (README).
_MAX_AUTO_STEPS_PER_EXECUTION = 100
_MIN_AUTO_DIVISOR = 20

# Layers XLA fuses well on CPU. Convolutions run slower under XLA than with
# oneDNN there (LeNet: 0.7x), so `jit_compile=auto` turns XLA on for dense-only
# nets when they are big enough to gain (>= 50k parameters: tutorial 000's FNN
# ran about 2x faster; heart_mlp's 8.6k did not), and for gated recurrent nets
# of these layers in fits long enough to pay the compile (below).
_XLA_FRIENDLY_LAYERS = (
    "InputLayer", "Dense", "Dropout", "Activation", "Flatten", "BatchNormalization", "ReLU", "LeakyReLU",
    "Reshape", "Softmax", "Normalization", "Add", "Concatenate", "Identity",
)
_XLA_MIN_PARAMS = 50_000
# The model classes whose `call` is their graph of layers, nothing else (and kexp's GAN,
# whose steps are kexp's). Keras exports no name for the class `keras.Model(inputs, outputs)` returns.
_GRAPH_MODELS = (keras.Sequential, Functional, GAN)
# Gated recurrent layers XLA speeds up on CPU: it fuses each step's gate math, which
# otherwise runs as a dozen small ops per time step. Measured through the harness (2-core
# AMD EPYC, per-step time without over with XLA): LSTM(64) x 100 steps at batch 128
# 1.7x, GRU(64) 1.4x, LSTM(256) x 80 at batch 32 1.45x, LSTM(64) x 20 at batch 32 1.9x,
# LSTM(256) x 100 at batch 128 1.03x. SimpleRNN ran 0.8x, so only LSTM and GRU count.
# XLA's compile costs a recurrent net 3-6 s more than TensorFlow's tracing. lstm_sine's
# 630 steps gained less than that (its whole command ran slower with XLA); rnn_memory's
# fits of 3,000 steps saved about 20 ms a step. Shorter fits keep XLA off.
_XLA_MIN_RECURRENT_STEPS = 1_000


def jit_compile(train: TrainConfig, model: keras.Model | None, num_replicas: int, total_steps: int | None = None,
                shapes_may_vary: bool = False, user_code: str = "") -> bool | str:
    """Returns the `jit_compile` argument for `Model.compile`: `train.jit_compile`, or the auto rule.

    Args:
        train: The training settings.
        model: The model to be compiled; `auto` looks at its layers.
        num_replicas: Replicas training in sync.
        total_steps: The fit's optimizer steps, when known; `auto` turns XLA on
            for a gated recurrent net only when there are enough to pay its compile.
        shapes_may_vary: Whether the fit's batches may differ in shape (padded, or
            a stream's): each new shape would compile again, so `auto` keeps XLA off
            for recurrent nets.
        user_code: The compile argument that holds the user's code (`user_code_in`), or "".
    """
    return jit_choice(train, model, num_replicas, total_steps, shapes_may_vary, user_code)[0]


def jit_choice(train: TrainConfig, model: keras.Model | None, num_replicas: int, total_steps: int | None = None,
               shapes_may_vary: bool = False, user_code: str = "") -> tuple[bool | str, str]:
    """Returns `jit_compile`'s value and why, in words (`results.json` `fits.FIT.jit_compile_set_by`).

    Args:
        train: The training settings.
        model: The model to be compiled.
        num_replicas: Replicas training in sync.
        total_steps: The fit's optimizer steps, when known.
        shapes_may_vary: Whether the fit's batches may differ in shape.
        user_code: The compile argument that holds the user's code (`user_code_in`), or "".
    """
    if train.jit_compile != "auto":
        return train.jit_compile == "true", f"train.jit_compile={train.jit_compile}"
    auto = "train.jit_compile=auto: "
    if tf.config.list_logical_devices("GPU") or model is None:
        return "auto", auto + "Keras' choice (a GPU, or no model)"  # XLA on GPU where the model supports it
    if num_replicas > 1:
        # XLA clusters cannot reach a mirrored variable's copy on another
        # logical CPU ("Trying to access resource ... located in device CPU:1").
        return False, auto + f"off with {num_replicas} replicas (XLA cannot reach a mirrored variable's copies)"
    if not model.built:
        return False, auto + "off: the model was not built when compiled (no Input)"
    if user_code:
        return False, auto + f"off: the fit's {user_code} holds a function or object not from Keras"
    if _first_unfriendly(model, recurrent=False) is None:
        params = model.count_params()
        on = params >= _XLA_MIN_PARAMS
        return on, auto + f"{'on' if on else 'off'}: a dense-only net of {params:,} parameters " \
                          f"({'>=' if on else '<'} {_XLA_MIN_PARAMS:,})"
    # Not dense-only: with every part friendly here, the rest are LSTMs and GRUs.
    blocking = _first_unfriendly(model, recurrent=True)
    if blocking is not None:
        part, why = blocking
        return False, auto + f"off: {part.name!r} ({type(part).__name__}) {why}"
    if shapes_may_vary:
        return False, auto + "off: an LSTM/GRU net on batches that may differ in shape (padded, or a stream's: " \
                             "a compile for each shape)"
    on = total_steps is not None and total_steps >= _XLA_MIN_RECURRENT_STEPS
    steps = "an unknown number of" if total_steps is None else f"{total_steps:,}"
    return on, auto + f"{'on' if on else 'off'}: an LSTM/GRU net in a fit of {steps} steps " \
                      f"({'>=' if on else 'under'} {_XLA_MIN_RECURRENT_STEPS:,})"


def steps_per_execution(train: TrainConfig, steps_per_epoch: int | None, num_replicas: int) -> int:
    """Returns the `steps_per_execution` argument for `Model.compile`.

    `train.steps_per_execution`, or with 0 (auto) the whole epoch when it is
    short, else its largest divisor up to the cap (one input stream serves
    the whole fit), else the cap.

    Args:
        train: The training settings.
        steps_per_epoch: Batches per epoch, when known.
        num_replicas: Replicas training in sync.
    """
    if num_replicas > 1:
        # Keras 3.15's multi-step loop fails under MirroredStrategy with
        # "You must feed a value for placeholder tensor" (seen on 2
        # logical CPUs); one step per call is the working setting.
        if train.steps_per_execution > 1:
            warnings.warn(
                f"train.steps_per_execution={train.steps_per_execution} is not supported "
                f"with {num_replicas} replicas in Keras {keras.__version__}; using 1",
                stacklevel=3,
            )
        return 1
    if train.steps_per_execution:
        return train.steps_per_execution
    if not steps_per_epoch:
        return 1
    if steps_per_epoch <= _MAX_AUTO_STEPS_PER_EXECUTION:
        return steps_per_epoch
    # A divisor of the epoch lets one input stream serve the whole fit
    # (see `kexp.engine.pipeline`); when the epoch length has none big enough, the
    # largest setting wins and the data is iterated epoch by epoch.
    divisor = max(d for d in range(1, _MAX_AUTO_STEPS_PER_EXECUTION + 1) if steps_per_epoch % d == 0)
    return divisor if divisor >= _MIN_AUTO_DIVISOR else _MAX_AUTO_STEPS_PER_EXECUTION


def user_code_in(compile_args: Mapping[str, Any]) -> str:
    """Returns the first compile argument that holds a function or class of the user's, or "".

    XLA would compile it unseen: it drops a `tf.debugging` assertion in a loss or
    metric, and cannot compile a `py_function` in one or in a learning-rate schedule.

    Args:
        compile_args: `loss`, `metrics`, `weighted_metrics`, `optimizer`, as `fit` or `compile` took them.
    """
    for name in ("loss", "metrics", "weighted_metrics", "optimizer"):
        if _foreign(compile_args.get(name)):
            return name
    return ""


def _foreign(value: Any) -> bool:
    """Returns whether `value` (nested in lists, tuples and dicts) holds a callable or object not from Keras."""
    if isinstance(value, (list, tuple)):
        return any(_foreign(item) for item in value)
    if isinstance(value, dict):
        return any(_foreign(item) for item in value.values())
    if value is None or isinstance(value, (str, int, float, tf.Variable, keras.Variable)):
        return False
    if not (getattr(value, "__module__", None) or "").startswith("keras."):
        return True
    if isinstance(value, keras.layers.Layer):  # a Lambda or Activation layer as an activation or constraint
        return _unfriendly_layer(value, recurrent=False) is not None
    # What Keras' own objects call: a wrapper's function (`MeanMetricWrapper(fn=...)`, a loss's `fn`),
    # an optimizer's schedule, a LossScaleOptimizer's inner optimizer.
    held = vars(value) if hasattr(value, "__dict__") and not isinstance(value, type) else {}
    return any(_foreign(held[name]) for name in ("fn", "_fn", "_learning_rate", "inner_optimizer") if name in held)


def _first_unfriendly(model: keras.Model, recurrent: bool) -> tuple[keras.Operation, str] | None:
    """Returns the first part of `model` not known to be XLA-friendly on CPU, and why; None if all are.

    Only Keras' own layers count, in Keras' Sequential or functional models: a
    subclassed model or layer runs its own `call` (an assertion XLA would drop, a
    `py_function` it cannot compile), and a `keras.ops` call in a functional model
    (a `take`) can index past a table, which XLA clamps where TensorFlow raises.

    Args:
        model: The model.
        recurrent: Also count LSTM and GRU layers (alone or in `Bidirectional`) as friendly.
    """
    if type(model) not in _GRAPH_MODELS:
        return model, "is a subclassed model (its own call)"
    # A functional model's operations include its `keras.ops` calls; its layers do not.
    for part in model.operations if type(model) is Functional else model.layers:
        found = _first_unfriendly(part, recurrent) if isinstance(part, keras.Model) else \
            _unfriendly_layer(part, recurrent)
        if found is not None:
            return found
    return None


def _unfriendly_layer(part: keras.Operation, recurrent: bool) -> tuple[keras.Operation, str] | None:
    """Returns `(part, why)` when the layer or op is not XLA-friendly on CPU, else None."""
    if not isinstance(part, keras.layers.Layer):
        return part, "is a keras.ops call in the functional model"
    # A recurrent layer keeps its functions on its cell; Bidirectional on its two layers' cells.
    layers = [part]
    for layer in layers:
        layers += [inner for inner in (getattr(layer, attr, None) for attr in ("cell", "forward_layer",
                   "backward_layer")) if isinstance(inner, keras.layers.Layer)]
    for layer in layers:
        for name, value in vars(layer).items():
            if name.endswith(("activation", "_regularizer", "_constraint")) and _foreign(value):
                return part, f"holds a function or object not from Keras ({name})"
    if type(part).__name__ in _XLA_FRIENDLY_LAYERS and type(part).__module__.startswith("keras."):
        return None
    if recurrent and type(part) is keras.layers.Bidirectional and _is_gated_recurrent(part.forward_layer) \
            and _is_gated_recurrent(part.backward_layer):
        return None
    # No Embedding: XLA's gather clamps an out-of-range id where TensorFlow's
    # kernel raises, so a vocabulary set too small would train silently.
    if recurrent and _is_gated_recurrent(part):
        return None
    return part, "is outside the rule (Keras' dense layers, or LSTM/GRU nets, in Sequential or functional models)"


def _is_gated_recurrent(layer: keras.layers.Layer) -> bool:
    """Returns whether `layer` is Keras' LSTM or GRU, or kexp's LSTM (not a subclass: its `call` is unknown)."""
    return type(layer) in (keras.layers.LSTM, keras.layers.GRU, LSTM)
