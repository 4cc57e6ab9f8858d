"""Internal: TensorFlow imported without its C++ start-up lines, for the command line and for library use.

TensorFlow 2.21 logs through absl before `TF_CPP_MIN_LOG_LEVEL` is read
(`cudart_stub ... Could not find cuda drivers`, `cpu_feature_guard ...`,
twice), and a CPU-only machine gets `E0000 ... failed call to cuInit` when
devices are listed. Later, harmless ERROR-level lines appear while graphs are
optimized: `remapper failed` (dcgan_digits), `use_unbounded_threadpool`
(`train.deterministic=true`), `oneDNN supports DT_INT32 only on platforms
with AVX-512` (char_rnn). kexp sets `TF_CPP_MIN_LOG_LEVEL=3` (errors hidden;
TensorFlow's errors still reach Python as exceptions, and fatal lines still
print) unless the user set a level, and imports TensorFlow with stderr captured:
shown only if the import fails. A process TensorFlow aborts during its import
(a CPU without the instructions it was built for) dies before the captured
text can be shown: faulthandler's `Fatal Python error: Aborted` and a stack
through this module are all it prints; `TF_CPP_MIN_LOG_LEVEL=0` shows why.
This module does not import TensorFlow until asked.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import tempfile
import typing

__all__ = ["import_tensorflow_quietly"]

# What kexp sets when the user set nothing: ERROR lines hidden too (see the module docstring).
QUIET_LEVEL = "3"


def import_tensorflow_quietly(*, library: bool = False) -> None:
    """Imports TensorFlow and finds its devices with the C++ start-up log lines hidden.

    Set `TF_CPP_MIN_LOG_LEVEL=0` to see every line. A no-op once TensorFlow
    is imported.

    Args:
        library: Called from `import kexp` use rather than the command line:
            a `TF_CPP_MIN_LOG_LEVEL` the user set is then left to work as set
            (nothing muted); the command line mutes the start-up lines at any
            level but 0.
    """
    if "tensorflow" in sys.modules:
        return
    if library and "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_LEVEL)
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        return
    sys.stderr.flush()
    saved = os.dup(2)
    was_enabled = faulthandler.is_enabled()
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        # A crash inside the import (an abort, an illegal instruction) still shows its traceback.
        faulthandler.enable(file=saved)
        try:
            import tensorflow

            # Physical devices only: logical ones may still be configured.
            tensorflow.config.list_physical_devices()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM while TensorFlow loads: its start-up lines stay hidden
            _restore(saved, was_enabled)
            raise
        except BaseException:  # an error, or a `sys.exit` in the import: why is in what TensorFlow printed
            _restore(saved, was_enabled)
            _replay(captured)
            raise
        _restore(saved, was_enabled)


def _restore(saved: int, was_enabled: bool) -> None:
    """Gives fd 2 back its stderr and faulthandler its own settings."""
    faulthandler.disable()
    os.dup2(saved, 2)
    os.close(saved)
    if was_enabled:
        faulthandler.enable()


def _replay(captured: typing.BinaryIO) -> None:
    captured.seek(0)
    sys.stderr.write(captured.read().decode("utf-8", "replace"))
    sys.stderr.flush()
