"""Internal: clean stops on SIGINT / SIGTERM while a run trains.

The first SIGINT (Ctrl-C) or SIGTERM asks the run to stop: the model in
training stops at its next step boundary (with `steps_per_execution=N`, within
N steps: Keras checks between compiled calls), the epoch in progress is
dropped, the last completed epoch's state stays on disk for `--resume`, and
`results.json` gets status `interrupted`. A second SIGINT ends the process at
once in the command line (`StopRequest.exit_on_second`); in a library call (a
notebook, say) it raises `KeyboardInterrupt` in the main thread instead, as
soon as Python runs again, and never kills the interpreter.

Python runs signal handlers in the main thread only between bytecodes, so a
handler would wait for a long compiled TensorFlow call to return. The signal
is therefore delivered through `signal.set_wakeup_fd` to a watcher thread,
which acts immediately: TensorFlow releases the GIL while it computes.

A process forked from a run (a `keras.utils.PyDataset`'s worker pool) shares
that wakeup socket until its at-fork hook runs; a worker terminated in that
window (Keras ends a pool it has just started when a fit ends) would write its
SIGTERM to the parent's watcher. Where the kernel says who wrote (Linux'
`SO_PASSCRED`), the watcher counts only this process's own signals.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
from types import FrameType
from typing import Any, Callable

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

# StopRequests active in this process (their handlers are installed).
_ACTIVE: list["StopRequest"] = []


def _in_forked_child() -> None:
    """A process forked while a stop request is active (a PyDataset's worker pool, say) gets default signals.

    It inherits the handlers and the wakeup fd: its SIGTERM (how `multiprocessing` ends its workers) would
    be ignored, the pool would wait for it forever, and the signal would reach the parent's watcher as a
    request to stop the run.
    """
    if not _ACTIVE:
        return
    signal.set_wakeup_fd(-1)
    for request in _ACTIVE:
        # The parent's watcher ends when its writer closes: a copy held open here would keep it waiting.
        for end in request._sockets or ():
            end.close()
    _ACTIVE.clear()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_in_forked_child)

# Linux attaches the writing process's (pid, uid, gid) to each message read from a socket with SO_PASSCRED.
_CREDENTIALS = struct.Struct("3i")
_SENDER_KNOWN = hasattr(socket, "SO_PASSCRED") and hasattr(socket, "SCM_CREDENTIALS")


def _wakeup_sockets() -> tuple[socket.socket, socket.socket]:
    """Returns (reader, writer): one message per signal, each with its writer's pid where the OS says it."""
    if not _SENDER_KNOWN:
        return socket.socketpair()
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return reader, writer


def _receive(reader: socket.socket) -> tuple[bytes, int | None]:
    """Returns the next message (b'' at end of file) and the pid that wrote it (None where unknown)."""
    if not _SENDER_KNOWN:
        return reader.recv(64), None
    data, ancillary, _, _ = reader.recvmsg(64, socket.CMSG_SPACE(_CREDENTIALS.size))
    pids = [_CREDENTIALS.unpack(payload[:_CREDENTIALS.size])[0] for level, kind, payload in ancillary
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS]
    return data, (pids[0] if pids else None)


class RunInterrupted(KeyboardInterrupt):
    """Raised in the main thread when a signal asked the run to stop.

    Attributes:
        signum: The signal that asked (SIGINT or SIGTERM).
        exit_code: 130 for SIGINT, 143 for SIGTERM.
        dropped_epoch: The epoch (1-based, as Keras prints it) that the stop
            cut short and that a resume trains again, or None.
    """

    def __init__(self, signum: int, dropped_epoch: int | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = EXIT_CODES.get(signum, 130)
        self.dropped_epoch = dropped_epoch


class StopRequest:
    """Catches SIGINT/SIGTERM for the duration of a `with` block.

    Attributes:
        signum: The first signal received, or None.
        dropped_epoch: The epoch the stop cut short (1-based), set by
            `kexp.engine.callbacks.EpochGate`; None when it came between epochs.
        exit_on_second: Class setting: a second SIGINT ends the process with
            `os._exit(130)` (the CLI sets it) instead of raising
            `KeyboardInterrupt` in the main thread.
    """

    exit_on_second = False

    def __init__(self) -> None:
        self.signum: int | None = None
        self.dropped_epoch: int | None = None
        self._listeners: list[Callable[[], None]] = []
        self._previous: dict[int, Any] = {}
        self._previous_fd: int | None = None
        self._sockets: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self.active = False

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.signum is not None

    def on_request(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Calls `listener()` (from the watcher thread) when a stop is asked; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def check(self) -> None:
        """Raises `RunInterrupted` if a stop was asked for."""
        if self.signum is not None:
            raise RunInterrupted(self.signum, self.dropped_epoch)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only; nothing to catch here
        reader, writer = _wakeup_sockets()
        reader.setblocking(True)
        writer.setblocking(False)
        self._sockets = (reader, writer)
        self._previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._main_sigints = 0
        for signum in EXIT_CODES:
            self._previous[signum] = signal.signal(signum, self._in_main_thread)
        self._thread = threading.Thread(target=self._watch, name="kexp-signal-watcher", daemon=True)
        self._thread.start()
        self.active = True
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.active:
            return
        if self in _ACTIVE and _ACTIVE[-1] is not self:
            # Closed before a request opened after it (runs ended out of order): that one keeps the signals
            # and, when it ends, puts back what this one found, not this one's handlers and closed socket.
            above = _ACTIVE[_ACTIVE.index(self) + 1]
            above._previous, above._previous_fd = self._previous, self._previous_fd
        else:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
            signal.set_wakeup_fd(self._previous_fd if self._previous_fd is not None else -1)
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        reader, writer = self._sockets  # type: ignore[misc]
        writer.close()  # wakes the watcher with end-of-file
        if self._thread is not None:
            self._thread.join(timeout=5)
        reader.close()
        self.active = False

    def _watch(self) -> None:
        reader = self._sockets[0]  # type: ignore[index]
        while True:
            try:
                data, sender = _receive(reader)
            except OSError:
                return
            if not data:
                return
            if sender is not None and sender != os.getpid():
                continue  # a forked worker's own signal, written before its at-fork hook let go of the socket
            for signum in data:
                if signum not in EXIT_CODES:
                    continue
                if self.signum is None:
                    self.signum = signum
                    for listener in list(self._listeners):
                        listener()
                elif signum == signal.SIGINT and self.exit_on_second:
                    os._exit(130)  # second Ctrl-C: the user wants out now

    def _in_main_thread(self, signum: int, frame: FrameType | None) -> None:
        # The watcher thread handles the first signal; installing a
        # Python-level handler is what makes CPython write its number to the
        # wakeup fd. A second Ctrl-C in a library call ends the call here.
        if signum != signal.SIGINT:
            return
        self._main_sigints += 1
        if self._main_sigints >= 2 and not self.exit_on_second:
            raise KeyboardInterrupt("second SIGINT")


def raise_on_signals() -> None:
    """Makes SIGINT and SIGTERM raise `RunInterrupted` in the main thread until a `StopRequest` takes over.

    For the command line before its run opens (TensorFlow's import takes
    seconds): SIGTERM's default would kill the process with no message and
    no exit code of its own. A run's `StopRequest` replaces these handlers
    while it is active and puts them back when it ends.
    """
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise RunInterrupted(signum)

    for signum in EXIT_CODES:
        signal.signal(signum, interrupt)
