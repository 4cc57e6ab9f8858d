"""Overlapping windows of a 1-D series, as the tutorial's sine LSTM reads it (tutorial 003).

One step of a sequence is `feature_length` consecutive samples; consecutive
steps start `feature_length // 2` samples apart (half-window overlap). The
target of step t is step t + 1, i.e. the input shifted forward by half a
window, so each step predicts `feature_length // 2` new points.
"""

from __future__ import annotations

import numpy as np


def span(feature_length: int, seq_length: int) -> int:
    """Returns how many samples one sequence of `seq_length` steps covers."""
    return (seq_length - 1) * (feature_length // 2) + feature_length


def steps(values: np.ndarray, feature_length: int) -> np.ndarray:
    """Cuts a series into half-overlapping steps.

    Args:
        values: 1-D series whose length is `feature_length + k * feature_length // 2`.
        feature_length: Samples per step (even).

    Returns:
        Array `(num_steps, feature_length)`.
    """
    hop = feature_length // 2
    num_steps = (len(values) - feature_length) // hop + 1
    index = np.arange(feature_length)[None, :] + hop * np.arange(num_steps)[:, None]
    return values[index]


def sequences(
    values: np.ndarray, feature_length: int, seq_length: int, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (inputs, targets) sequences cut from a series.

    Args:
        values: 1-D series.
        feature_length: Samples per step (even).
        seq_length: Steps per sequence.
        stride: Samples between the starts of consecutive sequences.

    Returns:
        Two float32 arrays `(num_sequences, seq_length, feature_length)`;
        `targets[:, t]` equals `inputs[:, t + 1]` and the last target extends
        half a window past the last input.

    Raises:
        ValueError: When the series is shorter than one sequence plus its target.
    """
    needed = span(feature_length, seq_length + 1)
    if len(values) < needed:
        raise ValueError(
            f"series of {len(values)} samples is too short; one sequence of seq_length="
            f"{seq_length} steps of feature_length={feature_length} plus its target needs {needed}"
        )
    starts = np.arange(0, len(values) - needed + 1, stride)
    windows = np.stack([steps(values[s : s + needed], feature_length) for s in starts])
    windows = windows.astype("float32")
    return windows[:, :-1], windows[:, 1:]
