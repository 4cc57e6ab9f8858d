"""Internal: `kexp sweep`: trains an experiment at every point of a grid of settings.

    kexp sweep xor --grid model.hidden=2,8 --grid train.learning_rate=0.01,0.05 --jobs 2

Every point is a normal `kexp run` in its own process (TensorFlow's global
state, seeds and devices stay per run), so it leaves a normal run folder
`LOGDIR/NAME/RUN_ID` that TensorBoard's HParams tab lines up with the others.
The sweep's own folder `LOGDIR/NAME/sweep-ID/` holds `sweep.json` (rewritten
atomically after each point), `sweep.png` (each metric against each swept
key), and each point's output and run-folder record in `points/`.

Every point's config is resolved before anything runs: a bad key or value
fails with one line and nothing run. A point that fails or diverges is
reported and the others go on. Ctrl-C (or SIGTERM) stops the running points
cleanly; `kexp sweep --resume SWEEP_DIR` then runs only the points still
missing, continuing interrupted point runs in their own folders. No
TensorFlow is imported here.
"""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from kexp.store import rundir, runs
from kexp.store.record import RECORDED, RunStatus
from kexp.config_values import shown
from kexp.errors import UsageError
from kexp.cli.sweep_points import Attempt, declared_bars, finish, folder_problem, recorded_run_dir, refresh, start
from kexp.cli.sweep_points import settings as _settings

MAX_POINTS = 1000
# A point with one of these has its result; a resumed sweep runs every other point again.
DONE = (RunStatus.OK, RunStatus.DIVERGED)
STATUSES = (RunStatus.PENDING, RunStatus.RUNNING, *RECORDED, RunStatus.CRASHED)


def parse_grid(name: str, grid: Sequence[str], overrides: Sequence[str]) -> dict[str, list[str]]:
    """Returns `{key: [value, ...]}` from `--grid key=v1,v2` strings, every point's config checked.

    Values are separated by `,`, or by `;` when the string holds one (for
    keys whose values are lists themselves: `--grid data.train_range=0,100;0,50`).

    Raises:
        UsageError: A malformed item, a repeated key, two values that mean
            the same (`2` and `02`), a key also given with `--set`, too many
            points, or a point whose config `kexp run` would refuse (the
            message is that refusal's).
    """
    from kexp.runner import resolve

    if not grid:
        raise UsageError("sweep: no --grid given; allowed: one or more --grid section.key=v1,v2")
    parsed: dict[str, list[str]] = {}
    set_keys = {item.split("=", 1)[0].strip() for item in overrides}
    resolve(name, overrides)  # a bad --set is named as such; any later `--set` message is a grid item's
    for item in grid:
        if "=" not in item:
            raise UsageError(f"--grid {shown(item)}: expected section.key=v1,v2, e.g. --grid train.epochs=5,10")
        key, raw = (part.strip() for part in item.split("=", 1))
        if key in parsed:
            raise UsageError(f"--grid {shown(item)}: {key} is already swept; allowed: each key in one --grid")
        if key in set_keys:
            raise UsageError(f"--grid {shown(item)}: {key} is also given with --set; allowed: one of the two")
        values = [v.strip() for v in raw.split(";" if ";" in raw else ",")]
        if not raw.strip() or any(not v for v in values):
            raise UsageError(f"--grid {shown(item)}: an empty value; allowed: values separated by ',' "
                             "(or ';' when each value is a list)")
        seen: dict[Any, str] = {}
        for value in values:
            # Checked alone first, so that the error names the bad value rather than a whole point.
            try:
                config = resolve(name, [*overrides, f"{key}={value}"])
            except UsageError as err:
                if not str(err).startswith("--set "):
                    raise
                raise UsageError(f"--grid {shown(item)}: {str(err).split(': ', 1)[1]}") from None
            parsed_value = _value_of(config, key)
            if parsed_value in seen:
                raise UsageError(f"--grid {shown(item)}: {shown(value)} is the same value as "
                                 f"{shown(seen[parsed_value])}; allowed: distinct values")
            seen[parsed_value] = value
        parsed[key] = values
    count = 1
    for values in parsed.values():
        count *= len(values)
    if count > MAX_POINTS:
        raise UsageError(f"sweep: the grid has {count} points; allowed: at most {MAX_POINTS}")
    for point in points(parsed):
        resolve(name, [*overrides, *_settings(point)])
    return parsed


