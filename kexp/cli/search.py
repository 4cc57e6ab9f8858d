"""Internal: `kexp search`: an Optuna study over an experiment's settings, each trial a normal `kexp run`.

    kexp search xor --space train.learning_rate=0.01:1:log --space model.hidden=2:8 --trials 12 --jobs 2

The search folder `LOGDIR/NAME/search-ID/` holds `search.json` (rewritten
atomically after each trial starts and ends), the study's SQLite file
`study.db` (unless `--storage` names another), `search.png` and its
TensorBoard copy, and each trial's output and links in `trials/`. Each
trial's run is a normal run folder beside it (`kexp runs` lists it, one
TensorBoard HParams session), with the study and trial in `results.json`.
Ctrl-C or SIGTERM stops the running trials cleanly (they stay running in
the study); `kexp search --resume SEARCH_DIR` continues them in their own
folders, then runs the trials still missing. No TensorFlow is imported here.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from kexp.cli import search_trials as trials_
from kexp.cli.search_space import Dimension, from_dicts
from kexp.cli.search_study import Objective
from kexp.cli.sweep_points import Attempt
from kexp.engine.trial_link import shown_storage
from kexp.errors import UsageError
from kexp.store import rundir
from kexp.store.record import RunStatus

_TOLD = {RunStatus.OK: "COMPLETE", RunStatus.PRUNED: "PRUNED", RunStatus.FAILED: "FAIL", RunStatus.DIVERGED: "FAIL"}


def new_search(name: str, dimensions: Sequence[Dimension], overrides: Sequence[str], objective: Objective,
               options: dict[str, Any]) -> tuple[Path, dict[str, Any], str]:
    """Creates the search folder and its first `search.json`; returns both and the storage URL.

    Args:
        name: The experiment.
        dimensions: The searched settings (`kexp.cli.search_space`).
        overrides: `--set` strings fixed for every trial.
        objective: The metric and direction.
        options: `trials`, `sampler`, `sampler_seed`, `prune`, `seeds`,
            `strategy`, `logdir`, `storage` (None: SQLite in the folder)
            and `study` (None: the experiment and folder name).
    """
    search_dir = rundir.create_run_dir(options["logdir"], name, prefix="search-")
    storage_url = options["storage"] or f"sqlite:///{search_dir / 'study.db'}"
    search = json.loads(json.dumps({
        "experiment": name, "search_id": search_dir.name, "status": "running",
        "space": [d.as_dict() for d in dimensions], "overrides": list(overrides),
        "metric": objective.metric, "direction": objective.direction, "sampler": options["sampler"],
        "sampler_seed": options["sampler_seed"], "prune": options["prune"], "seeds": options["seeds"],
        "trials_wanted": options["trials"], "strategy": options["strategy"],
        "logdir": str(Path(options["logdir"]).absolute()), "storage": shown_storage(storage_url),
        "study": options["study"] or f"{name}-{search_dir.name}", "trials": [],
    }))
    try:
        rundir.write_json(search_dir / "search.json", search)
    except BaseException:
        rundir.remove_run_dir(search_dir)
        raise
    return search_dir, search, storage_url


def load_search(search_dir: str | Path, name: str | None, storage: str | None) -> tuple[dict[str, Any], str]:
    """Reads a search folder's `search.json` for `--resume`; returns it and the storage URL.

    Raises:
        UsageError: Not a search folder (of `name`), a `search.json` kexp
            did not write, or a storage whose password was not recorded
            given without `--storage` (or with another one).
    """
    prefix = f"search --resume {str(search_dir)!r}"
    allowed = "allowed: a folder kexp search made (LOGDIR/NAME/search-ID)"
    try:
        search = rundir.read_json(Path(search_dir) / "search.json", missing=None)
    except rundir.CorruptFile as err:
        raise UsageError(f"{prefix}: search.json is not readable JSON ({err.reason}); {allowed}") from None
    keys = ("experiment", "space", "overrides", "metric", "direction", "sampler", "prune", "seeds", "trials_wanted",
            "strategy", "logdir", "storage", "study", "trials")
    if not isinstance(search, dict) or any(key not in search for key in keys) or \
            not isinstance(search["trials"], list) or not isinstance(search["space"], list):
        raise UsageError(f"{prefix}: no search.json as kexp search writes it; {allowed}")
    problem = trials_.records_problem(search)
    if problem:
        raise UsageError(f"{prefix}: search.json is not as kexp search wrote it ({problem}); {allowed}")
    if name is not None and name != search["experiment"]:
        raise UsageError(f"{prefix}: a search of {search['experiment']!r}, not of {name!r}")
    url = search["storage"]
    if storage is not None:
        if shown_storage(storage) != url:
            raise UsageError(f"--storage {shown_storage(storage)!r}: the search's study is in {url!r}; "
                             "allowed: that storage")
        url = storage
    elif "***" in url:
        raise UsageError(f"{prefix}: its storage {url!r} needs its password again; allowed: --resume with "
                         "--storage URL")
    return search, url


def reconcile(search: dict[str, Any], study: Any, search_dir: Path) -> None:
    """Brings a resumed search's unfinished trials up to date with their study and run folders.

    A trial the study already holds as finished (the search was killed
    after telling it) takes that outcome and is not run again; a run the
    search was killed during takes the folder its process recorded.
    """
    _fail_orphans(search, study, search_dir)
    unfinished = [t for t in search["trials"] if t["status"] not in trials_.ENDED]
    in_study = {t.number: t for t in study.get_trials(deepcopy=False)}
    for trial in unfinished:
        known = in_study.get(trial["number"])
        state = known.state.name if known is not None else None
        if state in ("COMPLETE", "PRUNED", "FAIL"):
            trial["status"] = {"COMPLETE": RunStatus.OK, "PRUNED": RunStatus.PRUNED}.get(state, RunStatus.FAILED)
            trial["value"] = known.value if state == "COMPLETE" else None
        for run in trial["runs"]:
            if run["status"] == RunStatus.RUNNING:
                run["run_dir"] = trials_.recorded_run_dir(search_dir, trial, run) or run["run_dir"]
                trials_.refresh(run)
                if run["status"] == RunStatus.RUNNING:
                    run["status"] = RunStatus.CRASHED
        if trial["status"] in (*trials_.ENDED, RunStatus.PENDING):
            continue
        trial["status"] = RunStatus.INTERRUPTED


def _fail_orphans(search: dict[str, Any], study: Any, search_dir: Path) -> None:
    """Fails the study's running trials this folder asked for but never recorded (killed between the two):
    they never ran, and would otherwise stay running in the study for good."""
    known = {t["number"] for t in search["trials"]}
    for trial in study.get_trials(deepcopy=False):
        owner = (trial.user_attrs.get("kexp") or {}).get("search_dir")
        if trial.state.name == "RUNNING" and trial.number not in known and owner == str(search_dir):
            study.tell(trial.number, state=_state("FAIL"), skip_if_finished=True)


def run_trials(search_dir: Path, search: dict[str, Any], study: Any, storage_url: str, jobs: int,
               requests: list[int], say: Callable[[str], None] = print) -> bool:
    """Runs the search's unfinished trials, then new ones until it has `trials_wanted`, `jobs` at a time.

    Returns False when a stop request cut it short. The first request sends
    one SIGINT to each running trial (which saves its state and stops) and
    starts no more; a second one stops them at once.
    """
    (search_dir / "trials").mkdir(exist_ok=True)
    dimensions = from_dicts(search["space"])
    queue = [t for t in search["trials"] if t["status"] not in trials_.ENDED]
    running: dict[int, tuple[dict[str, Any], dict[str, Any], Attempt]] = {}
    handled = 0
    try:
        while True:
            if len(requests) > handled:
                if handled == 0:
                    say(f"kexp: stopping the search: {len(running)} running trial(s) save their state and stop "
                        "(again: stop them at once)")
                for _, _, attempt in running.values():
                    attempt.process.send_signal(signal.SIGINT)
                handled = len(requests)
            while not requests and len(running) < jobs:
                trial = queue.pop(0) if queue else _ask(search, study, dimensions, search_dir)
                if trial is None:
                    break
                if trial["status"] in trials_.ENDED:  # refused before it ran
                    say(_line(search, trial))
                    continue
                run = trials_.next_run(trial)
                running[trial["number"]] = (trial, run, trials_.start(search, trial, run, search_dir, storage_url))
                rundir.write_json(search_dir / "search.json", search)
                seed = [] if run["seed"] is None else [f"train.seed={run['seed']}"]
                say(f"[trial {trial['number']}] {' '.join([*trial['settings'], *seed])}: started")
            for number, (trial, run, attempt) in list(running.items()):
                if attempt.process.poll() is None:
                    continue
                del running[number]
                trials_.finish(search_dir, trial, run, attempt)
                _settle(search, study, trial, queue, stopping=bool(requests), say=say)
                rundir.write_json(search_dir / "search.json", search)
                missing = _metric_missing(search, trial)
                if missing and not requests:
                    say(f"kexp: stopping the search: {missing}")
                    requests.append(signal.SIGINT)  # the other running trials stop as on Ctrl-C
                    search["metric_missing"] = missing
            if not running and (requests or (not queue and _asked_enough(search))):
                break
            time.sleep(0.1)
    finally:
        for _, _, attempt in running.values():  # only after an error in the loop itself
            attempt.process.kill()
            attempt.process.wait()
            attempt.log.close()
    missing = any(t["status"] not in trials_.ENDED for t in search["trials"])
    search["status"] = ("interrupted" if requests else "incomplete") if missing else "complete"
    rundir.write_json(search_dir / "search.json", search)
    return not (requests and missing)


def _metric_missing(search: dict[str, Any], trial: dict[str, Any]) -> str:
    """Returns why no trial can have an objective (a run finished ok without the metric at all), or ""."""
    finished = [run for run in trial["runs"] if run["status"] == RunStatus.OK]
    if not finished or search["metric"] in finished[0]["metrics"]:
        return ""
    have = ", ".join(sorted(finished[0]["metrics"])) or "none"
    return (f"--metric {search['metric']!r}: the trials' results.json has no such metric (they have: {have}); "
            f"allowed: one of those")


def _asked_enough(search: dict[str, Any]) -> bool:
    return len(search["trials"]) >= search["trials_wanted"]


def _ask(search: dict[str, Any], study: Any, dimensions: Sequence[Dimension], search_dir: Path
         ) -> dict[str, Any] | None:
    """Asks the study for a new trial (None once the search has its trials); refused settings fail it at once."""
    if _asked_enough(search):
        return None
    from kexp.runner import resolve

    trial = study.ask({d.key: d.distribution() for d in dimensions})
    params = {d.key: trial.params[d.key] for d in dimensions}
    record = trials_.new_trial(search, trial.number, trial._trial_id, params,
                               [d.setting(params[d.key]) for d in dimensions])
    trial.set_user_attr("kexp", {"host": socket.gethostname(), "search_dir": str(search_dir)})
    search["trials"].append(record)
    rundir.write_json(search_dir / "search.json", search)  # before it starts: a kill now leaves it resumable
    try:
        resolve(search["experiment"], [*search["overrides"], *record["settings"]])
    except UsageError as err:  # a value inside the ranges that a rule across settings refuses
        study.tell(trial.number, state=_state("FAIL"))
        record.update(status=RunStatus.FAILED, error=str(err))
    return record


def _state(name: str) -> Any:
    import optuna

    return getattr(optuna.trial.TrialState, name)


def _settle(search: dict[str, Any], study: Any, trial: dict[str, Any], queue: list[dict[str, Any]], *,
            stopping: bool, say: Callable[[str], None]) -> None:
    """Records a run that ended: tells the study the trial's outcome, or queues its next seed's run."""
    status, value = trials_.outcome(trial, search["metric"])
    if status in trials_.ENDED:
        trial.update(status=status, value=value)
        import optuna

        trial_obj = optuna.trial.Trial(study, trial["trial_id"])
        trial_obj.set_user_attr("run_dirs", [run["run_dir"] for run in trial["runs"] if run["run_dir"]])
        if trial["std"] is not None:
            trial_obj.set_user_attr("std", trial["std"])
        study.tell(trial["number"], value if status == RunStatus.OK else None, state=_state(_TOLD[status]),
                   skip_if_finished=True)
        say(_line(search, trial))
    elif status == RunStatus.RUNNING and not stopping:
        queue.insert(0, trial)  # its next seed
    else:
        # Stopped: interrupted (resumable), or a seed still to run; crashed when its process was killed.
        trial["status"] = RunStatus.CRASHED if status == RunStatus.CRASHED else RunStatus.INTERRUPTED
        say(f"[trial {trial['number']}] {trial['status']}")


def _line(search: dict[str, Any], trial: dict[str, Any]) -> str:
    """Returns a trial's one-line outcome, e.g. `[trial 3] ok single_layer_accuracy=0.5`."""
    from kexp.store.runs import format_number

    text = f"[trial {trial['number']}] {trial['status']}"
    if trial["value"] is not None:
        spread = f" ± {format_number(trial['std'])}" if trial["std"] is not None else ""
        text += f" {search['metric']}={format_number(trial['value'])}{spread}"
    return text + (f" ({trial['error']})" if trial["error"] else "")
