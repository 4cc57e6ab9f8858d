"""Internal: the end of a `kexp search`: the table of the study's trials, its best one, and its figure.

The table lists every trial of the study, those other processes or
machines ran included. `search.png` plots the objective by trial and
against each searched setting; the same image goes into TensorBoard as the
search folder's run (`search/objective`), written with TensorBoard's own
event writer, so no TensorFlow is imported here.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

from kexp.errors import WriteError
from kexp.store.runs import format_number


# Optuna's trial states in the words kexp uses for runs (`search.json`, `kexp runs`).
STATE_WORDS = {"COMPLETE": "ok", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def table(search: dict[str, Any], study: Any) -> list[str]:
    """Returns the study's trials as aligned lines: number, settings, state, objective (± std), run folder."""
    keys = [d["key"] for d in search["space"]]
    metric = search["metric"] + (" (mean ± std)" if search["seeds"] else "")
    rows = [["trial", *keys, "state", metric, "run"]]
    for trial in study.get_trials(deepcopy=False):
        value = "-" if trial.value is None or trial.state.name != "COMPLETE" else format_number(trial.value)
        if value != "-" and "std" in trial.user_attrs:
            value += f" ± {format_number(trial.user_attrs['std'])}"
        run_dirs = trial.user_attrs.get("run_dirs") or []
        where = Path(run_dirs[0]).name + (f" (+{len(run_dirs) - 1})" if len(run_dirs) > 1 else "") if run_dirs \
            else "-"
        rows.append([str(trial.number), *(_shown(trial.params.get(k)) for k in keys), STATE_WORDS[trial.state.name],
                     value, where])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)).rstrip() for row in rows]


def best_lines(search: dict[str, Any], study: Any) -> list[str]:
    """Returns the best trial's lines: its number, settings as `--set` text, objective, and run folder."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        return ["best: none (no trial completed)"]
    best = study.best_trial
    # Exact values, as `kexp run --set` takes them (the table rounds them for reading).
    settings = " ".join([*(f"--set {item}" for item in search["overrides"]),
                         *(f"--set {k}={repr(v) if isinstance(v, float) else v}" for k, v in best.params.items())])
    if search["seeds"]:
        settings += f" (at train.seed 0..{search['seeds'] - 1}: the objective is their mean)"
    lines = [f"best: trial {best.number}, {search['metric']}={format_number(best.value)} ({search['direction']})",
             f"best settings: {settings}"]
    run_dirs = best.user_attrs.get("run_dirs") or []
    if run_dirs:
        from kexp.store import runs

        metrics = runs.describe(Path(run_dirs[0]))["metrics"] if Path(run_dirs[0]).is_dir() else {}
        if metrics:  # (a run another machine trained is not here to read)
            lines.append("best figures: " + " ".join(f"{k}={format_number(v)}" for k, v in metrics.items()))
        lines.append(f"best run: {run_dirs[0]}")
    return lines


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return format_number(value)
    return "-" if value is None else str(value)


def figure(search: dict[str, Any], study: Any) -> Any:
    """Returns the figure: the objective by trial (best so far drawn), then against each searched setting."""
    from kexp.cli.sweep_plots import plt

    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"
              and t.value is not None and math.isfinite(t.value)]
    pruned = [t for t in study.get_trials(deepcopy=False) if t.state.name == "PRUNED"]
    space = search["space"]
    fig, axes = plt.subplots(1, 1 + len(space), figsize=(4.2 * (1 + len(space)), 3.6), squeeze=False)
    axes = axes[0]
    numbers, values = [t.number for t in trials], [t.value for t in trials]
    axes[0].plot(numbers, values, "o", label="completed")
    if values:
        pick = min if search["direction"] == "minimize" else max
        best = [pick(values[: i + 1]) for i in range(len(values))]
        axes[0].step(numbers, best, where="post", label="best so far")
    if pruned:
        # They have no final objective: marked along the edge of the worse values, at their trial numbers.
        edge = 0.97 if search["direction"] == "minimize" else 0.03
        axes[0].plot([t.number for t in pruned], [edge] * len(pruned), "x", color="gray",
                     label="pruned (no final value)", transform=axes[0].get_xaxis_transform())
    axes[0].xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    log_y = bool(values) and min(values) > 0 and max(values) / min(values) > 10
    axes[0].set_xlabel("trial")
    axes[0].set_ylabel(search["metric"])
    axes[0].legend(fontsize=8)
    for ax, dimension in zip(axes[1:], space):
        key = dimension["key"]
        xs = [t.params.get(key) for t in trials]
        if dimension["kind"] == "choice":
            positions = {c: i for i, c in enumerate(dimension["choices"])}
            ax.plot([positions[x] for x in xs], values, "o")
            ax.set_xticks(range(len(positions)), list(positions), rotation=30, fontsize=8)
        else:
            ax.plot(xs, values, "o")
            if dimension["log"]:
                ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(search["metric"])
    for ax in axes:
        if log_y:
            ax.set_yscale("log")
    fig.suptitle(f"{search['experiment']}: {search['study']} ({len(trials)} completed, {len(pruned)} pruned)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def write_image_event(search_dir: Path, png: bytes, step: int) -> None:
    """Writes the figure into a new event file of the search folder (TensorBoard's Images tab, `search/objective`).

    TensorBoard's own `EventFileWriter` would import TensorFlow (seconds, and its start-up lines); its record
    format is written here with TensorBoard's protos and record writer instead.
    """
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    width, height = struct.unpack(">II", png[16:24])  # a PNG's IHDR chunk
    image = summary_pb2.Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="search/objective", image=image)])
    now = time.time()
    path = Path(search_dir) / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}.search"
    try:
        with open(path, "wb") as file:
            writer = RecordWriter(file)
            writer.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
            writer.write(event_pb2.Event(wall_time=now, step=step, summary=summary).SerializeToString())
    except OSError as err:
        path.unlink(missing_ok=True)
        raise WriteError(path, err) from None
