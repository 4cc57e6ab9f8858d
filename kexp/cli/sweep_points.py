"""Internal: one point of a `kexp sweep`: its `kexp run` process, and which run folder counts as its result.

A point's process writes its run folder into a small JSON record the sweep
names (`points/point-NNN.json`, through `kexp.runner.RUN_RECORD_ENV`), so the
sweep never parses the point's output for it. A folder counts for a point
only when its `config.json` is the point's settings: the experiment's
defaults with the sweep's `--set` values and the point's grid values,
resolved as `kexp run` resolves them. Another folder (a record or
`sweep.json` edited to name one, a folder moved in its place) is never
adopted. No TensorFlow is imported here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from kexp.store import rundir, runs
from kexp.store.record import RECORDED, RunStatus


def settings(point: dict[str, str]) -> list[str]:
    """Returns a point's grid values as `key=value` strings."""
    return [f"{key}={value}" for key, value in point.items()]


def log_path(sweep_dir: Path, point: dict[str, Any]) -> Path:
    """Returns the file the point's output goes to."""
    return Path(sweep_dir) / "points" / f"point-{point['index'] + 1:03d}.log"


def record_path(sweep_dir: Path, point: dict[str, Any]) -> Path:
    """Returns the file the point's latest process records its run folder in."""
    return Path(sweep_dir) / "points" / f"point-{point['index'] + 1:03d}.json"


def recorded_run_dir(sweep_dir: Path, point: dict[str, Any]) -> str | None:
    """Returns the run folder the point's latest process recorded; None without a readable record."""
    return run_dir_in(record_path(sweep_dir, point))


def run_dir_in(record: Path) -> str | None:
    """Returns the run folder a `kexp run` recorded in `record` (`kexp.runner.RUN_RECORD_ENV`); None without one."""
    try:
        data = rundir.read_json(record, missing=None)
    except rundir.CorruptFile:
        return None
    run_dir = data.get("run_dir") if isinstance(data, dict) else None
    return run_dir if isinstance(run_dir, str) and run_dir else None


def unrecorded_status(code: int) -> RunStatus:
    """Returns the status of a `kexp run` that ended with exit `code` and no `results.json` of its own:
    refused (exit 2) or failed, stopped by a signal before it wrote one, or killed (crashed)."""
    if code in (130, 143, -signal.SIGINT, -signal.SIGTERM):
        return RunStatus.INTERRUPTED
    return RunStatus.FAILED if code in (0, 1, 2) else RunStatus.CRASHED


def expected_config(sweep: dict[str, Any], point: dict[str, Any]) -> Any:
    """Returns the `config.json` content a run of this point has.

    Raises:
        UsageError: When the point's settings no longer resolve (the experiment changed).
    """
    from kexp.config import to_dict
    from kexp.runner import resolve

    config = resolve(sweep["experiment"], [*sweep["overrides"], *settings(point["settings"])])
    return json.loads(json.dumps(to_dict(config)))  # as config.json holds it: tuples as lists


def folder_problem(sweep: dict[str, Any], point: dict[str, Any], run_dir: str) -> str:
    """Returns why `run_dir` is not a run of this point (so it must not count), or "" when it is one."""
    from kexp.runner import _first_difference

    folder = Path(run_dir)
    try:
        saved = rundir.read_json(folder / "config.json")
        results = rundir.read_json(folder / "results.json", missing={}, null_nonfinite=True)
    except rundir.CorruptFile as err:
        return f"{Path(err.path).name}: {err.reason}"
    experiment = results.get("experiment", sweep["experiment"]) if isinstance(results, dict) else None
    if experiment != sweep["experiment"]:
        return f"a run of {runs._cut(experiment)}, not of {sweep['experiment']!r}"
    expected = expected_config(sweep, point)
    if saved != expected:
        key, ours, theirs = _first_difference(expected, saved)
        return f"trained with {key}={runs._cut(theirs)}, not this point's {runs._cut(ours)}"
    return ""


def refresh(sweep: dict[str, Any], point: dict[str, Any]) -> None:
    """Reads the point's run folder, when it has one that is this point's run, into the point.

    A folder that is not the point's run is dropped (the point runs afresh),
    with the reason in the point's `error`.
    """
    if not point["run_dir"] or not Path(point["run_dir"]).is_dir():
        return
    problem = folder_problem(sweep, point, point["run_dir"])
    if problem:
        point["error"] = f"run folder {point['run_dir']} not counted: {problem}"
        point["run_dir"] = None
        return
    entry = runs.describe(Path(point["run_dir"]))
    if entry["status"] in (*RECORDED, RunStatus.CRASHED):
        point["status"] = entry["status"]
    elif entry["status"] == RunStatus.CORRUPT:
        point["status"], point["error"] = RunStatus.FAILED, f"run folder: {entry['reason']}"
    point["metrics"] = entry["metrics"]
    point["wall_time_s"] = entry["wall_time_s"]
    from kexp import quality

    bars = declared_bars(sweep["experiment"])
    point["meets_bar"] = (not quality.failures(bars, point["metrics"])) if bars and point["metrics"] else None


