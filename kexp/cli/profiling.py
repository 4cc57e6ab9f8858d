"""Internal: where a fit's time goes: one epoch traced by the TensorFlow profiler, summed by op type.

`kexp bench CASE --profile` traces one steady-state epoch of the harness's
fit (`ProfileEpoch`) and reads the trace back (`top_ops`): the time every
TensorFlow op ran, on every thread, summed by op type. On a CPU the ops of
one step run on two inter-op threads at once, so the total is CPU time, not
wall time; the shares say which kernels bound the step.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any

import keras


class ProfileEpoch(keras.callbacks.Callback):
    """Traces one epoch of a fit into `logdir` with `tf.profiler`.

    Args:
        logdir: Where the trace goes (`plugins/profile/RUN/HOST.xplane.pb` under it).
        epoch: The epoch to trace (0-based; the first holds tracing and compilation).
    """

    def __init__(self, logdir: str | Path, epoch: int = 1) -> None:
        super().__init__()
        self.logdir = str(logdir)
        self.epoch = epoch
        self._on = False

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch == self.epoch:
            import tensorflow as tf

            tf.profiler.experimental.start(self.logdir)
            self._on = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.stop()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.stop()

    def stop(self) -> None:
        """Stops the trace if it runs (an interrupted fit must not leave the profiler on)."""
        if self._on:
            import tensorflow as tf

            self._on = False
            tf.profiler.experimental.stop()


def top_ops(logdir: str | Path, count: int = 8) -> list[dict[str, Any]]:
    """Returns the op types that ran longest in the traces under `logdir`, longest first.

    Args:
        logdir: A folder holding `*.xplane.pb` traces (`ProfileEpoch`'s).
        count: How many op types to return.

    Returns:
        `[{"op": TYPE, "ms": milliseconds, "share": of all ops' time, "longest": the op
        instance of that type that ran longest}]`, longest first; empty when no
        trace is found. TYPE is a TensorFlow op type, `TYPE (eager)` for ops run
        outside a compiled function, or `NAME (XLA)` for a kernel XLA compiled.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    by_type: collections.Counter[str] = collections.Counter()
    by_name: collections.Counter[str] = collections.Counter()
    for path in sorted(Path(logdir).rglob("*.xplane.pb")):
        space = xplane_pb2.XSpace()
        space.ParseFromString(path.read_bytes())
        for plane in space.planes:
            names = {key: meta.name for key, meta in plane.event_metadata.items()}
            for line in plane.lines:
                for event in line.events:
                    kind = _op_kind(names.get(event.metadata_id, ""), line.name)
                    if kind is not None:
                        by_type[kind[0]] += event.duration_ps
                        by_name[f"{kind[0]}\n{kind[1]}"] += event.duration_ps
    total = sum(by_type.values())
    result = []
    for op_type, ps in by_type.most_common(count):
        longest = max((n for n in by_name if n.startswith(op_type + "\n")), key=by_name.__getitem__)
        result.append({"op": op_type, "ms": ps / 1e9, "share": ps / total, "longest": longest.split("\n", 1)[1]})
    return result


# XLA's compiled kernels run on the intra-op threads, named like HLO instructions: `MatMul.24`, `add_fusion.3`.
_XLA_KERNEL = re.compile(r"^[A-Za-z][\w\-]*(\.\d+|fusion)$")


def _op_kind(name: str, line: str) -> tuple[str, str] | None:
    """Returns `(op type, op name)` for a traced event that is one op's run, else None.

    Graph ops are traced as `path/of/op:OpType`, ops run eagerly (a callback's
    summary writes) as `EagerLocalExecute: OpType`, and an XLA computation's
    kernels on the intra-op threads by their HLO names. The executor's own
    events (`ExecutorState::Process`), whole `tf.function` calls, intra-op
    tasks and input-pipeline events are not ops.
    """
    if name.startswith("EagerLocalExecute: "):
        op_type = name.split(": ", 1)[1].strip()
        return None if op_type.startswith("__") else (f"{op_type} (eager)", op_type)
    if ":" in name:
        if "::" in name or ": " in name:
            return None
        path, op_type = name.rsplit(":", 1)
        return op_type, path
    if "Eigen" in line and _XLA_KERNEL.match(name):
        return f"{name.rsplit('.', 1)[0]} (XLA)", name
    return None
