"""Helpers the tests share: the repository root, running the CLI, reading TensorBoard event files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
