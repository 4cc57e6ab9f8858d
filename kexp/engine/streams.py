"""Internal: Keras' batch streams as `fit` data: a `keras.utils.PyDataset` or a Python generator.

Such data reaches Keras' own `fit` as the user gave it: its batches, its
batch size and its order are its own, as they would be in plain Keras.
What the harness can and cannot promise for it (`results.json` `fits`
records it as `input`):

- Counting: the examples of every batch Keras takes are counted as they
  stream (a batch's leading dimension): per epoch, once per batch index, for
  a PyDataset (Keras reads a PyDataset's first batches twice, to learn their
  shapes); in all, for a generator, which Keras reads ahead of its steps,
  so its count may include batches pulled but never trained. A PyDataset
  read by worker processes (`use_multiprocessing=True`) is counted in those
  processes: the harness cannot see the count.
- Order: the stream's own; `train.seed` and `train.shuffle` do not reorder it.
- Resume: weights, optimizer state and the epoch are restored; the stream
  starts again from its first batch (a generator's position is not saved),
  so a resumed run equals an uninterrupted one only if the stream's batches
  depend on their epoch and index alone.
- Several replicas: refused. Keras 3.15 fails (or trains wrong weights) on a
  batch that does not split evenly over the replicas, and the harness cannot
  trim a stream's batches without dropping examples silently.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from kexp.errors import UsageError


def is_stream(data: Any) -> bool:
    """Returns whether `data` is a PyDataset or an iterator (a Python generator, say)."""
    return isinstance(data, keras.utils.PyDataset) or inspect.isgenerator(data) or (
        isinstance(data, Iterator) and not isinstance(data, (tf.data.Dataset, str, bytes)))


def kind_of(data: Any) -> str:
    """Returns `PyDataset` or `generator`."""
    return "PyDataset" if isinstance(data, keras.utils.PyDataset) else "generator"


def batch_size_of(batch: Any) -> int:
    """Returns the leading dimension of a batch's first leaf (0 for an empty structure)."""
    leaves = tf.nest.flatten(batch)
    shape = getattr(leaves[0], "shape", None) if leaves else None
    return int(shape[0]) if shape else (len(leaves[0]) if leaves and hasattr(leaves[0], "__len__") else 0)


class Counter:
    """Examples a stream handed to Keras (thread-safe: a PyDataset's workers are threads).

    Attributes:
        per_epoch: Whether counts split by epoch. A PyDataset's do: Keras
            reads each epoch's batches by index, after the last epoch ended.
            A generator's do not: Keras reads it ahead (`tf.data` prefetch),
            so the next epoch's first batches are pulled before this one ends.
        epochs: Examples of each completed epoch (PyDataset).
        pulled: Examples of every batch taken from the stream, read-ahead included.
    """

    def __init__(self, per_epoch: bool) -> None:
        self._lock = threading.Lock()
        self._epoch: dict[Any, int] = {}
        self.per_epoch = per_epoch
        self.epochs: list[int] = []
        self.pulled = 0

    def add(self, key: Any, batch: Any) -> None:
        """Counts a batch once per epoch under `key` (its index, or a running number)."""
        size = batch_size_of(batch)
        with self._lock:
            if key not in self._epoch:
                self.pulled += size
            self._epoch[key] = size

    def end_epoch(self) -> None:
        """Closes the epoch's count."""
        if not self.per_epoch:
            return
        with self._lock:
            self.epochs.append(sum(self._epoch.values()))
            self._epoch = {}


class CountedPyDataset(keras.utils.PyDataset):
    """A PyDataset that hands on another's batches, counting their examples."""

    def __init__(self, inner: keras.utils.PyDataset, counter: Counter) -> None:
        super().__init__(workers=inner.workers, use_multiprocessing=inner.use_multiprocessing,
                         max_queue_size=inner.max_queue_size)
        self.inner = inner
        self.counter = counter

    def __getitem__(self, index: int) -> Any:
        batch = self.inner[index]
        self.counter.add(index, batch)
        return batch

    @property
    def num_batches(self) -> int | None:
        return self.inner.num_batches

    def __len__(self) -> int:
        return len(self.inner)

    def on_epoch_begin(self) -> None:
        self.inner.on_epoch_begin()

    def on_epoch_end(self) -> None:
        self.inner.on_epoch_end()


