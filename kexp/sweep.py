"""Internal: `kexp sweep`: trains an experiment at every point of a grid of settings.

    kexp sweep xor --grid model.hidden=2,8 --grid train.learning_rate=0.01,0.05 --jobs 2

Every point is a normal `kexp run` in its own process (TensorFlow's global
state, seeds and devices stay per run), so it leaves a normal run folder
`LOGDIR/NAME/RUN_ID` that TensorBoard's HParams tab lines up with the others.
The sweep's own folder `LOGDIR/NAME/sweep-ID/` holds `sweep.json` (rewritten
atomically after each point), `sweep.png` (each metric against each swept
key) and each point's output in `points/`.

Every point's config is resolved before anything runs: a bad key or value
fails with one line and nothing run. A point that fails or diverges is
reported and the others go on. Ctrl-C (or SIGTERM) stops the running points
cleanly; `kexp sweep --resume SWEEP_DIR` then runs only the points still
missing, continuing interrupted point runs in their own folders. No
TensorFlow is imported here.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from kexp import rundir, runs
from kexp.config import _shown
from kexp.errors import UsageError

MAX_POINTS = 1000
DONE = ("ok", "diverged", "failed")  # statuses a resumed sweep does not run again
_EXIT_WAIT_S = 600  # how long a stopped sweep waits for its points to save their state


def parse_grid(name: str, grid: Sequence[str], overrides: Sequence[str]) -> dict[str, list[str]]:
    """Returns `{key: [value, ...]}` from `--grid key=v1,v2` strings, every point's config checked.

    Values are separated by `,`, or by `;` when the string holds one (for
    keys whose values are lists themselves: `--grid data.x_range=0,1;0,2`).

    Raises:
        UsageError: A malformed item, a repeated key or value, a key also
            given with `--set`, too many points, or a point whose config
            `kexp run` would refuse (the message is that refusal's).
    """
    from kexp.runner import resolve

    if not grid:
        raise UsageError("sweep: no --grid given; allowed: one or more --grid section.key=v1,v2")
    parsed: dict[str, list[str]] = {}
    set_keys = {item.split("=", 1)[0].strip() for item in overrides}
    for item in grid:
        if "=" not in item:
            raise UsageError(f"--grid {_shown(item)}: expected section.key=v1,v2, e.g. --grid train.epochs=5,10")
        key, raw = (part.strip() for part in item.split("=", 1))
        if key in parsed:
            raise UsageError(f"--grid {_shown(item)}: {key} is already swept; allowed: each key in one --grid")
        if key in set_keys:
            raise UsageError(f"--grid {_shown(item)}: {key} is also given with --set; allowed: one of the two")
        values = [v.strip() for v in raw.split(";" if ";" in raw else ",")]
        if not raw.strip() or any(not v for v in values):
            raise UsageError(f"--grid {_shown(item)}: an empty value; allowed: values separated by ',' "
                             "(or ';' when each value is a list)")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise UsageError(f"--grid {_shown(item)}: value {_shown(repeated[0])} repeated; allowed: distinct values")
        # Checked alone first, so that the error names the bad value rather than a whole point.
        for value in values:
            resolve(name, [*overrides, f"{key}={value}"])
        parsed[key] = values
    count = 1
    for values in parsed.values():
        count *= len(values)
    if count > MAX_POINTS:
        raise UsageError(f"sweep: the grid has {count} points; allowed: at most {MAX_POINTS}")
    for point in points(parsed):
        resolve(name, [*overrides, *_settings(point)])
    return parsed


def points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Returns the grid's points, `{key: value}` each, the last key varying fastest."""
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def new_sweep(name: str, grid: dict[str, list[str]], overrides: Sequence[str], logdir: str | Path,
              strategy: str) -> tuple[Path, dict[str, Any]]:
    """Creates the sweep folder and its first `sweep.json`; returns both."""
    sweep_dir = rundir.create_run_dir(logdir, name, prefix="sweep-")
    sweep = {
        "experiment": name, "sweep_id": sweep_dir.name, "status": "running", "grid": grid,
        "overrides": list(overrides), "strategy": strategy, "logdir": str(Path(logdir).absolute()),
        "points": [{"index": i, "settings": point, "status": "pending", "run_dir": None, "exit_code": None,
                    "error": "", "metrics": {}, "meets_bar": None, "wall_time_s": None}
                   for i, point in enumerate(points(grid))],
    }
    try:
        rundir.write_json(sweep_dir / "sweep.json", sweep)
    except BaseException:
        rundir.remove_run_dir(sweep_dir)
        raise
    return sweep_dir, sweep


def load_sweep(sweep_dir: str | Path, name: str | None) -> dict[str, Any]:
    """Reads a sweep folder's `sweep.json` for `--resume`.

    Raises:
        UsageError: A folder that is not a sweep (of `name`, when given).
    """
    folder = Path(sweep_dir)
    prefix = f"sweep --resume {_shown(str(sweep_dir), 200)}"
    try:
        sweep = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
        ok = isinstance(sweep, dict) and isinstance(sweep.get("grid"), dict) and isinstance(
            sweep.get("points"), list) and isinstance(sweep.get("experiment"), str)
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise UsageError(f"{prefix}: no readable sweep.json; allowed: a folder kexp sweep made (LOGDIR/NAME/sweep-ID)")
    if name is not None and name != sweep["experiment"]:
        raise UsageError(f"{prefix}: a sweep of {sweep['experiment']!r}, not of {name!r}; "
                         f"allowed: kexp sweep {sweep['experiment']} --resume ...")
    return sweep


def run_points(sweep_dir: Path, sweep: dict[str, Any], jobs: int, say: Callable[[str], None] = print) -> bool:
    """Runs the sweep's missing points, `jobs` at a time; returns False when a stop request cut it short.

    `sweep.json` is rewritten after every point. A SIGINT or SIGTERM sends
    one SIGINT to each running point (which then saves its state and stops)
    and waits for them; a second one stops them at once.
    """
    name = sweep["experiment"]
    todo = [p for p in sweep["points"] if p["status"] not in DONE]
    for point in todo:
        _refresh(point)  # a point that finished after the last sweep.json write
    todo = [p for p in todo if p["status"] not in DONE]
    total = len(sweep["points"])
    (sweep_dir / "points").mkdir(exist_ok=True)
    running: dict[int, tuple[subprocess.Popen, Any]] = {}
    # Signals only count here; the loop acts on them between its steps, so
    # that no bookkeeping (a started process, a sweep.json write) is cut in half.
    requests: list[int] = []
    handled = 0
    previous = {signum: signal.signal(signum, lambda signum, frame: requests.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        while todo or running:
            if len(requests) > handled:
                if handled == 0:
                    say(f"kexp: stopping the sweep: {len(running)} running point(s) save their state and stop "
                        "(again: stop them at once)")
                    todo = []
                # The first request lets each point save its state; a second one stops them at once.
                for process, _ in running.values():
                    process.send_signal(signal.SIGINT)
                handled = len(requests)
            while todo and len(running) < jobs:
                point = todo.pop(0)
                running[point["index"]] = _start(name, sweep, point, sweep_dir)
                point["status"] = "running"
                say(f"[{point['index'] + 1}/{total}] {_label(point)}: started")
            for index, (process, log) in list(running.items()):
                if process.poll() is not None:
                    log.close()
                    del running[index]
                    point = sweep["points"][index]
                    _finish(point, process.returncode, sweep_dir)
                    rundir.write_json(sweep_dir / "sweep.json", sweep)
                    say(f"[{index + 1}/{total}] {_label(point)}: {_outcome(point)}")
            time.sleep(0.1)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for process, log in running.values():
            process.kill()  # only after an error in the loop itself
            process.wait()
            log.close()
    missing = any(p["status"] not in DONE for p in sweep["points"])
    # incomplete: a point was killed from outside, say; --resume runs it again.
    sweep["status"] = ("interrupted" if requests else "incomplete") if missing else "complete"
    rundir.write_json(sweep_dir / "sweep.json", sweep)
    return not (requests and missing)


def summarize(sweep_dir: Path, sweep: dict[str, Any]) -> list[str]:
    """Writes `sweep.png` (when any point has metrics) and returns the table of points."""
    keys = list(sweep["grid"])
    metrics = list(dict.fromkeys(k for p in sweep["points"] for k in p["metrics"]))
    if metrics:
        from kexp import plots

        plots.save(plots.grid_sweep_figure(sweep, keys, metrics), sweep_dir / "sweep.png")
    header = ["#", *keys, "status", *metrics, "bar", "wall_s"]
    rows = [header]
    for p in sweep["points"]:
        bar = {True: "met", False: "missed", None: "-"}[p["meets_bar"]]
        rows.append([str(p["index"] + 1), *(p["settings"][k] for k in keys), p["status"],
                     *(runs.format_number(p["metrics"].get(m)) for m in metrics), bar,
                     runs.format_number(p["wall_time_s"], ".1f")])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)).rstrip() for row in rows]
    failed = [p for p in sweep["points"] if p["error"]]
    lines += [f"#{p['index'] + 1}: {p['error']}" for p in failed]
    return lines


