"""Internal: output to a reader that has left (`kexp run NAME | head -2`) is dropped, not an error.

A closed pipe makes every later write to it raise `BrokenPipeError`, and a
run's output is written from deep inside training (Keras' progress bar,
callbacks, kexp's own lines): raised there, it would fail a run that is
training fine. The command line therefore wraps `sys.stdout` and
`sys.stderr`: once a stream's reader has gone, its descriptor is pointed at
the null device, so that output is lost and the run goes on to the end.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterable, Iterator, TextIO


class DroppingStream:
    """A text stream whose writes are dropped once its reader has gone.

    Everything but `write`, `writelines` and `flush` is the wrapped stream's
    own (`isatty`, `fileno`, `encoding`, ...), so Keras and TensorFlow see the
    stream they expect.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        # The null device on the descriptor itself: what is still buffered, what
        # is written later (also by C++ code) and the flush at exit all succeed.
        try:
            fd = self._stream.fileno()
        except (OSError, ValueError):  # no descriptor (an in-memory stream): nothing to repoint
            return
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def dropping_closed_pipes() -> Iterator[None]:
    """Within the block, writes to `sys.stdout` / `sys.stderr` whose reader has gone are dropped."""
    saved = sys.stdout, sys.stderr
    # None (no console at all) stays None: print() then writes nothing, as Python does.
    sys.stdout, sys.stderr = (None if s is None else DroppingStream(s) for s in saved)
    try:
        yield
    finally:
        # Flushed through the wrappers: a broken pipe is dropped here, not reported at exit.
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        sys.stdout, sys.stderr = saved
