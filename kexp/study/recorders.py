"""Callbacks experiments pass to their fits to record what their studies plot: weights and curves per epoch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from kexp.engine.callbacks import EpochTimer
from kexp.errors import UsageError
from kexp.store import rundir


class LayerWeightsRecorder(keras.callbacks.Callback):
    """Keeps one layer's weights, flattened and concatenated (kernel then bias), after every epoch.

    Args:
        layer: The layer's name in the fitted model.

    Attributes:
        values: One flat NumPy array per epoch this process trained.
    """

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer
        self.values: list[Any] = []

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        import numpy as np

        weights = self.model.get_layer(self.layer).get_weights()
        self.values.append(np.concatenate([np.ravel(w) for w in weights]))


class CurveRecorder(EpochTimer):
    """Records a point after every epoch: examples seen, training seconds, and `value()` (None here).

    Seconds count training only, as `EpochTimer` does (validation and the
    recorder's own work excluded; the first epoch's tracing, and a resumed
    fit's first epoch's retracing, included). With `path` the points are
    kept in a JSON file after every epoch, so that a resumed fit continues
    them (points past the restored epoch are dropped) and a fit that had
    finished before the resume still has them (`load`).

    Args:
        examples_per_epoch: Examples one epoch trains on.
        path: JSON file the points are kept in; None keeps them in memory only.

    Attributes:
        points: `(examples_seen, seconds, value)`, the first one before training.
    """

    def __init__(self, examples_per_epoch: int, path: Path | None = None) -> None:
        super().__init__()
        self.examples_per_epoch = examples_per_epoch
        self.path = Path(path) if path else None
        self.points: list[tuple[int, float, float | None]] = []

    def value(self) -> float | None:
        """The quantity recorded after each epoch; subclasses measure one."""
        return None

    def load(self) -> list[tuple[int, float, float | None]]:
        """Returns the points kept in `path` (empty without one)."""
        if self.path is None:
            return []
        kept = rundir.read_json(self.path, missing={"points": []})  # a crafted file: CorruptFile (exit 2), naming it
        points = kept.get("points") if isinstance(kept, dict) else None
        if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 3 for p in points):
            raise UsageError(f"{self.path}: not a curve file kexp wrote (points of [examples, seconds, value])")
        return [tuple(point) for point in points]  # type: ignore[misc]

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if not self.points:  # this process's first epoch: epoch 0, or where a resumed fit goes on
            done = epoch * self.examples_per_epoch
            self.points = [p for p in self.load() if p[0] <= done]
            if not self.points or self.points[-1][0] != done:
                self.points = [(done, 0.0, self.value())]
        super().on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        super().on_epoch_end(epoch, logs)
        if not self.durations:
            return
        seconds = self.points[-1][1] + self.durations[-1]
        self.points.append(((epoch + 1) * self.examples_per_epoch, seconds, self.value()))
        if self.path is not None:
            rundir.write_json(self.path, {"points": self.points})

    def steady_examples_per_s(self) -> float:
        """Examples per second of the median epoch after the first (which holds the tracing), from `points`.

        With a single epoch recorded, that epoch's (tracing included); NaN with none.
        """
        import numpy as np

        points = self.points or self.load()
        seconds = np.diff([p[1] for p in points])
        if not len(seconds):
            return math.nan
        return self.examples_per_epoch / max(float(np.median(seconds[1:] if len(seconds) > 1 else seconds)), 1e-9)


class LossCurveRecorder(CurveRecorder):
    """A `CurveRecorder` of the loss on fixed data (e.g. the whole training set) after every epoch.

    The loss is the plain mean of `loss` over the examples: no
    regularization penalty, and no division by the number of replicas that
    Keras applies to a loss computed inside a distribution strategy.

    Args:
        x: Inputs to score.
        y: Their targets.
        loss: A Keras loss object or function of `y_true, y_pred`.
        examples_per_epoch: Examples one epoch trains on.
        path: JSON file the curve is kept in (see `CurveRecorder`).
    """

    def __init__(self, x: Any, y: Any, loss: Any, examples_per_epoch: int, path: Path | None = None) -> None:
        super().__init__(examples_per_epoch, path)
        self.x, self.y = x, y
        # A Loss object's `call` gives per-example values, before any reduction or scaling.
        self.per_example = getattr(loss, "call", loss)
        self._score: Any = None

    def value(self) -> float:
        if self._score is None:
            self._score = tf.function(
                lambda x, y: tf.reduce_mean(self.per_example(y, self.model(x, training=False))))
        return float(self._score(self.x, self.y))
