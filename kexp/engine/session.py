"""A run's lifecycle: open and lock its folder, yield the `Harness`, write `results.json`.

    import kexp
    with kexp.open_run("my_model") as harness:
        model = harness.fit(build_model, (x, y), loss="mse")
    print(harness.results["status"], harness.run_dir)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import keras
import tensorflow as tf

from kexp.store import checkpoint, hparams, jsonfiles, names, rundir
from kexp.store.record import RunStatus
from kexp.config import ExperimentConfig, TrainConfig, to_dict, validate
from kexp.errors import RunError, RunPruned, UsageError, WriteError, tag_run_dir
from kexp.engine.harness import Harness
from kexp.engine import precision
from kexp.engine.determinism import op_determinism
from kexp.engine.outputs import events_error
from kexp.engine.interrupt import RunInterrupted, StopRequest
from kexp.engine.trial_link import current as current_trial
from kexp.engine.strategy import describe_devices, is_chief, make_strategy
from kexp.store import layout


@contextlib.contextmanager
def open_run(
    name: str,
    *,
    logdir: str | Path = "logs",
    train: TrainConfig | None = None,
    strategy: str = "auto",
    config: ExperimentConfig | None = None,
    verbose: int | str = "auto",
    resume: str | Path | None = None,
    on_open: Callable[[Path], None] | None = None,
    label: str | None = None,
) -> Iterator[Harness]:
    """Opens a run folder and yields the `Harness` that trains in it.

    The folder is locked while the block runs (`kexp.store.rundir.RunLock`): a
    second process on it fails with a `UsageError`. On exit it
    writes `results.json` (atomically) with the recorded metrics and the
    run's status. A `UsageError` raised inside (bad data, say) removes a new
    run folder again before it propagates, and leaves a resumed one as it
    was. While the block runs, and while `results.json` is written, SIGINT
    and SIGTERM stop training cleanly (`kexp.engine.interrupt`); the block then ends
    with `RunInterrupted` (whose `run_dir`, `kexp.errors.run_dir_of`, names the folder) and status
    `interrupted`. A `SystemExit` inside is a failed run (`RunError`).

    Seeds: `keras.utils.set_random_seed(train.seed)` (Python, NumPy and
    TensorFlow) and the data order come from `train.seed`; with
    `TrainConfig(seed=None)` a seed set by the caller is left alone (the data
    order's seed is then drawn from Python's `random`). `results.json`
    records the seed as `seed` and `seeded_globally`. `train.deterministic`
    turns TensorFlow's op determinism on for the open run only.

    Args:
        name: Experiment name; the run folder is `logdir/name/RUN_ID`. One
            folder name: letters, digits, `_`, `-` and `.` (not first).
        logdir: Root of all runs.
        train: Training settings; defaults to `TrainConfig()`.
        strategy: A name from `kexp.engine.strategy.STRATEGIES`.
        config: The full experiment config written to `config.json`.
        verbose: Keras verbosity; `auto` shows a progress bar on a terminal
            and one line per epoch otherwise.
        resume: An existing run folder to continue in (`kexp.runner.resume_config`
            checks it; `kexp.store.checkpoint` holds the state format);
            each fit restarts from its last completed epoch.
        on_open: Called with the run folder once it exists and is locked
            (the CLI prints it, so that a killed run's folder is known).
        label: What tells this run apart, one folder name: the RUN_ID is then
            `YYYYMMDD-HHMMSS-LABEL` (`-2`, ... on a clash) instead of ending in
            random hex, so TensorBoard's run list reads (`kexp.run` passes the
            settings that differ from the defaults, or `--name`).

    Yields:
        The harness. After the block, `harness.results` holds what was written.

    Raises:
        UsageError: A bad name, strategy or setting (`ConfigError`, as `--set`
            would give), or a folder in use.
        WriteError: A file of the run could not be written (names the file).
    """
    names.check_name(name, "open_run name")
    stop = StopRequest()
    # Signals are caught from before the run folder exists until its lock is released: a SIGINT or
    # SIGTERM at any moment is a clean stop (interrupted, resumable), or before the folder, nothing left.
    with stop, contextlib.ExitStack() as cleanup:
        train, tf_strategy, seeded = _prepare(train, config, strategy, cleanup)
        chief = is_chief(tf_strategy)
        config_data = to_dict(config) if config is not None else {"train": to_dict(train)}
        stop.check()
        run_dir, lock = _open_folder(name, logdir, resume, chief, config_data, label or "")
        if lock is not None:
            cleanup.callback(lock.release)
        if on_open is not None and chief:
            on_open(run_dir)
        previous_policy = keras.mixed_precision.dtype_policy()
        harness = Harness(run_dir, train, tf_strategy, strategy, verbose=verbose, stop=stop, seeded_globally=seeded,
                          backup_root=_backup_root(resume), run_info={"experiment": name, "config": config_data},
                          resumed=resume is not None, precision=_set_precision(train, resume))
        with _recorded(harness, name, config_data, stop, chief=chief, resumed=resume is not None,
                       previous_policy=previous_policy):
            yield harness


@contextlib.contextmanager
def _recorded(harness: Harness, name: str, config_data: dict, stop: StopRequest, *, chief: bool,
              resumed: bool, previous_policy: Any) -> Iterator[None]:
    """Runs the user's block and records how it ended: every way out of a run passes through here, in order.

    1. An error or a signal in the block (or just before or after it) sets
       the status and tags the error with the folder (`_on_error`); bad
       input instead removes a new folder (the run is then `refused`).
    2. The dtype policy is restored and `results.json` written, whatever
       happened, unless the run was refused.
    3. A signal that arrived while `results.json` was written makes the
       run `interrupted`: written again, then `RunInterrupted` is raised.

    Args:
        harness: The run's harness.
        name: The experiment's name.
        config_data: The config written to `config.json`.
        stop: The run's stop request (signals).
        chief: Whether this worker writes the run folder.
        resumed: Whether the run continues an existing folder.
        previous_policy: The dtype policy to restore.

    Yields:
        Nothing; the block runs at the yield.
    """
    try:
        stop.check()  # a signal while the folder was made: status interrupted, resumable
        _start_logs(harness, config_data, chief and not resumed)
        yield
        stop.check()
    except BaseException as err:
        _on_error(err, harness, new_folder=not resumed or not chief, chief=chief)
        raise
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
        if harness.run_dir.exists() and not harness.refused:
            _write_results(harness, name, config_data, chief, failing=sys.exc_info()[1] is not None)
    if stop.requested:
        # A signal that arrived while results.json was written.
        harness.status = RunStatus.INTERRUPTED
        _write_results(harness, name, config_data, chief)
        interrupted = RunInterrupted(stop.signum, stop.dropped_epoch)  # type: ignore[arg-type]
        tag_run_dir(interrupted, harness.run_dir if chief else None)
        raise interrupted


def _prepare(train: TrainConfig | None, config: ExperimentConfig | None, strategy: str,
             cleanup: contextlib.ExitStack) -> tuple[TrainConfig, Any, bool]:
    """Returns the run's train settings (checked, seed drawn if None), its strategy, and whether it seeded globally.

    Args:
        train: The run's training settings, or None for the config's.
        config: The experiment's config, if any.
        strategy: The strategy's name.
        cleanup: Undoes the run's process-wide settings (op determinism) when the run closes.

    Raises:
        UsageError: A setting `--set` would refuse, or a bad strategy.
    """
    train = train or (config.train if config is not None else TrainConfig())
    # Settings made in Python never went through `--set`: the same checks, before any folder exists.
    validate(config if config is not None else ExperimentConfig(data=None, model=None, train=train))
    if config is not None and train is not config.train:
        validate(ExperimentConfig(data=None, model=None, train=train))
    tf_strategy = make_strategy(strategy)
    seeded = train.seed is not None
    if seeded:
        keras.utils.set_random_seed(train.seed)
    else:
        # The global seeds stay as the caller set them; data order still
        # needs a seed, drawn from Python's (which set_random_seed seeds).
        train = dataclasses.replace(train, seed=random.randrange(2**31))
    if train.deterministic:
        cleanup.enter_context(op_determinism())
    return train, tf_strategy, seeded


def _backup_root(resume: str | Path | None) -> Path | None:
    """Returns where a resumed run's state is: every worker of a multi-worker run restores the chief's."""
    return layout.backup_root(Path(resume).absolute()) if resume is not None else None


def _set_precision(train: TrainConfig, resume: str | Path | None) -> dict[str, str]:
    """Sets the dtype policy `train.precision` names and returns what the run trains under, and who chose it
    (a resumed `auto` run keeps its first start's choice)."""
    gpus = len(tf.config.list_physical_devices("GPU")) if train.precision == "auto" else 0
    policy, set_by = precision.resolve(train.precision, gpus)
    if train.precision == "auto" and resume is not None:
        try:
            recorded = jsonfiles.read_json(Path(resume) / "results.json", missing=None)
        except jsonfiles.CorruptFile:
            recorded = None  # the resume itself refuses a broken folder; auto then decides anew
        first = recorded.get("precision") if isinstance(recorded, dict) else None
        policy, set_by = precision.kept_on_resume(first, policy, set_by)
    if policy is not None:
        # A setting wins; left at `global`, the caller's own global policy holds, as in plain Keras.
        keras.mixed_precision.set_dtype_policy(policy)
    return {"policy": keras.mixed_precision.dtype_policy().name, "set_by": set_by}


def _start_logs(harness: Harness, config_data: dict, new_run: bool) -> None:
    """Writes a new run's HParams session start and config text (a resumed run writes its start at the end:
    a resume that fails must leave the folder as it was)."""
    harness.started = time.perf_counter()
    if new_run:
        harness.summaries.write_hparams(_session_values(harness, config_data), trial_id=harness.run_dir.name)
        harness.images.write_text("config", _config_markdown(config_data))


def _session_values(harness: Harness, config_data: dict) -> dict[str, Any]:
    """Returns the run's HParams session values: its experiment's name and its config, one type per key."""
    experiment = (harness.run_info or {}).get("experiment") or harness.run_dir.parent.name
    return hparams.session_values(experiment, config_data)


def _on_error(err: BaseException, harness: Harness, *, new_folder: bool, chief: bool) -> None:
    """Sets the run's status for an error leaving the block, and tags it with the folder (`kexp.errors.tag_run_dir`).

    Bad input (`UsageError`) removes a new folder that holds no fit; a
    resumed one stays as it was; a library user's folder with fits stays,
    failed. A `SystemExit` becomes a `RunError`.
    """
    if isinstance(err, UsageError) and not (harness.fit_settings and new_folder):
        harness.refused = True
        harness.close()
        if new_folder and chief:
            rundir.remove_run_dir(harness.run_dir)
        elif new_folder:
            shutil.rmtree(harness.run_dir, ignore_errors=True)
        return
    harness.status = (RunStatus.INTERRUPTED if isinstance(err, KeyboardInterrupt) else
                      RunStatus.PRUNED if isinstance(err, RunPruned) else RunStatus.FAILED)
    # The CLI still ends with `run_dir: PATH`.
    run_dir = harness.run_dir if chief else None
    if isinstance(err, SystemExit):
        failed = RunError(f"the experiment exited (sys.exit({err.code!r})) before it finished")
        tag_run_dir(failed, run_dir)
        raise failed from None
    tag_run_dir(err, run_dir)


def _open_folder(name: str, logdir: str | Path, resume: str | Path | None, chief: bool,
                 config_data: dict, label: str) -> tuple[Path, rundir.RunLock | None]:
    """Returns the run folder, locked, with its `config.json`: a new one, or the resumed one cleaned of temp files."""
    if not chief:
        # Other workers of a multi-worker run compute, but keep their files
        # (state, logs) out of the shared run folders.
        return Path(tempfile.mkdtemp(prefix=f"kexp-{name}-worker-")), None
    if resume is not None:
        run_dir = Path(resume).absolute()
        lock = rundir.RunLock(run_dir, f"--resume {str(resume)!r}")
        if _finished(run_dir):
            # Checked before the lock too; a run that finished while we waited for it must not train again.
            lock.release()
            raise UsageError(f"--resume {str(resume)!r}: this run finished (status ok); nothing to resume")
        # Left by a process killed mid-write; never read, and they would pile up.
        for path in (run_dir / "results.json", run_dir / "config.json"):
            rundir.remove_temp_files(path)
        for backup in layout.backup_root(run_dir).glob("*"):
            checkpoint.remove_temp_files(backup)
        return run_dir, lock
    run_dir = rundir.create_run_dir(logdir, name, label=label)
    lock = rundir.RunLock(run_dir, str(run_dir))
    try:
        rundir.write_json(run_dir / "config.json", config_data)
    except BaseException:
        # A run folder without config.json could never be resumed.
        lock.release()
        rundir.remove_run_dir(run_dir)
        raise
    return run_dir, lock


def _finished(run_dir: Path) -> bool:
    try:
        results = rundir.read_json(run_dir / "results.json", missing={}, null_nonfinite=True)
    except rundir.CorruptFile:
        return False
    return isinstance(results, dict) and results.get("status") == RunStatus.OK


def _write_results(harness: Harness, name: str, config_data: dict, chief: bool, failing: bool = False) -> None:
    """Writes `results.json` (chief) or removes a worker's scratch folder.

    When the run is already failing, a write that fails too keeps the first
    error: it names what failed first (a full disk fails both).
    """
    harness.results = _results(harness, name, config_data, time.perf_counter() - harness.started)
    summaries_problem = None
    if chief and not harness.final_logged:
        harness.final_logged = True
        summaries_problem = _log_final(harness, config_data)
    harness.close()
    if not chief:
        shutil.rmtree(harness.run_dir, ignore_errors=True)
        return
    try:
        rundir.write_json(harness.run_dir / "results.json", harness.results)
    except WriteError as err:
        if failing:
            return
        raise WriteError(err.path, err.os_error, "; the trained state is in the run folder's backup/") from None
    if summaries_problem is not None and not failing:
        # Only now: had results.json failed as well, its error alone would be the one line.
        print(f"kexp: warning: the final TensorBoard summaries are incomplete: {summaries_problem}", file=sys.stderr)


def _log_final(harness: Harness, config_data: dict) -> WriteError | None:
    """Writes the quality metrics as scalars (`metrics/NAME`) and the HParams session's end with its status.

    A resumed run writes its session start again too (replacing the one it
    has, or the one a kill before it was written left out). TensorBoard is a
    view of the run: a write that fails (a full disk, say) is a warning, and
    `results.json`, written next, says what failed.

    Returns:
        The failed write, named in one line, or None.
    """
    try:
        if harness.resumed:
            harness.summaries.write_hparams(_session_values(harness, config_data), trial_id=harness.run_dir.name)
        harness.summaries.write_scalars({f"metrics/{key}": value for key, value in harness.metrics.items()})
        harness.summaries.write_session_end(harness.status)
    except WriteError as err:
        return err
    except (OSError, tf.errors.OpError):
        return events_error(harness.run_dir)  # one line, not TensorFlow's many
    return None


def _config_markdown(config_data: dict) -> str:
    """Returns the resolved config as a Markdown table of `section.key | value` (TensorBoard's Text tab)."""
    rows = ["| key | value |", "|---|---|"]
    for section, values in config_data.items():
        for key, value in (values or {}).items():
            rows.append(f"| {section}.{key} | {hparams.flatten({section: {key: value}})[f'{section}.{key}']} |")
    return "\n".join(rows)


def _results(harness: Harness, name: str, config: dict, wall_time_s: float) -> dict[str, Any]:
    if harness.status == RunStatus.OK and any(not math.isfinite(v) for v in harness.metrics.values()):
        harness.status = RunStatus.DIVERGED
    return {
        "experiment": name,
        "run_id": harness.run_dir.name,
        "status": harness.status,
        "metrics": harness.metrics,
        "config": config,
        "wall_time_s": round(wall_time_s, 3),
        "train_samples_per_s": None if harness.train_samples_per_s is None else round(harness.train_samples_per_s, 1),
        # The dtype policy models were built and trained under, and whether the config or the caller chose it.
        "precision": harness.precision,
        "strategy": harness.strategy_name,
        "num_replicas": harness.num_replicas,
        "devices": describe_devices(harness.strategy),
        "fits": harness.fit_settings,
        "models": harness.saved_models,
        # train.seed seeded Python, NumPy, TensorFlow and the data order; with
        # train.seed=None the data order's seed was drawn and nothing global was seeded.
        "seed": harness.train.seed,
        "seeded_globally": harness.seeded_globally,
        "versions": rundir.versions(),
        # Other workers of a multi-worker run keep no folder.
        "run_dir": str(harness.run_dir) if harness.is_chief else None,
        **_search_record(),
    }


def _search_record() -> dict[str, Any]:
    """Returns `{"search": {study, storage, trial}}` for a run a `kexp search` started as a trial, else `{}`."""
    link = current_trial()
    return {"search": link.record()} if link is not None else {}
