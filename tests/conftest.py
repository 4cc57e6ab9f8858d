"""Test session set-up: two logical CPU devices, quiet TensorFlow, helpers.

The logical devices must be configured before anything touches TensorFlow's
devices, so it happens here, at import, once per session. Tests under
`MirroredStrategy` then get two replicas on a CPU-only machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from kexp.strategy import configure_cpu_devices  # noqa: E402

configure_cpu_devices(2)

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """Runs `python -m kexp ARGS` in a subprocess and returns the CompletedProcess."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "kexp", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


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


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    """An empty folder for run folders."""
    path = tmp_path / "logs"
    path.mkdir()
    return path
