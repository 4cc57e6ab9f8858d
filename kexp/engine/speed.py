"""Internal: the harness's speed decisions: steps per compiled call and XLA, from the model and the data.

Kept apart from the harness so that each rule reads, and tests, on its own;
the measurements behind each constant are in docs/performance.md.
"""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf

from kexp.config import TrainConfig

# Upper bound of batches per compiled call when chosen automatically: enough
# to amortize Keras' per-call Python overhead (keras#18648), small enough that
# the progress bar still moves. `kexp bench fnn` measured tutorial 000's FNN on 2 CPU
# cores at 1.2x the plain-fit throughput with 32 and more with 100 (README).
_MAX_AUTO_STEPS_PER_EXECUTION = 100
_MIN_AUTO_DIVISOR = 20

# Layers XLA fuses well on CPU. Convolutions run slower under XLA than with
# oneDNN there (LeNet: 0.7x), and recurrent nets gain throughput but lose more
# to compile time in short runs, so `jit_compile=auto` turns XLA on for
# dense-only nets alone, and only when they are big enough to gain (>= 50k
# parameters: tutorial 000's FNN ran about 2x faster; heart_mlp's 8.6k did not).
_XLA_FRIENDLY_LAYERS = (
    "InputLayer", "Dense", "Dropout", "Activation", "Flatten", "BatchNormalization", "ReLU", "LeakyReLU",
    "Reshape", "Softmax", "Normalization", "Add", "Concatenate", "Identity",
)
_XLA_MIN_PARAMS = 50_000


def jit_compile(train: TrainConfig, model: keras.Model | None, num_replicas: int) -> bool | str:
    """Returns the `jit_compile` argument for `Model.compile`: `train.jit_compile`, or the auto rule.

    Args:
        train: The training settings.
        model: The model to be compiled; `auto` looks at its layers.
        num_replicas: Replicas training in sync.
    """
    if train.jit_compile != "auto":
        return train.jit_compile == "true"
    if tf.config.list_logical_devices("GPU") or model is None:
        return "auto"  # Keras: XLA on GPU where the model supports it
    if num_replicas > 1:
        # XLA clusters cannot reach a mirrored variable's copy on another
        # logical CPU ("Trying to access resource ... located in device CPU:1").
        return False
    if not model.built:
        return False  # no Input: nothing to count until the first batch builds it
    return _dense_only(model) and model.count_params() >= _XLA_MIN_PARAMS


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


def _dense_only(model: keras.Model) -> bool:
    """Returns whether every layer, nested models included, is XLA-friendly on CPU."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            if not _dense_only(layer):
                return False
        elif type(layer).__name__ not in _XLA_FRIENDLY_LAYERS:
            return False
    return True
