"""Internal: Ctrl-C and SIGTERM as requests a long command (sweep, search, check, a local cluster) acts on.

The command's loop reads the list between its steps: the first request
stops its children cleanly, a second one at once. No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
    """Yields the list SIGINT and SIGTERM append their numbers to while the block runs; restores the handlers."""
    requests: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: requests.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requests
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stopped_exit_code(requests: list[int]) -> int:
    """Returns the exit code of a command a request stopped: 143 for SIGTERM first, else 130."""
    return 143 if requests[0] == signal.SIGTERM else 130
