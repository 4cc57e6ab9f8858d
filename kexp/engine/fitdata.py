"""Internal: a fit's data, checked and counted once: arrays and datasets (`kexp.engine.inputs`) or streams (`kexp.engine.streams`)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable

import tensorflow as tf

from kexp.engine import inputs, streams
from kexp.errors import UsageError


@dataclasses.dataclass
class FitData:
    """What one fit trains and validates on.

    Attributes:
        train: Normalized training data, or the (counted) stream handed to Keras.
        validation: Normalized validation data, a stream, or None.
        n_all: Training examples (None for a stream).
        n_train: Examples an epoch trains on (None for a stream).
        n_validation: Validation examples (None for a stream or none).
        steps_per_epoch: Batches per epoch (None: a generator read to its end).
        counter: A stream's example counter, or None.
        source: The stream as the user gave it, or None.
        class_weight: Class weights Keras applies itself (a stream's), or None.
        given_steps: `steps_per_epoch` as given to `fit` (a stream's), handed to Keras as it is.
    """

    train: Any
    validation: Any
    n_all: int | None
    n_train: int | None
    n_validation: int | None
    steps_per_epoch: int | None
    counter: streams.Counter | None = None
    source: Any = None
    class_weight: Any = None
    given_steps: int | None = None

    @property
    def is_stream(self) -> bool:
        """Whether the training data is a PyDataset or generator that Keras reads itself."""
        return self.counter is not None

    def examples_in_epochs(self, epochs: int) -> int | None:
        """Returns the examples the last `epochs` completed epochs trained on (None: a generator's, not known)."""
        if self.counter is None:
            return (self.n_train or 0) * epochs
        if not self.counter.per_epoch:
            return None
        return sum(self.counter.epochs[len(self.counter.epochs) - epochs:]) if epochs else 0

    def last_epoch_examples(self) -> int:
        """Returns the examples of the last completed epoch (a stream's, as counted; 0 if not known)."""
        return self.examples_in_epochs(1) or 0


def prepare(pipeline: Any, train: Any, validation: Any, *, class_weight: Any, epochs: int,
            steps_per_epoch: int | None, global_batch_size: int, num_replicas: int,
            should_stop: Callable[[], None]) -> FitData:
    """Returns a fit's data, checked and counted.

    Args:
        pipeline: The run's `kexp.engine.pipeline.Pipeline` (how many examples an epoch trains on).
        train: What `Harness.fit` received as training data.
        validation: Validation data, a fraction, or None.
        class_weight: `{class_index: weight}` or None.
        epochs: Epochs the fit trains.
        steps_per_epoch: `steps_per_epoch` given to `fit` (streams only).
        global_batch_size: The run's global batch.
        num_replicas: Replicas training in sync.
        should_stop: Raises when the run was asked to stop (long counts look at it).

    Raises:
        UsageError: For data Keras' `fit` refuses, or that the harness cannot train as Keras would.
    """
    if streams.is_stream(train):
        return _stream_data(train, validation, class_weight, epochs, steps_per_epoch, num_replicas, should_stop)
    if steps_per_epoch is not None:
        raise UsageError(f"fit: steps_per_epoch={steps_per_epoch!r} is set by the harness for arrays and datasets "
                         "(an epoch is every training example once); allowed: steps_per_epoch with a Python "
                         "generator or a keras.utils.PyDataset")
    train, validation = inputs.split_validation(train, validation)
    train = inputs.normalize(train, "train")
    if class_weight is not None:
        train = inputs.with_class_weight(train, class_weight)
    n_all = inputs.count_examples(train, "train", should_stop)
    validation, n_validation = _validation(validation, num_replicas, should_stop)
    n_train = pipeline.trained_examples(n_all)
    return FitData(train, validation, n_all, n_train, n_validation, max(1, math.ceil(n_train / global_batch_size)))


def _stream_data(train: Any, validation: Any, class_weight: Any, epochs: int, steps_per_epoch: int | None,
                 num_replicas: int, should_stop: Callable[[], None]) -> FitData:
    if isinstance(validation, float):
        raise UsageError(f"fit: validation_split={validation!r} with a {streams.kind_of(train)}; allowed: "
                         "validation_split with arrays (as in Keras' fit), or validation data")
    stream, counter, steps = streams.prepare(train, "train", num_replicas, epochs, steps_per_epoch)
    validation, n_validation = _validation(validation, num_replicas, should_stop)
    return FitData(stream, validation, None, None, n_validation, steps, counter, train, class_weight,
                   steps_per_epoch)


def _validation(validation: Any, num_replicas: int, should_stop: Callable[[], None]) -> tuple[Any, int | None]:
    if validation is None:
        return None, 0
    if streams.is_stream(validation):
        if streams.kind_of(validation) == "generator":
            raise UsageError("validation: received a generator; a generator is read once and Keras validates "
                             "every epoch; allowed: arrays, a tf.data.Dataset or a keras.utils.PyDataset")
        return streams.prepare(validation, "validation", num_replicas, 1, None)[0], None
    validation = inputs.normalize(validation, "validation")
    return validation, inputs.count_examples(validation, "validation", should_stop)


def first_batch(data: FitData, make_dataset: Callable[..., tf.data.Dataset]) -> tuple[tf.data.Dataset, FitData]:
    """Returns a dataset of one training batch (to build a lazily built model) and the data, a generator's put back.

    Args:
        data: The fit's data.
        make_dataset: `Harness.dataset`.
    """
    if not data.is_stream:
        return make_dataset(data.train, training=False, num_examples=data.n_all).take(1), data
    if streams.kind_of(data.source) == "PyDataset":
        batch = data.source[0]
    else:
        batch = next(data.train)
        data = dataclasses.replace(data, train=itertools.chain([batch], data.train))
    return tf.data.Dataset.from_tensors(tuple(batch) if isinstance(batch, list) else batch), data
