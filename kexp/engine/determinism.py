"""TensorFlow's op determinism for one run: a process-wide setting, put back as the caller had it."""

from __future__ import annotations

import contextlib
from typing import Iterator

import tensorflow as tf


@contextlib.contextmanager
def op_determinism() -> Iterator[None]:
    """Turns TensorFlow's op determinism on for the run, and off again after it unless the caller had it on.

    It is a setting of the whole process: left on, a library user's own Keras
    fits after a `train.deterministic` run would run deterministic (slower) ops.

    Yields:
        Nothing; the run trains at the yield.
    """
    from tensorflow.python.framework import config as tf_config  # no public switch back off

    was_on = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on:
            tf_config.disable_op_determinism()
