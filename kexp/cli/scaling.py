"""Internal: the scaling report of `kexp bench --sweep`: throughput against batch size, width, replicas; rollout time.

Written into a run folder as `sweep.json` and `sweep.png`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np

# 25,600 = 1024 x 25: every swept batch size (32 to 1024) tiles it with full
# batches, so every row runs with fused steps (a partial batch turns them off).
SWEEP_EXAMPLES = 25_600


def run_sweep(logdir: str, *, examples: int = SWEEP_EXAMPLES) -> tuple[Any, dict[str, Any]]:
    """Measures how throughput scales, and writes `sweep.json` and `sweep.png` to a run folder.

    Harness throughput of tutorial 000's FNN against batch size, hidden width and
    number of replicas (1, and 2 logical CPU devices under MirroredStrategy,
    each in its own process), and the time of lstm_sine's autoregressive
    rollout against its horizon.

    Args:
        logdir: Root of run folders; results go to `logdir/bench_sweep/RUN_ID`.
        examples: Training examples per FNN measurement.

    Returns:
        The run folder and the sweep results.
    """
    import json
    import os
    import subprocess
    import sys

    from kexp.study import plots
    from kexp.store import rundir
    from kexp.cli import sweep_plots
    from kexp.cli.bench import run_bench
    from kexp.errors import RunError

    run_dir = rundir.create_run_dir(logdir, "bench_sweep")
    common = {"repeats": 1, "epochs": 3, "examples": examples, "compare": False, "limit": False}
    sweep: dict[str, Any] = {"examples": examples, "epochs": 3, "first_epoch_excluded": True}
    sweep["batch_size"] = [
        {"batch_size": b, **_pick(run_bench("fnn", batch_size=b, **common))} for b in (32, 100, 256, 1024)]
    sweep["width"] = [{"width": w, **_pick(run_bench("fnn", width=w, **common))} for w in (128, 500, 2000)]
    sweep["replicas"] = []
    for replicas in (1, 2):
        env = {**os.environ, "KEXP_CPU_DEVICES": str(replicas), "TF_CPP_MIN_LOG_LEVEL": "2"}
        args = [sys.executable, "-m", "kexp", "bench", "fnn", "--json", "--repeats", "1", "--epochs", "3",
                "--examples", str(examples), "--no-compare", "--no-limit",
                "--strategy", "mirrored" if replicas > 1 else "default"]
        point = subprocess.run(args, env=env, capture_output=True, text=True)
        if point.returncode != 0:
            last = (point.stderr.strip().splitlines() or ["no message"])[-1]
            rundir.remove_run_dir(run_dir)  # nothing of a sweep that could not finish stays behind
            raise RunError(f"bench --sweep: the {replicas}-replica point exited {point.returncode}: {last}")
        sweep["replicas"].append({"replicas": replicas, **_pick(json.loads(point.stdout))})
    sweep["rollout"] = rollout_timing()
    rundir.write_json(run_dir / "sweep.json", sweep)
    plots.save(sweep_plots.sweep_figure(sweep), run_dir / "sweep.png")
    return run_dir, sweep


def _pick(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("harness_examples_per_s", "harness_steps_per_s", "harness_steps_per_execution", "harness_jit_compile",
            "harness_fused_steps", "harness_num_replicas", "harness_global_batch_size", "peak_rss_mb")
    return {k: result[k] for k in keys}


@dataclasses.dataclass(frozen=True)
class RolloutCase:
    """The sequence model a rollout is timed with: lstm_sine's defaults, stated here.

    Attributes:
        feature_length: Samples per step (each call predicts half of them anew).
        interval: x spacing of the samples.
        seq_length: Steps of context per call.
        units: LSTM units.
    """

    feature_length: int = 32
    interval: float = 0.1
    seq_length: int = 20
    units: int = 64


def rollout_timing(horizons_pi: tuple[int, ...] = (2, 4, 8, 16, 32),
                   case: RolloutCase = RolloutCase()) -> list[dict[str, float]]:
    """Times an autoregressive rollout (`kexp.study.forecast.rollout`) of sin(x) for horizons of k*pi.

    The weights are untrained: the time of a rollout does not depend on them.

    Args:
        horizons_pi: The horizons, in multiples of pi.
        case: The model and windowing.

    Returns:
        One row per horizon: `horizon_pi`, `points`, `model_calls`, `seconds`.
    """
    from kexp.study.forecast import rollout
    from kexp.models import rnn

    model = rnn((None, case.feature_length), case.feature_length, units=(case.units,))
    history = np.sin(np.arange(2_000) * case.interval).astype("float32")
    rollout(model, history, case.feature_length, case.feature_length, case.seq_length)  # warm-up: tracing
    rows = []
    for k in horizons_pi:
        points = math.ceil(k * math.pi / case.interval)
        start = time.perf_counter()
        rollout(model, history, points, case.feature_length, case.seq_length)
        rows.append({"horizon_pi": k, "points": points,
                     "model_calls": math.ceil(points / (case.feature_length // 2)),
                     "seconds": time.perf_counter() - start})
    return rows


def format_sweep(sweep: dict[str, Any], run_dir: Any) -> list[str]:
    """Returns the sweep as the lines `kexp bench --sweep` prints."""
    lines = []
    for key in ("batch_size", "width", "replicas"):
        for row in sweep[key]:
            lines.append(f"{key}={row[key]}: {row['harness_examples_per_s']:.0f} examples/s "
                         f"(steps_per_execution={row['harness_steps_per_execution']}, "
                         f"jit_compile={row['harness_jit_compile']}, fused_steps={row['harness_fused_steps']})")
    for row in sweep["rollout"]:
        lines.append(f"rollout {row['horizon_pi']}*pi: {row['points']} points, {row['model_calls']} model calls, "
                     f"{row['seconds']:.3f} s")
    lines.append(f"run_dir: {run_dir}")
    return lines
