"""Internal: work-arounds for Keras 3.15 under `MultiWorkerMirroredStrategy`.

Keras 3's `fit` does not run under TensorFlow's multi-worker strategy as
shipped (keras-team/keras#20585, tensorflow/tensorflow#72388), for two
reasons found here with two worker processes on 127.0.0.1:

1. Before training, `_maybe_symbolic_build` peeks at one distributed batch
   and averages it across workers with an eager `strategy.reduce` of a tuple
   of per-replica values, which fails ("Attempt to convert a value
   (PerReplica...) to a Tensor"). The batch only gives shapes, so kexp builds
   the model from a local batch itself and skips that step for the model.
2. Each step's logs are averaged across workers with
   `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalar loss
   and metric values ("Invalid reduction dimension 0 for input with 0
   dimensions"). Scalars are averaged with `axis=None` instead.
3. `predict` gathers each worker's outputs with `strategy.gather`, whose
   collective op takes no bfloat16 ("DataType bfloat16 not in list of
   allowed values"): a model under `mixed_bfloat16` whose last layer
   computes in bfloat16 failed at its first `predict`. Such outputs are
   gathered as float32 and cast back, which loses nothing.

These patches touch Keras internals; they apply only in multi-worker mode and
are checked by the two-process test (`tests/test_multiworker.py`). A third,
`built_locally`, serves `MirroredStrategy` fits and evaluations whose last
batch leaves replicas short (`tests/test_integrity.py`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

_PATCHED = False


def is_multi_worker(strategy: Any) -> bool:
    """Returns whether `strategy` spans several worker processes."""
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


def prepare_multi_worker_fit(model: Any, strategy: Any, dataset: Any) -> None:
    """Makes `model.fit/evaluate/predict` work under a multi-worker strategy.

    Args:
        model: A compiled Keras model created in `strategy.scope()`.
        strategy: The `MultiWorkerMirroredStrategy`.
        dataset: A batched, undistributed dataset of the model's inputs
            (one batch is read, for shapes).
    """
    _patch_log_reduction()
    with strategy.scope():
        model._symbolic_build(data_batch=next(iter(dataset.take(1))))
    # An instance attribute shadows the method for this model only.
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def _patch_log_reduction() -> None:
    global _PATCHED
    if _PATCHED:
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            def mean(value: Any) -> Any:
                if not trainer._is_per_replica_instance(value):
                    return value
                rank = value.values[0].shape.rank
                return strategy.reduce("MEAN", value, axis=0 if rank else None)

            return tree.map_structure(mean, values)
        return original(values, strategy, reduction)

    trainer.reduce_per_replica = reduce_per_replica
    trainer._multi_worker_concat = _gathering_bfloat16_as_float32(trainer._multi_worker_concat)
    _PATCHED = True


def _gathering_bfloat16_as_float32(concat: Any) -> Any:
    """Wraps Keras' `_multi_worker_concat(value, strategy)` so that bfloat16 values pass the gather as float32."""
    import tensorflow as tf

    def multi_worker_concat(value: Any, strategy: Any) -> Any:
        # A PerReplica value is a composite tensor: look at, and map, its replicas' tensors.
        if tf.nest.flatten(value, expand_composites=True)[0].dtype != tf.bfloat16:
            return concat(value, strategy)
        widened = tf.nest.map_structure(lambda part: tf.cast(part, tf.float32), value, expand_composites=True)
        return tf.cast(concat(widened, strategy), tf.bfloat16)

    return multi_worker_concat


@contextlib.contextmanager
def built_locally(model: Any, dataset: Any, strategy: Any) -> Iterator[None]:
    """Under several replicas, builds `model` from one local batch and keeps Keras from peeking again.

    Before each `fit` and `evaluate`, Keras 3.15 builds the model's metrics
    from one batch of the data, distributed and then summed across replicas;
    a batch that leaves a replica short or empty fails there ("Inputs to
    operation AddN ... must have the same size"), while the steps themselves
    handle it exactly. One replica needs none of this; multi-worker fits get
    `prepare_multi_worker_fit`.

    Args:
        model: A compiled model.
        dataset: The batched dataset about to be fed (one batch is read).
        strategy: The strategy the model was built under.
    """
    if strategy.num_replicas_in_sync == 1 or is_multi_worker(strategy):
        yield
        return
    with strategy.scope():
        model._symbolic_build(data_batch=next(iter(dataset.take(1))))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    try:
        yield
    finally:
        del model._maybe_symbolic_build


class _NotRetracing:
    """Drops TensorFlow's "triggered tf.function retracing" warning (see `quiet_retracing_warnings`)."""

    def filter(self, record: Any) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


_RETRACING_FILTER = _NotRetracing()


def quiet_retracing_warnings() -> None:
    """Hides TensorFlow's retracing warning, which a run that fits several models always triggers.

    TensorFlow counts traces per Python function, and Keras compiles each
    model's train, test and predict step from the same nested functions: the
    sixth model a run fits (rnn_memory fits six) draws the warning though
    nothing traces more than once per model.
    """
    import logging

    logger = logging.getLogger("tensorflow")
    if _RETRACING_FILTER not in logger.filters:
        logger.addFilter(_RETRACING_FILTER)
