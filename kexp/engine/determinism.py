"""TensorFlow's op determinism for the runs that ask for it: a process-wide setting, put back as the caller had it."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import tensorflow as tf

# Runs may overlap (threads, nested blocks): determinism stays on until the last
# deterministic run closes, then goes back to what it was before the first opened.
_lock = threading.Lock()
_open_runs = 0
_was_on_before = False


@contextlib.contextmanager
def op_determinism() -> Iterator[None]:
    """Turns TensorFlow's op determinism on for the run, and off again after it unless the caller had it on.

    It is a setting of the whole process: left on, a library user's own Keras
    fits after a `train.deterministic` run would run deterministic (slower) ops.

    Yields:
        Nothing; the run trains at the yield.
    """
    from tensorflow.python.framework import config as tf_config  # no public switch back off

    global _open_runs, _was_on_before
    with _lock:
        if _open_runs == 0:
            _was_on_before = tf_config.is_op_determinism_enabled()
        _open_runs += 1
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        with _lock:
            _open_runs -= 1
            if _open_runs == 0 and not _was_on_before:
                tf_config.disable_op_determinism()
