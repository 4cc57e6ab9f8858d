"""The bundled 8x8 handwritten digits and their stratified train/test split, without scikit-learn.

`digits.csv.gz` is scikit-learn's copy (BSD-3-Clause) of the UCI "Optical
Recognition of Handwritten Digits" test set (Alpaydin & Kaynak, 1998; CC BY
4.0): 1,797 images of 8x8 pixels valued 0-16, one per line, the label last.
kexp reads it itself and splits it as `sklearn.model_selection.train_test_split(
..., stratify=labels, random_state=seed)` does, index for index: importing
scikit-learn made every process that imports Keras 1.3 s slower (Keras 3
imports its scikit-learn wrappers whenever scikit-learn is installed).
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

DIGITS_CSV = Path(__file__).with_name("digits.csv.gz")


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Returns the digits' images `(1797, 8, 8)` (float64, 0-16) and labels `(1797,)` (int)."""
    with gzip.open(DIGITS_CSV, "rt") as csv:
        data = np.loadtxt(csv, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns train and test indices with each class's share kept, as scikit-learn's `StratifiedShuffleSplit`.

    Args:
        labels: One label per example.
        test_fraction: Held-out share in (0, 1); the test set has
            `ceil(test_fraction * n)` examples.
        seed: Seeds a `numpy.random.RandomState`, drawn from in scikit-learn's order.

    Returns:
        `(train, test)`: index arrays, each shuffled.
    """
    n_test = math.ceil(test_fraction * len(labels))
    n_train = len(labels) - n_test
    _, label_ids, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    by_class = np.split(np.argsort(label_ids, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    train_counts = _approximate_mode(class_counts, n_train, rng)
    test_counts = _approximate_mode(class_counts - train_counts, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for members, n_train_i, n_test_i in zip(by_class, train_counts, test_counts):
        shuffled = members.take(rng.permutation(len(members)), mode="clip")
        train.extend(shuffled[:n_train_i])
        test.extend(shuffled[n_train_i:n_train_i + n_test_i])
    return rng.permutation(train), rng.permutation(test)


def _approximate_mode(class_counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Returns how many of `draws` fall in each class: floored shares, then the largest remainders (ties drawn)."""
    continuous = class_counts / class_counts.sum() * draws
    counts = np.floor(continuous)
    missing = int(draws - counts.sum())
    remainder = continuous - counts
    for value in np.sort(np.unique(remainder))[::-1]:
        if missing <= 0:
            break
        (tied,) = np.where(remainder == value)
        chosen = rng.choice(tied, size=min(len(tied), missing), replace=False)
        counts[chosen] += 1
        missing -= len(chosen)
    return counts.astype(int)
