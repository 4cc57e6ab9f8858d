"""Synthetic sequence tasks for the recurrent-network demos (tutorials 001/004)."""

from __future__ import annotations

import numpy as np


def adding_problem(num: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Returns the adding problem (Hochreiter & Schmidhuber 1997): `(x, y)`.

    Each sequence has `length` steps of two features: a value drawn from
    U(0, 1) and a marker that is 1 at exactly two steps, one in each half.
    The target is the sum of the two marked values. Always answering 1 (the
    mean) scores an MSE of Var(u1 + u2) = 1/6; a model must carry the first
    marked value across at least `length / 2` steps to do better.

    Args:
        num: Number of sequences.
        length: Steps per sequence (>= 2).
        rng: The random generator.

    Returns:
        `x` of shape `(num, length, 2)` and `y` of shape `(num, 1)`, float32.
    """
    if length < 2:
        raise ValueError(f"length must be >= 2; received: length={length}")
    values = rng.uniform(0.0, 1.0, size=(num, length)).astype("float32")
    half = length // 2
    first = rng.integers(0, half, size=num)
    second = rng.integers(half, length, size=num)
    markers = np.zeros((num, length), dtype="float32")
    rows = np.arange(num)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    y = (values[rows, first] + values[rows, second])[:, None]
    return np.stack([values, markers], axis=-1), y.astype("float32")
