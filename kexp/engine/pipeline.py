"""Internal: the harness's `tf.data` pipelines: seeded order per epoch, batches, streams, fused groups.

Data comes in as `kexp.engine.inputs` checks and counts it; out goes a batched,
prefetched dataset whose order is a function of `(train.seed, epoch)` only,
so a resumed fit sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import tensorflow as tf

from kexp.engine import inputs
from kexp.config import TrainConfig
from kexp.errors import UsageError


class Pipeline:
    """Builds one run's training and evaluation datasets.

    Args:
        train: The training settings (seed, shuffle, buffer, determinism).
        num_replicas: Replicas training in sync (an epoch trains on a multiple of them).
        strategy_name: The strategy's name, for error messages.
    """

    def __init__(self, train: TrainConfig, num_replicas: int, strategy_name: str) -> None:
        self.train = train
        self.num_replicas = num_replicas
        self.strategy_name = strategy_name
        self._data_epoch: tf.Variable | None = None

    @property
    def data_epoch(self) -> tf.Variable:
        """The epoch whose order training datasets yield; `fit` sets it as each epoch begins.

        A shuffled epoch's order is a function of `(train.seed, epoch)` only,
        not of how many iterators were made before (Keras makes two per epoch),
        so a resumed fit sees exactly the batches an uninterrupted one would.
        Set it yourself when iterating a training dataset outside `fit`.
        """
        if self._data_epoch is None:
            self._data_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="kexp_data_epoch")
        return self._data_epoch

    def dataset(
        self,
        data: Any,
        *,
        training: bool,
        batch_size: int,
        epochs: tuple[int, int] | None = None,
        num_examples: int | None = None,
        group: int = 1,
        pad: bool = False,
    ) -> tf.data.Dataset:
        """Returns a cached, batched, prefetched `tf.data` pipeline.

        Args:
            data: A tuple of arrays `(x, y)` (or `(x,)`) or an unbatched dataset.
            training: Shuffle when True (and `train.shuffle`): arrays, and
                datasets whose examples have one fixed shape (held in memory
                as tensors), get a full permutation each epoch seeded by
                `(train.seed, epoch)`, gathered a batch at a time; datasets of
                varying shapes go through a `train.shuffle_buffer` buffer
                seeded once per stream.
            batch_size: Global batch size.
            epochs: `(first, end)`: one stream of the batches of epochs
                `first .. end - 1`, to be read by a fit with `steps_per_epoch`
                through a single iterator. Without it, every iteration is one
                epoch, the one `data_epoch` names. Keras makes two iterators
                per epoch, and making one costs about 15 ms once the pipeline
                holds functions (measured here): the stream pays that once
                per fit.
            num_examples: The number of examples in `data`, when the caller
                knows it (a dataset of unknown cardinality is counted otherwise).
            group: Batches stacked into one element (`[group, batch, ...]`),
                for fused steps (`kexp.engine.fused`); needs a stream and data of
                fixed shapes (arrays, and datasets whose examples have one
                shape), held as tensors. Each epoch may end in a partial
                batch (elements are then `(stacked, tail)`, see
                `_permuted_batches`) and in a partial group.
            pad: Pad each batch to its longest example (examples of varying
                shapes, e.g. variable-length sequences).

        Returns:
            The batched dataset.
        """
        shuffle = training and self.train.shuffle
        data = inputs.normalize(data, "train" if training else "data")
        batch = (lambda ds, size: _dense_elements(ds).padded_batch(size)) if pad else (lambda ds, size: ds.batch(size))
        if num_examples is None:
            num_examples = inputs.count_examples(data, "train" if training else "data")
        if not shuffle and epochs is None and (self.num_replicas == 1 or not training):
            return self._finish(self._plain_batches(data, batch, batch_size, num_examples), training)
        n = self.trained_examples(num_examples) if training else num_examples
        gatherable = not pad and (not isinstance(data, tf.data.Dataset) or fixed_shapes(data))
        if group > 1 and (epochs is None or not gatherable or n < batch_size):
            raise ValueError(f"group={group} needs a stream, data of fixed shapes held as tensors and a full batch; "
                             f"got {n} examples, batch_size={batch_size}, epochs={epochs}, pad={pad}")
        if (shuffle or group > 1) and gatherable:
            # The pipeline would cache it in memory anyway; as tensors, a
            # dataset gets the same exact, seeded permutation per epoch as
            # arrays do (and fused groups the same gathers).
            tensors = data if not isinstance(data, tf.data.Dataset) else (
                data.take(n).batch(max(n, 1)).get_single_element())
            ds = self._permuted_batches(tensors, n, batch_size, epochs, group, shuffle)
        else:
            ds = self._cached_batches(data, batch, n, batch_size, epochs, shuffle)
        if group > 1:
            # Keras checks its step count (K per element) against a known
            # cardinality (elements); an unknown one it leaves to
            # `steps_per_epoch`, which the fit of a stream passes.
            ds = ds.filter(lambda *_: True)
        return self._finish(ds, training)

    @staticmethod
    def _plain_batches(data: Any, batch: Callable[[tf.data.Dataset, int], tf.data.Dataset], batch_size: int,
                       num_examples: int) -> tf.data.Dataset:
        """Returns every example once, in order, in batches: evaluation, or unshuffled training on one replica.

        Nothing to declare or trim: evaluation scores every example, also in
        batches that leave some replicas short or empty.
        """
        ds = data if isinstance(data, tf.data.Dataset) else tf.data.Dataset.from_tensor_slices(data)
        ds = batch(ds.cache(), batch_size)
        if int(ds.cardinality()) < 0:
            # Counted already: Keras then knows where the data ends (no
            # "ran out of data" warning, a progress bar with an end).
            ds = ds.apply(tf.data.experimental.assert_cardinality(math.ceil(num_examples / batch_size)))
        return ds

    def _cached_batches(self, data: Any, batch: Callable[[tf.data.Dataset, int], tf.data.Dataset], n: int,
                        batch_size: int, epochs: tuple[int, int] | None, shuffle: bool) -> tf.data.Dataset:
        """Returns the first `n` examples cached and batched, through a shuffle buffer when `shuffle`.

        For data not held as tensors (examples of varying shapes, or padded
        batches), and for unshuffled streams; a stream repeats its epochs.
        """
        ds = data if isinstance(data, tf.data.Dataset) else tf.data.Dataset.from_tensor_slices(data)
        ds = ds.take(n).cache()
        if not shuffle:
            ds = batch(ds, batch_size)
            return ds.repeat(epochs[1] - epochs[0]) if epochs is not None else ds
        # Examples of varying shapes: a shuffle buffer, whose seed must
        # be a Python number, so it is seeded once per stream: the same
        # orders run to run, but a resumed fit sees other ones.
        first, end = epochs or (0, 1)
        ds = ds.shuffle(self.train.shuffle_buffer, seed=self.train.seed * 1_000_003 + first)
        ds = batch(ds, batch_size).repeat(end - first)
        return ds.apply(tf.data.experimental.assert_cardinality(math.ceil(n / batch_size) * (end - first)))

    def trained_examples(self, n: int) -> int:
        """Returns how many of `n` examples an epoch trains on: all, or under several replicas a multiple of them.

        Keras 3.15 averages replicas' gradients as if their batches were of
        equal size, so a batch that does not split evenly over replicas
        trains wrong weights (and a replica with no examples fails the
        all-reduce); dropping at most `replicas - 1` examples makes every
        batch, the last one too, divisible. `results.json` `fits` records
        the count.

        Raises:
            UsageError: When fewer examples than replicas remain.
        """
        trained = n - n % self.num_replicas
        if trained == 0:
            raise UsageError(f"train: received {n} examples, fewer than the {self.num_replicas} replicas of "
                             f"--strategy {self.strategy_name}; allowed: at least one example per replica")
        return trained

    @staticmethod
    def _finish(ds: tf.data.Dataset, training: bool) -> tf.data.Dataset:
        options = tf.data.Options()
        # In-memory training data shards by element across workers, not by file. Held-out data is not
        # sharded: Keras 3.15's metrics under MultiWorkerMirroredStrategy are each worker's own, so a
        # sharded evaluation scored the chief's share of the examples only; unsharded, every worker
        # scores every example (and a mean over workers' duplicates is the same mean).
        policy = tf.data.experimental.AutoShardPolicy
        options.experimental_distribute.auto_shard_policy = policy.DATA if training else policy.OFF
        # No model-based autotuning: a fit reads one iterator for all its epochs, and deleting it at the
        # fit's end waited 18-44 s for one of tf.data's threads to end (char_rnn at its defaults: 44 s of
        # its 450; py-spy showed the wait), under 1 s without it. The autotuner's thread sleeps between
        # tunings for periods that grow with the iterator's age. Prefetch buffers still adapt (their own
        # legacy tuner), and parallel maps take every core.
        options.autotune.enabled = False
        return ds.prefetch(tf.data.AUTOTUNE).with_options(options)

    def _permuted_batches(self, arrays: Any, n: int, batch_size: int, epochs: tuple[int, int] | None,
                          group: int = 1, shuffle: bool = True) -> tf.data.Dataset:
        """Returns batches of `arrays` (a nest of arrays or tensors), in a seeded permutation per epoch.

        With `group > 1`, each element holds `group` batches stacked
        (`[group, batch, ...]`), the epoch's last one fewer when `group` does
        not divide the epoch's batches; when the epoch ends in a partial
        batch, each element is `(stacked_full_batches, tail)`, where `tail` is
        that partial batch in the epoch's last element and empty in the others.
        Every element stacks at least one full batch (`_group_ends`).
        """
        tensors = tf.nest.map_structure(lambda a: tf.convert_to_tensor(a[:n]), arrays)
        seed = tf.constant(self.train.seed, tf.int64)
        has_tail = group > 1 and n % batch_size != 0
        # Every element stacks `group` batches: a static leading dimension.
        whole_groups = n % (batch_size * group) == 0

        ends = tf.constant(_group_ends(n, batch_size, group) if group > 1 else [], tf.int64)

        def batch_indices(epoch: tf.Tensor) -> tf.data.Dataset:
            order = tf.range(n, dtype=tf.int64)
            if shuffle:
                order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([seed, epoch]))
            if group == 1 or whole_groups:
                return tf.data.Dataset.from_tensor_slices(order).batch(batch_size * group)
            starts = tf.concat([[0], ends[:-1]], 0)
            return tf.data.Dataset.from_tensor_slices((starts, ends)).map(lambda a, b: order[a:b])

        def stack(t: tf.Tensor, idx: tf.Tensor, batches: int) -> tf.Tensor:
            # One gather for the whole group, then a free reshape: cheaper
            # than `group` small gathers and a stacking copy.
            return tf.reshape(tf.gather(t, idx), [batches, batch_size, *t.shape[1:]])

        def gather(idx: tf.Tensor) -> Any:
            if group == 1:
                return tf.nest.map_structure(lambda t: tf.gather(t, idx), tensors)
            if whole_groups:
                return tf.nest.map_structure(lambda t: stack(t, idx, group), tensors)
            if not has_tail:
                return tf.nest.map_structure(lambda t: stack(t, idx, tf.size(idx) // batch_size), tensors)
            batches = tf.size(idx) // batch_size
            full = batches * batch_size
            return (tf.nest.map_structure(lambda t: stack(t, idx[:full], batches), tensors),
                    tf.nest.map_structure(lambda t: tf.gather(t, idx[full:]), tensors))

        # One gather per batch instead of a shuffle buffer of single examples:
        # less work per step, and a full permutation.
        # Op determinism turns a parallel map into a sequential one and logs an
        # error line about it; ask for the sequential map directly then.
        parallel = None if self.train.deterministic else tf.data.AUTOTUNE
        return self._per_epoch(batch_indices, math.ceil(n / (batch_size * group)), epochs).map(
            gather, num_parallel_calls=parallel)

    def _per_epoch(
        self, make: Callable[[tf.Tensor], tf.data.Dataset], per_epoch: int, epochs: tuple[int, int] | None,
    ) -> tf.data.Dataset:
        """Returns `make(epoch)` for the epochs of a stream, or for `data_epoch` at each iteration."""
        if epochs is not None:
            first, end = epochs
            ds = tf.data.Dataset.range(first, end).flat_map(make)
            return ds.apply(tf.data.experimental.assert_cardinality(per_epoch * (end - first)))
        epoch = self.data_epoch
        ds = tf.data.Dataset.from_tensors(0).flat_map(lambda _: make(epoch.read_value()))
        return ds.apply(tf.data.experimental.assert_cardinality(per_epoch))


def _group_ends(n: int, batch_size: int, group: int) -> list[int]:
    """Returns where each element of an epoch's fused groups ends, in examples.

    `group` batches an element, the last element what is left; but when only
    a partial batch would be left, the element before gives it one of its
    full batches: a stack of no batches cannot be sliced under XLA (it
    failed to compile), and the epoch keeps the same number of elements,
    one per compiled call Keras makes.

    Raises:
        ValueError: For fewer than one full batch (nothing to stack).
    """
    full, tail = divmod(n, batch_size)
    if full == 0:
        raise ValueError(f"fused groups need a full batch; got {n} examples, batch_size={batch_size}")
    counts = [group] * (full // group) + ([full % group] if full % group else [])
    if tail and (full % group == 0):
        # The tail alone would be the last element: take a full batch along.
        counts[-1] -= 1
        counts.append(1)
    ends, at = [], 0
    for count in counts:
        at += count * batch_size
        ends.append(at)
    ends[-1] += tail
    return ends


def fixed_shapes(dataset: tf.data.Dataset) -> bool:
    """Returns whether every example of `dataset` is dense tensors of one fixed shape."""
    specs = tf.nest.flatten(dataset.element_spec)
    return all(isinstance(spec, tf.TensorSpec) and spec.shape.is_fully_defined() for spec in specs)


def _dense_elements(data: tf.data.Dataset) -> tf.data.Dataset:
    """Returns `data` with ragged examples (slices of a `tf.RaggedTensor`) made dense, which `padded_batch` needs."""
    if not any(isinstance(spec, tf.RaggedTensorSpec) for spec in tf.nest.flatten(data.element_spec)):
        return data

    def dense(value: Any) -> Any:
        return value.to_tensor() if isinstance(value, tf.RaggedTensor) else value

    return data.map(lambda *parts: tf.nest.map_structure(dense, parts if len(parts) > 1 else parts[0]),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