def declared_bars(experiment: str) -> dict[str, Any]:
    """Returns the experiment's quality bars (`EXPECTED`), or none when it declares none or no longer loads."""
    from kexp import registry

    try:
        return getattr(registry.load(experiment), "EXPECTED", {}) or {}
    except Exception:  # the bar is a comparison; an experiment that no longer loads has none
        return {}


class Attempt:
    """One `kexp run` process of a point: the process, its log file, where its output starts, what it resumes."""

    def __init__(self, process: subprocess.Popen, log: Any, log_path: Path, offset: int, resumed: str | None):
        self.process, self.log, self.log_path, self.offset, self.resumed = process, log, log_path, offset, resumed

    def last_error(self) -> str:
        """Returns the last `kexp: error: ...` line this attempt printed (without the prefix), or ""."""
        with open(self.log_path, "rb") as log:
            log.seek(self.offset)
            lines = log.read().decode("utf-8", "replace").splitlines()
        errors = [line for line in lines if line.startswith("kexp: error: ")]
        return errors[-1][len("kexp: error: "):] if errors else ""


def start(sweep: dict[str, Any], point: dict[str, Any], sweep_dir: Path) -> Attempt:
    """Starts a point's `kexp run`, or `--resume` of its interrupted or crashed run folder, output to its log."""
    attempt = launch(sweep, point["run_dir"], [*sweep["overrides"], *settings(point["settings"])],
                     record_path(sweep_dir, point), log_path(sweep_dir, point))
    if attempt.resumed is None:
        point["run_dir"] = None  # never run (or failed, or its folder is gone): a fresh run
    point.update(status=RunStatus.RUNNING, exit_code=None, error="")
    return attempt


def launch(job: dict[str, Any], run_dir: str | None, overrides: list[str], record: Path, log_file: Path,
           env: dict[str, str] | None = None) -> Attempt:
    """Starts one `kexp run` of a sweep point or search trial, its output appended to `log_file`.

    Args:
        job: The sweep's or search's record (`experiment`, `strategy`, `logdir`).
        run_dir: The run folder of an earlier attempt: continued (`--resume`)
            when it was interrupted or crashed, else a fresh run starts.
        overrides: The fresh run's `--set` strings.
        record: Where the run records its folder (`kexp.runner.RUN_RECORD_ENV`).
        log_file: The output file.
        env: More environment variables for the run.
    """
    from kexp.runner import RUN_RECORD_ENV

    command = [sys.executable, "-m", "kexp", "run", job["experiment"], "--strategy", job["strategy"],
               "--logdir", job["logdir"]]
    resumed = None
    if run_dir and Path(run_dir).is_dir() and \
            runs.describe(Path(run_dir))["status"] in (RunStatus.INTERRUPTED, RunStatus.CRASHED):
        resumed = run_dir
        command += ["--resume", resumed]
    else:
        for item in overrides:
            command += ["--set", item]
    # A previous attempt's record must not name this attempt's folder.
    record.unlink(missing_ok=True)
    log = open(log_file, "ab")
    log.write((" ".join(command) + "\n").encode())
    log.flush()
    # Its own process group: a Ctrl-C at the terminal reaches the sweep alone,
    # which passes exactly one SIGINT on (a second one would stop the point at once).
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True, preexec_fn=_die_with_parent,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", RUN_RECORD_ENV: str(record),
                                    **(env or {})})
    return Attempt(process, log, log_file, log.tell(), resumed)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the sweep dies (Linux), so that no point trains on unwatched."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def finish(sweep: dict[str, Any], point: dict[str, Any], attempt: Attempt, sweep_dir: Path) -> None:
    """Fills a point in from this attempt's exit code, recorded run folder and that folder's `results.json`."""
    attempt.log.close()
    code = attempt.process.returncode
    point["exit_code"] = code
    # This attempt's folder only: the one it recorded once the folder existed, or the folder it resumed.
    point["run_dir"] = recorded_run_dir(sweep_dir, point) or attempt.resumed
    point["error"] = attempt.last_error()
    point["metrics"], point["wall_time_s"], point["meets_bar"] = {}, None, None
    refresh(sweep, point)
    if point["status"] == RunStatus.RUNNING:
        point["status"] = unrecorded_status(code)
        if not point["error"]:
            point["error"] = f"exit code {code} and no results.json; output in points/{attempt.log_path.name}"
