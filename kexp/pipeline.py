"""Internal: training and evaluation data as the harness takes it, checked and counted.

The harness accepts what Keras' own `fit` accepts for in-memory data: a tuple
`(x,)`, `(x, y)` or `(x, y, sample_weight)` whose `x` (and `y`) may be one
array or a nest of arrays (tuple, list or dict, for multi-input models), or
an unbatched `tf.data.Dataset`. Examples are counted by the leading dimension
of the leaves, which must all agree: a count taken from one leaf only trained
multi-input models on as many examples as they had inputs.
"""

from __future__ import annotations

from typing import Any

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
        return data
    if not isinstance(data, (tuple, list)) or not 1 <= len(data) <= 3:
        raise UsageError(
            f"{what}: received {_describe(data)}; allowed: a tuple (x,), (x, y) or (x, y, sample_weight) "
            "of arrays or nests of arrays, or an unbatched tf.data.Dataset")
    return tuple(_leaves_as_arrays(part, what) for part in data)


def _leaves_as_arrays(value: Any, what: str) -> Any:
    if isinstance(value, dict):
        return {key: _leaves_as_arrays(v, what) for key, v in value.items()}
    if isinstance(value, (tuple, list)) and value and all(map(_holds_arrays, value)):
        # A list of arrays is several inputs; a list of numbers is one array.
        return tuple(_leaves_as_arrays(v, what) for v in value)
    if _is_array(value):
        return value
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:
        raise UsageError(f"{what}: a leaf is not an array ({_describe(value)}: {err})") from None


def _is_array(value: Any) -> bool:
    return isinstance(value, (np.ndarray, tf.Tensor)) or (hasattr(value, "shape") and hasattr(value, "dtype"))


def _holds_arrays(value: Any) -> bool:
    if isinstance(value, dict) or _is_array(value):
        return True
    return isinstance(value, (tuple, list)) and bool(value) and all(map(_holds_arrays, value))


def count_examples(data: Any, what: str = "data") -> int:
    """Returns the number of examples in normalized `data`.

    Args:
        data: What `normalize` returned.
        what: How to name the data in error messages.

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
            n = int(data.reduce(np.int64(0), lambda count, _: count + 1))
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
            raise UsageError(f"{what}: arrays of different lengths ({_cut(shown, 300)}); "
                             "allowed: every array with the same number of examples (rows)")
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