def _settings(point: dict[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in point.items()]


def _label(point: dict[str, Any]) -> str:
    return " ".join(_settings(point["settings"]))


def _start(name: str, sweep: dict[str, Any], point: dict[str, Any], sweep_dir: Path) -> tuple[subprocess.Popen, Any]:
    """Starts a point's `kexp run` (or `--resume` of its interrupted run folder) with its output to a log file."""
    command = [sys.executable, "-m", "kexp", "run", name, "--strategy", sweep["strategy"],
               "--logdir", sweep["logdir"]]
    if point["run_dir"] and point["status"] in ("interrupted", "crashed"):
        command += ["--resume", point["run_dir"]]
    else:
        point["run_dir"] = None
        for item in [*sweep["overrides"], *_settings(point["settings"])]:
            command += ["--set", item]
    log = open(sweep_dir / "points" / f"point-{point['index'] + 1:03d}.log", "ab")
    log.write((" ".join(command) + "\n").encode())
    log.flush()
    # Its own process group: a Ctrl-C at the terminal reaches the sweep alone,
    # which passes exactly one SIGINT on (a second one would stop the point at once).
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return process, log


def _finish(point: dict[str, Any], code: int, sweep_dir: Path) -> None:
    """Fills a point in from its exit code, its output and its run folder's `results.json`."""
    point["exit_code"] = code
    log = sweep_dir / "points" / f"point-{point['index'] + 1:03d}.log"
    lines = log.read_bytes().decode("utf-8", "replace").splitlines()
    found = [line.split(":", 1)[1].strip() for line in lines
             if line.startswith("run_dir: ") and not line.startswith("run_dir: none")]
    if found:
        point["run_dir"] = found[-1]
    errors = [line for line in lines if line.startswith("kexp: error: ")]
    point["error"] = errors[-1][len("kexp: error: "):] if errors else ""
    _refresh(point)
    if point["status"] in ("pending", "running"):
        # No results.json: refused (exit 2), or killed before it could write one.
        point["status"] = "failed" if code in (1, 2) else "interrupted" if code in (130, 143) else "crashed"
        if not point["error"]:
            point["error"] = f"exit code {code} and no results.json; output in points/"


def _refresh(point: dict[str, Any]) -> None:
    """Reads the point's run folder, when it has one, into the point."""
    if not point["run_dir"] or not Path(point["run_dir"]).is_dir():
        return
    entry = runs.describe(Path(point["run_dir"]))
    if entry["status"] in ("ok", "diverged", "failed", "interrupted", "crashed"):
        point["status"] = entry["status"]
    point["metrics"] = entry["metrics"]
    point["wall_time_s"] = entry["wall_time_s"]
    from kexp import quality, registry

    try:
        bars = getattr(registry.load(Path(point["run_dir"]).parent.name), "EXPECTED", {}) or {}
    except Exception:
        bars = {}
    point["meets_bar"] = (not quality.failures(bars, point["metrics"])) if bars and point["metrics"] else None


def _outcome(point: dict[str, Any]) -> str:
    metrics = " ".join(f"{k}={runs.format_number(v)}" for k, v in point["metrics"].items())
    return f"{point['status']} {metrics}".strip() + (f" ({point['error']})" if point["error"] else "")
