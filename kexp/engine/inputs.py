"""Internal: training and evaluation data as the harness takes it, checked and counted.

(`kexp.engine.pipeline` turns it into batched datasets.)

The harness accepts what Keras' own `fit` accepts for in-memory data: a tuple
`(x,)`, `(x, y)` or `(x, y, sample_weight)` whose `x` (and `y`) may be one
array or a nest of arrays (tuple, list or dict, for multi-input models), or
an unbatched `tf.data.Dataset`. Examples are counted by the leading dimension
of the leaves, which must all agree: a count taken from one leaf only trained
multi-input models on as many examples as they had inputs.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from kexp.errors import UsageError


def normalize(data: Any, what: str = "data") -> Any:
    """Returns `data` in the form `tf.data` slices alike: nested lists of arrays become tuples.

    `tf.data.Dataset.from_tensor_slices` turns a list of arrays into one
    stacked tensor; a tuple keeps them as separate inputs, as Keras' `fit`
    treats a list.

    Args:
        data: A dataset, or a tuple or list `(x,)`, `(x, y)` or `(x, y, sample_weight)`.
        what: How to name the data in error messages (`train`, `validation`).

    Returns:
        The dataset unchanged, or a tuple of nests of arrays.

    Raises:
        UsageError: For a structure Keras' `fit` does not take, or for
            leaves that are not arrays.
    """
    if isinstance(data, tf.data.Dataset):
        _check_unbatched(data, what)
        return data
    if not isinstance(data, (tuple, list)) or not 1 <= len(data) <= 3:
        raise UsageError(
            f"{what}: received {_describe(data)}; allowed: a tuple (x,), (x, y) or (x, y, sample_weight) "
            "of arrays or nests of arrays, or an unbatched tf.data.Dataset")
    return tuple(_leaves_as_arrays(part, what, name) for part, name in zip(data, ("x", "y", "sample_weight")))


def _leaves_as_arrays(value: Any, what: str, path: str) -> Any:
    if _is_sparse(value):  # before the dict branch: scipy's dok_matrix is a dict
        # Keras' fit trains on these; the harness's cache, shuffle and batch pipeline takes dense slices only.
        raise UsageError(f"{what}: {path} is a sparse {type(value).__name__} of shape {tuple(value.shape)}; the "
                         "harness batches dense arrays: allowed: .toarray() (scipy) or tf.sparse.to_dense(...), or "
                         "Keras' own fit and evaluate for sparse data")
    if isinstance(value, tf.RaggedTensor):
        raise UsageError(f"{what}: {path} is a RaggedTensor of shape {tuple(value.shape)}; the harness batches "
                         "dense arrays: allowed: .to_tensor() (zero-padded), or a tf.data.Dataset of its slices "
                         "with pad=True (each batch padded to its longest)")
    if isinstance(value, dict):
        return {key: _leaves_as_arrays(v, what, f"{path}[{key!r}]") for key, v in value.items()}
    if isinstance(value, (tuple, list)) and value and all(map(_holds_arrays, value)):
        # A list of arrays is several inputs; a list of numbers is one array.
        return tuple(_leaves_as_arrays(v, what, f"{path}[{i}]") for i, v in enumerate(value))
    if _is_array(value):
        return value
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:
        raise UsageError(f"{what}: a leaf is not an array ({_describe(value)}: {err})") from None


def _is_sparse(value: Any) -> bool:
    """Whether `value` is a `tf.SparseTensor` or a scipy sparse matrix or array (scipy is not imported here)."""
    if isinstance(value, tf.SparseTensor):
        return True
    scipy_sparse = sys.modules.get("scipy.sparse")  # loaded wherever such a value was made
    if scipy_sparse is not None:
        return bool(scipy_sparse.issparse(value))
    return False


def _is_array(value: Any) -> bool:
    return isinstance(value, (np.ndarray, tf.Tensor)) or (hasattr(value, "shape") and hasattr(value, "dtype"))


def _holds_arrays(value: Any) -> bool:
    if isinstance(value, dict) or _is_array(value):
        return True
    return isinstance(value, (tuple, list)) and bool(value) and all(map(_holds_arrays, value))


# Beyond this a dataset of unknown length is taken to be endless (a
# `.repeat()` hidden behind a `.filter()`): counting would never end.
MAX_COUNTED_EXAMPLES = 100_000_000


def _count_elements(data: tf.data.Dataset, what: str, should_stop: Callable[[], None] | None) -> int:
    """Counts a dataset of unknown length in chunks, so that a stop request and the cap are seen."""
    n = 0
    for chunk in data.map(lambda *_: tf.constant(0, tf.int8)).batch(65_536):
        n += int(chunk.shape[0])
        if should_stop is not None:
            should_stop()
        if n > MAX_COUNTED_EXAMPLES:
            raise UsageError(f"{what}: a dataset of unknown length with more than {MAX_COUNTED_EXAMPLES:,} "
                             "examples (endless?); allowed: a finite, unbatched tf.data.Dataset "
                             "(no .repeat(): the harness repeats it per epoch)")
    return n


def count_examples(data: Any, what: str = "data", should_stop: Callable[[], None] | None = None) -> int:
    """Returns the number of examples in normalized `data`.

    Args:
        data: What `normalize` returned.
        what: How to name the data in error messages.
        should_stop: Called while a dataset of unknown length is counted;
            raises to stop (the run's stop request).

    Returns:
        The common leading dimension of every leaf, or a dataset's length.

    Raises:
        UsageError: When leaves disagree on their length, a leaf has no
            leading dimension, or there are no examples.
    """
    if isinstance(data, tf.data.Dataset):
        n = int(data.cardinality())
        if n == tf.data.INFINITE_CARDINALITY:
            raise UsageError(f"{what}: received an infinite dataset; allowed: a finite, unbatched tf.data.Dataset")
        if n < 0:
            n = _count_elements(data, what, should_stop)
    else:
        paths = _leaf_paths(data)
        lengths: dict[str, int] = {}
        for path, leaf in paths:
            shape = tuple(leaf.shape)
            if not shape:
                raise UsageError(f"{what}: leaf {path} is a scalar; allowed: arrays with one row per example")
            lengths[path] = int(shape[0])
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{path}: {n}" for path, n in lengths.items())
            several = "; a list or tuple of arrays is one model input each, as in Keras' fit: examples of " \
                "varying length go in a tf.data.Dataset with pad=True" if any("[" in path for path in lengths) else ""
            raise UsageError(f"{what}: arrays of different lengths ({_cut(shown, 300)}); "
                             f"allowed: every array with the same number of examples (rows){several}")
        n = next(iter(lengths.values()))
    if n == 0:
        raise UsageError(f"{what}: received no examples; allowed: at least one example")
    return n


def _leaf_paths(data: tuple) -> list[tuple[str, Any]]:
    names = ("x", "y", "sample_weight")
    found: list[tuple[str, Any]] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, v in value.items():
                walk(v, f"{path}[{key!r}]")
        elif isinstance(value, tuple):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")
        else:
            found.append((path, value))

    for name, part in zip(names, data):
        walk(part, name)
    return found


def _describe(value: Any) -> str:
    if hasattr(value, "shape"):
        return f"{type(value).__name__} of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return _cut(repr(value), 80)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_unbatched(dataset: tf.data.Dataset, what: str) -> None:
    """Refuses a dataset that was batched already: the harness batches (per replica, seeded, counted).

    A batched dataset would be batched again (batches of batches), and an
    element counted as an example. tf.data keeps the chain of datasets a
    pipeline was made from; a batch anywhere in it gives it away.
    """
    node, hops = dataset, 0
    while node is not None and hops < 100:
        if type(node).__name__ in ("_UnbatchDataset", "UnbatchDataset"):
            return  # batched, then split into examples again
        if type(node).__name__ in _BATCHING_DATASETS:
            raise UsageError(
                f"{what}: received a batched tf.data.Dataset ({type(node).__name__}); allowed: an unbatched "
                "dataset of single examples (drop .batch(), or call .unbatch()): the harness batches it "
                "with train.batch_size per replica")
        node, hops = getattr(node, "_input_dataset", None), hops + 1


_BATCHING_DATASETS = ("_BatchDataset", "_PaddedBatchDataset", "_ParallelBatchDataset", "BatchDataset",
                      "PaddedBatchDataset", "ParallelBatchDataset", "_RaggedBatchDataset")


def split_validation(data: Any, validation: Any) -> tuple[Any, Any]:
    """Returns `(train, validation)`, holding out a fraction of in-memory `data` when `validation` is a float.

    As Keras' `validation_split`: the last examples, before any shuffling.

    Raises:
        UsageError: For a fraction outside (0, 1), or a dataset to split.
    """
    if not isinstance(validation, float) or isinstance(validation, bool):
        return data, validation
    if not 0.0 < validation < 1.0:
        raise UsageError(f"validation: received {validation!r}; allowed: a fraction 0 < v < 1 of the training "
                         "data, or validation data")
    if isinstance(data, tf.data.Dataset):
        raise UsageError("validation: a fraction needs in-memory training data; allowed with a dataset: "
                         "validation data (e.g. dataset.skip(n) / dataset.take(n))")
    data = normalize(data, "train")
    n = count_examples(data, "train")
    cut = int(n * (1.0 - validation))
    if cut == 0 or cut == n:
        raise UsageError(f"validation: received {validation!r} of {n} examples, which leaves no "
                         f"{'training' if cut == 0 else 'validation'} example; allowed: a fraction that leaves both")
    head = tf.nest.map_structure(lambda a: a[:cut], data)
    tail = tf.nest.map_structure(lambda a: a[cut:], data)
    return head, tail


def with_class_weight(data: Any, class_weight: Any) -> Any:
    """Returns normalized `data` with each example weighted by its class's weight, as Keras' `class_weight`.

    Folded into the sample weights (multiplied with any given), so that
    batching, shuffling and fused steps treat it as one more array.

    Args:
        data: What `normalize` returned, with `y` one array of class
            indices (`(N,)` or `(N, 1)`) or one-hot rows (`(N, C)`).
        class_weight: `{class_index: weight}` for classes `0 .. C - 1`.

    Raises:
        UsageError: For a mapping that does not cover the classes, or data
            without one `y` array.
    """
    if not isinstance(class_weight, dict) or not class_weight or not all(
            isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in class_weight):
        raise UsageError(f"class_weight: received {_cut(repr(class_weight), 80)}; "
                         "allowed: a dict {class_index: weight}")
    size = max(int(k) for k in class_weight) + 1
    if sorted(int(k) for k in class_weight) != list(range(size)):
        raise UsageError(f"class_weight: received keys {sorted(class_weight)}; allowed: every class 0..{size - 1}")
    table = tf.constant([float(class_weight[k]) for k in range(size)], tf.float32)

    def weights_of(y: Any) -> tf.Tensor:
        y = tf.convert_to_tensor(y)
        labels = tf.argmax(y, axis=-1) if y.shape.rank >= 2 and y.shape[-1] > 1 else tf.reshape(y, [-1])
        return tf.gather(table, tf.cast(labels, tf.int32))

    if isinstance(data, tf.data.Dataset):
        def add(*example: Any) -> Any:
            if len(example) < 2 or tf.nest.is_nested(example[1]):
                raise UsageError("class_weight: needs (x, y) examples with one y tensor")
            weight = tf.reshape(weights_of(example[1][tf.newaxis]), [])
            old = example[2] if len(example) == 3 else tf.ones([], tf.float32)
            return example[0], example[1], tf.cast(old, tf.float32) * weight
        return data.map(add)
    if len(data) < 2 or isinstance(data[1], (dict, tuple)):
        raise UsageError("class_weight: needs (x, y) data with one y array")
    y = np.asarray(data[1])
    labels = np.argmax(y, axis=-1) if y.ndim >= 2 and y.shape[-1] > 1 else y.reshape(len(y), -1)[:, 0]
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= size):
        raise UsageError(f"class_weight: labels run {labels.min()}..{labels.max()}, the keys 0..{size - 1}; "
                         "allowed: a weight for every class in y")
    weights = np.asarray([float(class_weight[k]) for k in range(size)], np.float32)[labels]
    if len(data) == 3:
        weights = weights * np.asarray(data[2], np.float32).reshape(len(weights))
    return (data[0], data[1], weights)
