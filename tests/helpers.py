"""Helpers the tests share: the repository root, running the CLI (and signalling it), reading TensorBoard event files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """Runs `python -m kexp ARGS` in a subprocess and returns the CompletedProcess."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "kexp", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def run_cli_here(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs the CLI's `main(ARGS)` in this process and returns what `run_cli` would.

    What `python -m kexp ARGS` does after Python and TensorFlow have started,
    without paying ~10 s of TensorFlow import per call on a 2-core machine.
    Use `run_cli` where a fresh process matters: signals, logical device
    counts (this process has two), start-up, the console script.
    """
    import contextlib
    import io
    import signal

    import keras

    from kexp.cli import main
    from kexp.engine.interrupt import StopRequest

    out, err = io.StringIO(), io.StringIO()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    # The command line makes a second Ctrl-C end the process; library runs in this process must raise instead.
    exit_on_second = StopRequest.exit_on_second
    policy = keras.mixed_precision.global_policy()
    saved_env = dict(os.environ)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as stop:  # argparse's usage errors
                code = stop.code if isinstance(stop.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        keras.mixed_precision.set_global_policy(policy)
        StopRequest.exit_on_second = exit_on_second
    return subprocess.CompletedProcess(["kexp", *args], code, out.getvalue(), err.getvalue())


def read_events(folder: Path) -> dict[str, list]:
    """Reads every TensorBoard event file in `folder`: `{tag: [(step, value), ...]}`.

    Scalars come back as floats, text as str, images as the stored tensor (width, height, PNGs).
    """
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    out: dict[str, list] = {}
    for tag in acc.Tags()["tensors"]:
        events = acc.Tensors(tag)
        rows = []
        for ev in events:
            import tensorflow as tf

            value = tf.make_ndarray(ev.tensor_proto)
            if value.ndim == 0 and value.dtype.kind in "OSU":  # a text summary
                rows.append((ev.step, value.item().decode() if isinstance(value.item(), bytes) else value.item()))
            else:
                rows.append((ev.step, float(value) if value.ndim == 0 else value))
        out[tag] = rows
    return out


def start_run(*args: str) -> subprocess.Popen:
    """Starts `python -m kexp run ARGS` with unbuffered output, to be signalled (`signal_at`)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "kexp", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def signal_at(proc: subprocess.Popen, marker: str, signum: int, timeout: float = 240, after: str = "") -> list[str]:
    """Sends `signum` when a stdout line starts with `marker` (Keras prints "Epoch 3/4" as epoch 3 begins).

    Args:
        proc: From `start_run`.
        marker: The start of the line to signal at.
        signum: The signal.
        timeout: Seconds to wait for the marker.
        after: Only a marker after a line containing this counts (e.g. the fit an experiment announces).
    """
    lines = []
    armed = not after
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            armed = armed or after in line
            if armed and line.startswith(marker):
                proc.send_signal(signum)
                break
            assert time.monotonic() < deadline, "no epoch marker in time"
        else:
            pytest.fail(f"run ended before {marker!r}: {''.join(lines)[-2000:]} {proc.stderr.read()[-2000:]}")
    except BaseException:
        proc.kill()
        raise
    return lines


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    """Waits for `proc` and returns `(returncode, stdout, stderr)`; kills it after `timeout` seconds."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out, err


def tier_marks(name: str) -> list:
    """Returns the marks of a test that runs experiment `name` at its defaults and checks its bars.

    Every such test is `slow`; an experiment whose default run is not quick
    (`EXPECTED_TIME_S`, `kexp.quality.is_quick`) is also `quality`: the README's
    test command skips it (`kexp check` and `pytest -m quality` run it).
    """
    from kexp import quality, registry

    return [pytest.mark.slow] + ([] if quality.is_quick(registry.load(name)) else [pytest.mark.quality])


def bars_tier(name: str):
    """Decorates a test of experiment `name`'s default run with `tier_marks(name)`."""
    def mark(test):
        for one in tier_marks(name):
            test = one(test)
        return test
    return mark