def with_seeds(grid: Sequence[str], overrides: Sequence[str], seeds: int | None) -> list[str]:
    """Returns the `--grid` items with `train.seed=0,...,N-1` added last for `--seeds N`.

    Raises:
        UsageError: `--seeds` with train.seed also swept or set.
    """
    if not seeds:
        return list(grid)
    given = [item.split("=", 1)[0].strip() for item in [*grid, *overrides]]
    if "train.seed" in given:
        raise UsageError("sweep: --seeds sweeps train.seed itself; allowed: --seeds or a train.seed setting")
    return [*grid, "train.seed=" + ",".join(str(seed) for seed in range(seeds))]


def _value_of(config: Any, key: str) -> Any:
    section, field = key.split(".", 1)
    return getattr(getattr(config, section), field)


def points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Returns the grid's points, `{key: value}` each, the last key varying fastest."""
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def new_sweep(name: str, grid: dict[str, list[str]], overrides: Sequence[str], logdir: str | Path,
              strategy: str, seeds: int = 0) -> tuple[Path, dict[str, Any]]:
    """Creates the sweep folder and its first `sweep.json`; returns both (`seeds`: `--seeds`, 0 without)."""
    sweep_dir = rundir.create_run_dir(logdir, name, prefix="sweep-")
    sweep = {
        "experiment": name, "sweep_id": sweep_dir.name, "status": "running", "grid": grid,
        "overrides": list(overrides), "strategy": strategy, "logdir": str(Path(logdir).absolute()), "seeds": seeds,
        "points": [{"index": i, "settings": point, "status": RunStatus.PENDING, "run_dir": None, "exit_code": None,
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
    """Reads a sweep folder's `sweep.json` for `--resume` and checks every point can run.

    A point's run folder counts only while its `config.json` is the point's
    settings (`kexp.cli.sweep_points.folder_problem`): a finished point whose
    folder is not its run is run again, and another point's folder is never
    continued.

    Raises:
        UsageError: A folder that is not a sweep (of `name`, when given), a
            `sweep.json` that is not one kexp wrote (edited by hand, torn,
            not a regular file), a point whose config `kexp run` would refuse
            now, or a point's run folder that a process still trains in.
    """
    from kexp.runner import resolve

    folder = Path(sweep_dir)
    prefix = f"sweep --resume {shown(str(sweep_dir), 200)}"
    allowed = "allowed: a folder kexp sweep made (LOGDIR/NAME/sweep-ID)"
    sweep = _read_sweep_json(folder, prefix, allowed)
    if name is not None and name != sweep["experiment"]:
        raise UsageError(f"{prefix}: a sweep of {sweep['experiment']!r}, not of {name!r}; "
                         f"allowed: kexp sweep {sweep['experiment']} --resume ...")
    for point in sweep["points"]:
        if point["status"] == RunStatus.RUNNING:
            # The sweep was killed while this point ran: its record names the folder it had.
            point["run_dir"] = recorded_run_dir(folder, point) or point["run_dir"]
        if point["status"] not in DONE:
            resolve(sweep["experiment"], [*sweep["overrides"], *_settings(point["settings"])])
        if point["run_dir"] and Path(point["run_dir"]).is_dir() and folder_problem(sweep, point, point["run_dir"]):
            # Not this point's run: its result does not count, and it is not continued.
            point.update(status=RunStatus.PENDING, run_dir=None, metrics={}, meets_bar=None, wall_time_s=None, error="")
        if point["status"] in DONE:
            continue
        if point["run_dir"] and Path(point["run_dir"]).is_dir() and rundir.in_use(Path(point["run_dir"])):
            raise UsageError(f"{prefix}: point {point['index'] + 1}'s run folder {point['run_dir']} is in use by "
                             "another process (a point of a killed sweep still stopping?); allowed: a sweep none of "
                             "whose runs is training: try again once it has stopped")
    return sweep


def _read_sweep_json(folder: Path, prefix: str, allowed: str) -> dict[str, Any]:
    """Returns a sweep folder's `sweep.json` once its shape is what kexp sweep writes."""
    from kexp.engine.strategy import STRATEGIES

    try:
        sweep = rundir.read_json(folder / "sweep.json", missing=None)
    except rundir.CorruptFile as err:
        raise UsageError(f"{prefix}: sweep.json is not readable JSON ({err.reason}); {allowed}") from None
    if sweep is None:
        raise UsageError(f"{prefix}: no readable sweep.json; {allowed}")
    problem = _shape_problem(sweep, STRATEGIES)
    if problem:
        raise UsageError(f"{prefix}: sweep.json is not as kexp sweep wrote it ({problem}); {allowed}")
    return sweep


def _shape_problem(sweep: Any, strategies: Sequence[str]) -> str:
    """Returns what is wrong with a loaded `sweep.json`'s shape, or ""."""
    if not isinstance(sweep, dict):
        return "not a JSON object"
    grid, points_ = sweep.get("grid"), sweep.get("points")
    checks = [
        (isinstance(sweep.get("experiment"), str), "experiment"),
        (isinstance(grid, dict) and grid and all(
            isinstance(v, list) and v and all(isinstance(x, str) for x in v) for v in grid.values()), "grid"),
        (isinstance(sweep.get("overrides"), list) and all(isinstance(x, str) for x in sweep["overrides"]),
         "overrides"),
        (sweep.get("strategy") in strategies, "strategy"),
        (isinstance(sweep.get("logdir"), str), "logdir"),
        (isinstance(points_, list), "points"),
    ]
    for ok, key in checks:
        if not ok:
            return f"its {key} is missing or malformed"
    if len(points_) != len(points(grid)):
        return f"{len(points_)} points for a grid of {len(points(grid))}"
    for index, (point, expected) in enumerate(zip(points_, points(grid))):
        ok = (isinstance(point, dict) and point.get("index") == index and point.get("settings") == expected
              and point.get("status") in STATUSES)
        if not ok:
            return f"point {index + 1} does not match its grid"
        problem = _point_values_problem(point)
        if problem:
            return f"point {index + 1}'s {problem}"
    return ""


def _point_values_problem(point: dict[str, Any]) -> str:
    """Returns which of a point's recorded values is not of the type kexp sweep writes, or ""."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    metrics = point.get("metrics")
    exit_code = point.get("exit_code")
    checks = [
        (point.get("run_dir") is None or isinstance(point.get("run_dir"), str), "run_dir"),
        (exit_code is None or (isinstance(exit_code, int) and not isinstance(exit_code, bool)), "exit_code"),
        (isinstance(point.get("error"), str), "error"),
        (isinstance(metrics, dict) and all(v is None or number(v) for v in metrics.values()), "metrics"),
        # A type check: `1 in (True, False, None)` holds.
        (point.get("meets_bar") is None or isinstance(point.get("meets_bar"), bool), "meets_bar"),
        (point.get("wall_time_s") is None or number(point.get("wall_time_s")), "wall_time_s"),
    ]
    for ok, key in checks:
        if not ok:
            return f"{key} is {shown(point.get(key))}"
    return ""


def run_points(sweep_dir: Path, sweep: dict[str, Any], jobs: int, requests: list[int],
               say: Callable[[str], None] = print) -> bool:
    """Runs the sweep's missing points, `jobs` at a time; returns False when a stop request cut it short.

    `sweep.json` is rewritten after every point starts and ends. The
    caller's signal handlers append to `requests`: the first request sends
    one SIGINT to each running point (which then saves its state and stops)
    and starts no more; a second one stops them at once. Points die with
    the sweep (SIGTERM, on Linux) if it is killed.
    """
    todo = [p for p in sweep["points"] if p["status"] not in DONE]
    for point in todo:
        refresh(sweep, point)  # a point that finished after the last sweep.json write
    todo = [p for p in todo if p["status"] not in DONE]
    total = len(sweep["points"])
    (sweep_dir / "points").mkdir(exist_ok=True)
    running: dict[int, Attempt] = {}
    handled = 0
    try:
        while todo or running:
            if len(requests) > handled:
                if handled == 0:
                    say(f"kexp: stopping the sweep: {len(running)} running point(s) save their state and stop "
                        "(again: stop them at once)")
                    todo = []
                # The first request lets each point save its state; a second one stops them at once.
                for attempt in running.values():
                    attempt.process.send_signal(signal.SIGINT)
                handled = len(requests)
            while todo and len(running) < jobs:
                point = todo.pop(0)
                running[point["index"]] = start(sweep, point, sweep_dir)
                rundir.write_json(sweep_dir / "sweep.json", sweep)
                say(f"[{point['index'] + 1}/{total}] {_label(point)}: started")
            for index, attempt in list(running.items()):
                if attempt.process.poll() is not None:
                    del running[index]
                    point = sweep["points"][index]
                    finish(sweep, point, attempt, sweep_dir)
                    rundir.write_json(sweep_dir / "sweep.json", sweep)
                    say(f"[{index + 1}/{total}] {_label(point)}: {_outcome(point)}")
            time.sleep(0.1)
    finally:
        for attempt in running.values():  # only after an error in the loop itself
            attempt.process.kill()
            attempt.process.wait()
            attempt.log.close()
    missing = any(p["status"] not in DONE for p in sweep["points"])
    # incomplete: a point failed or was killed from outside; --resume runs it again.
    sweep["status"] = ("interrupted" if requests else "incomplete") if missing else "complete"
    rundir.write_json(sweep_dir / "sweep.json", sweep)
    return not (requests and missing)


def summarize(sweep_dir: Path, sweep: dict[str, Any]) -> list[str]:
    """Writes `sweep.png` (when any point has metrics) and returns the table of points."""
    keys = list(sweep["grid"])
    metrics = list(dict.fromkeys(k for p in sweep["points"] for k in p["metrics"]))
    if metrics:
        from kexp.study import plots
        from kexp.cli import sweep_plots

        figure = sweep_plots.grid_sweep_figure(sweep, keys, metrics, declared_bars(sweep["experiment"]))
        plots.save(figure, sweep_dir / "sweep.png")
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
    if sweep.get("seeds"):
        lines += ["", *_seeds_table(sweep_dir, sweep, [k for k in keys if k != "train.seed"], metrics)]
    return lines


def _seeds_table(sweep_dir: Path, sweep: dict[str, Any], keys: list[str], metrics: list[str]) -> list[str]:
    """Returns each setting's metrics over its seeds' ok points as `mean ± std` (sample standard deviation).

    The same figures go into `sweep.json` as `seed_summary`.
    """
    from kexp.study.compare import mean_spread

    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for point in sweep["points"]:
        groups.setdefault(tuple(point["settings"][k] for k in keys), []).append(point)
    rows = [[*keys, "seeds ok", *(f"{m} (mean ± std)" for m in metrics)]]
    summary = []
    for setting, group in groups.items():
        ok = [p for p in group if p["status"] == RunStatus.OK]
        figures: dict[str, Any] = {}
        for metric in metrics:
            values = [p["metrics"][metric] for p in ok if p["metrics"].get(metric) is not None]
            figures[metric] = dict(zip(("mean", "std"), mean_spread(values))) if values else None
        summary.append({"settings": dict(zip(keys, setting)), "seeds_ok": len(ok), "seeds": len(group),
                        "metrics": figures})
        rows.append([*setting, f"{len(ok)}/{len(group)}", *(
            "-" if figures[m] is None else f"{runs.format_number(figures[m]['mean'])} ± "
            f"{runs.format_number(figures[m]['std'])}" for m in metrics)])
    sweep["seed_summary"] = summary
    rundir.write_json(sweep_dir / "sweep.json", sweep)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)).rstrip() for row in rows]


def _label(point: dict[str, Any]) -> str:
    return " ".join(_settings(point["settings"]))


def _outcome(point: dict[str, Any]) -> str:
    metrics = " ".join(f"{k}={runs.format_number(v)}" for k, v in point["metrics"].items())
    return f"{point['status']} {metrics}".strip() + (f" ({point['error']})" if point["error"] else "")
