"""Internal: fused training steps: all batches of one compiled call in a loop inside it.

With `steps_per_execution=K`, Keras 3 runs K batches per call of its train
function, but each batch is still a separate step inside a TensorFlow while
loop: an `Optional` from the iterator, two `tf.cond`s, a `strategy.run` and,
under XLA, a launch of the compiled step. On tutorial 000's FNN (2 CPU cores) that
costs about 0.3 ms of a 1.5-2 ms step; measured with the same model and data,
`fit` ran 1.26-1.40x slower than the same steps looped inside one XLA
computation.

A fused train function takes one element of K stacked batches (`[K, B, ...]`)
and runs the model's own `train_step` on each slice in a `tf.while_loop`, all
in one compiled function. Keras still counts K steps per call, so callbacks,
progress bars and `stop_training` behave as with plain `steps_per_execution`;
the arithmetic of every step is the same, so the losses are too.

Used only where that holds: the model trains with Keras' own `train_step`,
or with one whose class declares `fuse_train_step = True` beside it (kexp's
`GAN`: a custom step may keep Python state per call, which a loop would run
once; a fusable one keeps none and returns the model's metric results, which
is what a fused call reports after its last step), on
one replica, with the data held as tensors (`kexp.engine.pipeline` gathers each
call's batches; a partial last batch travels beside the stacked full ones
and is trained on after them). An element may hold fewer than K batches (an
epoch's last call, when K does not divide the epoch): the loop runs over
what it holds.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import keras
import tensorflow as tf


def supports(model: keras.Model) -> bool:
    """Returns whether `model` can train with fused steps.

    Args:
        model: A compiled model.

    Returns:
        True for models that use Keras' own `train_step`, or declare theirs
        fusable (`fuse_train_step = True` on the class), on one replica,
        outside `MirroredStrategy`.
    """
    own_step = (getattr(type(model), "train_step", None) is getattr(keras.Model, "train_step", None)
                or _declared_fusable(type(model)))
    overridden = "train_step" in vars(model) or model.train_function is not None
    strategy = model.distribute_strategy
    # A MirroredStrategy over one device still syncs gradients through
    # `merge_call`, which a `tf.while_loop` inside `strategy.run` cannot hold.
    mirrored = isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))
    return (own_step and not overridden and not model.run_eagerly and not mirrored
            and strategy.num_replicas_in_sync == 1)


@contextlib.contextmanager
def fused_steps(model: keras.Model, element_spec: Any, tail: bool = False) -> Iterator[None]:
    """Makes `model.fit` run each element's stacked batches in one loop, for the duration of the block.

    The data passed to `fit` must yield elements of K = `steps_per_execution`
    stacked batches, and `fit` must get `steps_per_epoch` (a multiple of K).
    Afterwards the model trains as usual again (its train function is rebuilt
    on next use).

    Args:
        model: A compiled model for which `supports(model)` holds.
        element_spec: The stacked dataset's `element_spec`: each leaf's shape
            is `[K, batch, ...]`; with `tail`, a pair of such a nest and one
            of a batch's shape.
        tail: Elements are `(stacked, tail)`: `stacked` holds up to K full
            batches, and `tail`, a partial batch, is trained on after them
            when it is not empty (an epoch's last, partial batch).

    Yields:
        Nothing; fit the model inside the block.
    """
    stacked_spec = element_spec[0] if tail else element_spec
    batch_spec = tf.nest.map_structure(lambda spec: tf.TensorSpec(spec.shape[1:], spec.dtype), stacked_spec)
    with model.distribute_strategy.scope():
        # Keras builds a model by peeking at one element of the fit's data,
        # which is K batches here; build it from one batch's shapes instead.
        model._symbolic_build(data_batch=batch_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    model.train_function = _make_train_function(model, tail)
    try:
        yield
    finally:
        del model._maybe_symbolic_build
        model.train_function = None


def _make_train_function(model: keras.Model, tail: bool) -> Callable[[Any], Any]:
    strategy = model.distribute_strategy
    # XLA compiles for the shapes it is given either way; without it, the
    # graph must not know more than Keras' own step does.
    batch_of = (lambda t: t) if model.jit_compile else _unknown_batch

    # Like Keras' own step functions, not converted by AutoGraph: the loop is
    # written with tf.while_loop, and `train_step` must trace as Keras traces it.
    @tf.autograph.experimental.do_not_convert
    def run_steps(data: Any) -> Any:
        stacked, rest = data if tail else (data, None)
        steps = tf.shape(tf.nest.flatten(stacked)[0])[0]

        def body(i: tf.Tensor) -> tf.Tensor:
            _check_logs(model, model.train_step(tf.nest.map_structure(lambda t: batch_of(t[i]), stacked)))
            return i + 1

        # One step at a time: every step reads the variables the one before wrote.
        tf.while_loop(lambda i: i < steps, body, [tf.constant(0)], parallel_iterations=1)
        if rest is not None:
            def train_on_rest() -> tf.Tensor:
                model.train_step(rest)
                return tf.constant(0)

            tf.cond(tf.shape(tf.nest.flatten(rest)[0])[0] > 0, train_on_rest, lambda: tf.constant(0))
        # What Keras' `train_step` returns for the last batch.
        return model.get_metrics_result()

    @tf.autograph.experimental.do_not_convert
    def one_call(data: Any) -> Any:
        from keras.src.backend.tensorflow.trainer import reduce_per_replica

        return reduce_per_replica(strategy.run(run_steps, args=(data,)), strategy, reduction="auto")

    compiled = tf.function(one_call, jit_compile=bool(model.jit_compile), reduce_retracing=True)

    @tf.function
    @tf.autograph.experimental.do_not_convert
    def train_function(iterator: Any) -> Any:
        return compiled(iterator.get_next())

    return train_function


def _check_logs(model: keras.Model, logs: Any) -> None:
    """Raises if a fused `train_step` returned logs other than the model's metric results (checked while tracing).

    A fused call reports the metric results after its last step; anything
    else a step returned would be lost without a word.
    """
    expected = model.get_metrics_result()
    if isinstance(logs, dict) and sorted(logs) != sorted(expected):
        raise ValueError(
            f"{type(model).__name__}.train_step declares fuse_train_step = True but returned logs "
            f"{sorted(logs)}; allowed: the model's metric results {sorted(expected)} (what "
            "model.get_metrics_result() returns), or drop fuse_train_step")


def _declared_fusable(cls: type) -> bool:
    """Returns whether the class that defines `cls.train_step` declares `fuse_train_step = True` itself.

    A subclass that overrides a fusable `train_step` inherits the flag but not
    the promise: its step may keep Python state or return other logs.
    """
    for klass in cls.__mro__:
        if "train_step" in vars(klass):
            return vars(klass).get("fuse_train_step") is True
    return False


def _unknown_batch(batch: tf.Tensor) -> tf.Tensor:
    """Returns `batch` with its batch dimension unknown to the graph, as in Keras' own step.

    A slice of the stacked batches has a static batch size, Keras' batches do
    not; with it TensorFlow's graph optimizer picks other kernels for some
    ops (the gradient of a GAN generator's first kernel differed in its last
    bits), so the step would not be bit-for-bit Keras' own. Under XLA the
    compiled step sees concrete shapes in both, and the fused one ran the
    tutorial 000's FNN about 7% slower with the batch hidden (one A/B run, 3 repeats).
    """
    return tf.compat.v1.placeholder_with_default(batch, [None, *batch.shape[1:]])