def counted_generator(inner: Iterator[Any], counter: Counter) -> Iterator[Any]:
    """Yields `inner`'s batches, counting their examples."""
    for number, batch in enumerate(inner):
        counter.add(number, batch)
        yield batch


class EpochCounts(keras.callbacks.Callback):
    """Closes the stream counter's epoch at each epoch's end (before the harness's logs read it)."""

    def __init__(self, counter: Counter) -> None:
        super().__init__()
        self.counter = counter

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.counter.end_epoch()


def prepare(data: Any, what: str, num_replicas: int, epochs: int, steps_per_epoch: int | None
            ) -> tuple[Any, Counter, int | None]:
    """Returns the stream to hand Keras (counted), its counter, and its batches per epoch (None: until it ends).

    Args:
        data: A PyDataset or a generator.
        what: How to name it in errors (`train`, `validation`).
        num_replicas: Replicas training in sync.
        epochs: Epochs the fit trains.
        steps_per_epoch: The `steps_per_epoch` given to `fit`, or None.

    Raises:
        UsageError: Under several replicas; for a generator read over
            several epochs without `steps_per_epoch`; for an endless
            PyDataset without it.
    """
    kind = kind_of(data)
    if num_replicas > 1:
        raise UsageError(f"{what}: received a {kind} under {num_replicas} replicas; allowed: arrays or an "
                         "unbatched tf.data.Dataset (the harness splits their batches evenly over replicas; a "
                         f"{kind}'s batches may not split, which Keras 3.15 fails on)")
    counter = Counter(per_epoch=kind == "PyDataset")
    if kind == "generator":
        if epochs > 1 and steps_per_epoch is None:
            raise UsageError(f"{what}: received a generator for {epochs} epochs without steps_per_epoch; a "
                             "generator is read once (Keras' fit stops when it runs out); allowed: "
                             "fit(..., steps_per_epoch=N) with a generator that yields N batches per epoch, "
                             "epochs=1, or a keras.utils.PyDataset")
        return counted_generator(data, counter), counter, steps_per_epoch
    batches = data.num_batches
    if batches is None and steps_per_epoch is None:
        raise UsageError(f"{what}: received an endless PyDataset (num_batches None) without steps_per_epoch; "
                         "allowed: fit(..., steps_per_epoch=N), or a PyDataset with a length")
    # Worker processes get their own copy of the PyDataset: a count there never comes back.
    stream = data if data.use_multiprocessing else CountedPyDataset(data, counter)
    return stream, counter, steps_per_epoch or batches


def describe(data: Any, counter: Counter | None, steps_per_epoch: int | None) -> dict[str, Any]:
    """Returns what `results.json` `fits` records of a stream's fit: its kind and what was and was not promised."""
    multiprocess = isinstance(data, keras.utils.PyDataset) and data.use_multiprocessing
    per_epoch = counter is not None and counter.per_epoch and not multiprocess
    return {
        "kind": kind_of(data),
        "batches_per_epoch": steps_per_epoch,
        "examples_per_epoch": counter.epochs if per_epoch else None,
        "examples_pulled": counter.pulled if counter is not None and not multiprocess else None,
        "counted": "in worker processes: not seen by the harness" if multiprocess else
        "every batch Keras took, once per epoch and index" if per_epoch else
        "every batch Keras pulled, including batches read ahead of the last step (not split by epoch)",
        "order": "the stream's own (train.seed and train.shuffle do not apply)",
        "resume": "weights, optimizer state and epoch restored; the stream restarts from its first batch",
    }
