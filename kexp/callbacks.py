"""Keras callbacks and TensorBoard writers the harness adds to every fit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf


class EpochTimer(keras.callbacks.Callback):
    """Records the training time of each epoch, validation excluded.

    Attributes:
        durations: Seconds spent training in each finished epoch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.durations: list[float] = []
        self._start: float | None = None

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._start = time.perf_counter()

    def on_test_begin(self, logs: Any = None) -> None:
        # Validation inside fit starts here; stop the epoch's training clock.
        self._stop()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._start is not None:
            self.durations.append(time.perf_counter() - self._start)
            self._start = None


class ImageWriter:
    """Writes PNG images into a TensorBoard event file (the `plots` run)."""

    def __init__(self, logdir: Path) -> None:
        self._writer = tf.summary.create_file_writer(str(logdir))

    def write_png(self, tag: str, png: bytes, step: int = 0) -> None:
        """Adds one PNG as image summary `tag` at `step`."""
        image = tf.image.decode_png(png, channels=4)[tf.newaxis]
        with self._writer.as_default():
            tf.summary.image(tag, image, step=step)
        self._writer.flush()

    def write_text(self, tag: str, text: str, step: int = 0) -> None:
        """Adds one markdown text summary."""
        with self._writer.as_default():
            tf.summary.text(tag, text, step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
