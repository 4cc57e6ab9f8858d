"""Internal: the `kexp run` processes of a `kexp search`'s trials, and what each trial's runs tell its study.

A trial runs once, or once per seed with `--seeds S` (`train.seed` 0..S-1,
one after another; only the first reports epochs to the pruner). Each run
is a normal `kexp run` in its own process and run folder: it records its
folder in `trials/trial-NNNN-R.json` (`kexp.runner.RUN_RECORD_ENV`), and
finds its study and trial in `trials/trial-NNNN.json`
(`kexp.engine.trial_link`). The search reads its `results.json`, never its
printed output. No TensorFlow is imported here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from kexp.cli.sweep_points import Attempt, launch, run_dir_in, unrecorded_status
from kexp.engine.trial_link import TRIAL_ENV
from kexp.store import rundir, runs
from kexp.store.record import RunStatus

# A trial's outcome once all its runs ended; any other status leaves the trial running in its study.
ENDED = (RunStatus.OK, RunStatus.PRUNED, RunStatus.FAILED, RunStatus.DIVERGED)


def new_trial(search: dict[str, Any], number: int, trial_id: int, params: dict[str, Any],
              settings: list[str]) -> dict[str, Any]:
    """Returns a trial's record in `search.json`, with one pending run per seed."""
    seeds = search["seeds"]
    return {"number": number, "trial_id": trial_id, "params": params, "settings": settings,
            "status": RunStatus.PENDING, "value": None, "std": None, "error": "",
            "runs": [{"seed": seed, "status": RunStatus.PENDING, "run_dir": None, "exit_code": None,
                      "metrics": {}, "wall_time_s": None} for seed in (range(seeds) if seeds else [None])]}


def next_run(trial: dict[str, Any]) -> dict[str, Any] | None:
    """Returns the trial's first run that has not ended, or None."""
    return next((run for run in trial["runs"] if run["status"] not in ENDED), None)


def _paths(search_dir: Path, trial: dict[str, Any], run: dict[str, Any]) -> tuple[Path, Path, Path]:
    stem = f"trial-{trial['number']:04d}"
    index = trial["runs"].index(run)
    folder = Path(search_dir) / "trials"
    return folder / f"{stem}.json", folder / f"{stem}-{index}.json", folder / f"{stem}-{index}.log"


def start(search: dict[str, Any], trial: dict[str, Any], run: dict[str, Any], search_dir: Path,
          storage_url: str) -> Attempt:
    """Starts one run of a trial: `kexp run`, or `--resume` of its interrupted or crashed folder.

    Args:
        search: The search's record.
        trial: The trial's record.
        run: The run's record (one of `trial["runs"]`).
        search_dir: The search folder.
        storage_url: The study's storage URL, password included (it goes
            into the trial file, which only this machine reads).
    """
    link, record, log_file = _paths(search_dir, trial, run)
    first = run is trial["runs"][0]
    rundir.write_json(link, {"storage": storage_url, "study": search["study"], "trial_id": trial["trial_id"],
                             "number": trial["number"], "prune": search["prune"] if first else "none",
                             "sign": 1 if search["direction"] == "minimize" else -1, "report": first})
    os.chmod(link, 0o600)  # it may hold a database password
    seed = [] if run["seed"] is None else [f"train.seed={run['seed']}"]
    attempt = launch(search, run["run_dir"], [*search["overrides"], *trial["settings"], *seed], record, log_file,
                     env={TRIAL_ENV: str(link)})
    if attempt.resumed is None:
        run["run_dir"] = None
    run.update(status=RunStatus.RUNNING, exit_code=None)
    trial["status"] = RunStatus.RUNNING
    return attempt


def finish(search_dir: Path, trial: dict[str, Any], run: dict[str, Any], attempt: Attempt) -> None:
    """Fills a run in from its exit code and its run folder's `results.json`."""
    attempt.log.close()
    code = attempt.process.returncode
    run["exit_code"] = code
    run["run_dir"] = recorded_run_dir(search_dir, trial, run) or attempt.resumed
    refresh(run)
    if run["status"] == RunStatus.RUNNING:
        run["status"] = unrecorded_status(code)
    if run["status"] == RunStatus.FAILED and not trial["error"]:
        trial["error"] = attempt.last_error() or f"exit code {code}; output in trials/{attempt.log_path.name}"


