"""Autoregressive rollout of a step-to-step sequence model (tutorial 003).

The model maps a sequence of half-overlapping windows to the same sequence
shifted by half a window (see `kexp.data.windows`). Rolling out feeds the
newest half window of each prediction back in as if it were data; the errors
accumulate along the horizon, as the seed shows.
"""

from __future__ import annotations

import numpy as np

from kexp.data import windows


def rollout(model, history: np.ndarray, num_points: int, feature_length: int, seq_length: int) -> np.ndarray:
    """Predicts `num_points` future samples from known past samples only.

    Args:
        model: Keras model `(batch, steps, feature_length) -> same shape`.
        history: Known samples just before the forecast; at least
            `windows.span(feature_length, seq_length)` of them.
        num_points: How many samples to forecast.
        feature_length: Samples per step (even).
        seq_length: Steps of context fed to the model each time.

    Returns:
        Float array of `num_points` forecast samples.

    Raises:
        ValueError: When `history` is shorter than one context.
    """
    context_len = windows.span(feature_length, seq_length)
    if len(history) < context_len:
        raise ValueError(f"history has {len(history)} samples; a context of seq_length={seq_length} needs {context_len}")
    hop = feature_length // 2
    # A Keras model's compiled predict function: an eager call of an LSTM
    # costs ~60 ms on 2 CPU cores, the compiled one a few ms (`kexp bench --sweep`).
    predict = getattr(model, "predict_on_batch", model)
    known = [np.asarray(history[-context_len:], dtype="float32")]
    produced = 0
    while produced < num_points:
        context = np.concatenate(known)[-context_len:]
        batch = windows.steps(context, feature_length)[np.newaxis]
        newest = np.asarray(predict(batch))[0, -1, -hop:]
        known.append(newest.astype("float32"))
        produced += hop
    return np.concatenate(known[1:])[:num_points]