def recorded_run_dir(search_dir: Path, trial: dict[str, Any], run: dict[str, Any]) -> str | None:
    """Returns the run folder the run's latest process recorded; None without a readable record."""
    return run_dir_in(_paths(search_dir, trial, run)[1])


def refresh(run: dict[str, Any]) -> None:
    """Reads a run's status, metrics and time from its run folder, when it has one."""
    if not run["run_dir"] or not Path(run["run_dir"]).is_dir():
        return
    entry = runs.describe(Path(run["run_dir"]))
    if entry["status"] in (*ENDED, RunStatus.INTERRUPTED, RunStatus.CRASHED):
        run["status"] = entry["status"]
    elif entry["status"] == RunStatus.CORRUPT:
        run["status"] = RunStatus.FAILED
    run["metrics"], run["wall_time_s"] = entry["metrics"], entry["wall_time_s"]


def outcome(trial: dict[str, Any], metric: str) -> tuple[str, float | None]:
    """Returns the trial's status once its runs ended (or its last run's, while one has not) and its value.

    A trial is `ok` when every run is, its value the metric's mean over
    them (`std` the spread over seeds); `pruned` when its pruner stopped
    it; `failed` when a run failed, diverged or lacks the metric.
    """
    statuses = [run["status"] for run in trial["runs"]]
    for status in (RunStatus.PRUNED, RunStatus.FAILED, RunStatus.DIVERGED):
        if status in statuses:
            return status, None
    pending = next_run(trial)
    if pending is not None:
        return (pending["status"] if pending["status"] != RunStatus.PENDING else RunStatus.RUNNING), None
    values = [run["metrics"].get(metric) for run in trial["runs"]]
    if any(v is None or not math.isfinite(v) for v in values):
        have = ", ".join(sorted(trial["runs"][0]["metrics"])) or "none"
        trial["error"] = trial["error"] or f"results.json has no finite {metric} (its metrics: {have})"
        return RunStatus.FAILED, None
    from kexp.study.compare import mean_spread

    mean, spread = mean_spread(values)
    trial["std"] = spread if len(values) > 1 else None
    return RunStatus.OK, mean


def records_problem(search: dict[str, Any]) -> str:
    """Returns what is wrong with a loaded `search.json`'s counts and trial records (for `--resume`), or ""."""
    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def number(value: Any) -> bool:
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))

    seeds = search.get("seeds")
    if not integer(search.get("trials_wanted")) or search["trials_wanted"] < 1 or not integer(seeds) or seeds < 0:
        return "its trials_wanted or seeds is not a count"
    statuses = set(RunStatus) | {s.value for s in RunStatus}
    for index, trial in enumerate(search["trials"]):
        runs_ = trial.get("runs") if isinstance(trial, dict) else None
        ok = (isinstance(trial, dict) and integer(trial.get("number")) and integer(trial.get("trial_id"))
              and isinstance(trial.get("params"), dict) and isinstance(trial.get("settings"), list)
              and all(isinstance(x, str) for x in trial["settings"]) and trial.get("status") in statuses
              and number(trial.get("value")) and number(trial.get("std")) and isinstance(trial.get("error"), str)
              and isinstance(runs_, list) and len(runs_) == (seeds or 1))
        if not ok or not all(_run_record_ok(run, statuses) for run in runs_):  # type: ignore[union-attr]
            return f"trial record {index + 1} is malformed"
    return ""


def _run_record_ok(run: Any, statuses: set) -> bool:
    def optional(value: Any, kinds: tuple) -> bool:
        return value is None or (isinstance(value, kinds) and not isinstance(value, bool))

    return (isinstance(run, dict) and optional(run.get("seed"), (int,)) and run.get("status") in statuses
            and optional(run.get("run_dir"), (str,)) and optional(run.get("exit_code"), (int,))
            and isinstance(run.get("metrics"), dict)
            and all(optional(v, (int, float)) for v in run["metrics"].values())
            and optional(run.get("wall_time_s"), (int, float)))
