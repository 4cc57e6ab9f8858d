"""Internal: runs a named experiment: registry -> config -> harness -> run folder."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from kexp.store import checkpoint, hparams, names, rundir
from kexp import registry
from kexp.config import ExperimentConfig, apply_overrides, from_dict, to_dict
from kexp.config_values import shown
from kexp.errors import ConfigError, UsageError, WriteError
from kexp.engine.strategy import check_strategy_name
from kexp.store import layout


# The line `kexp run` prints first once its folder exists; its last is `run_dir: PATH`.
RUN_FOLDER_LINE = "kexp: run folder "
# Names a file where the run writes `{"run_dir": PATH}` once its folder exists (and is locked): how
# kexp sweep learns each point's folder without reading its output, which a path with a newline would split.
RUN_RECORD_ENV = "KEXP_RUN_RECORD"


def resolve(name: str, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Returns an experiment's default config with `overrides` applied.

    Raises:
        UsageError: For an unknown experiment or a bad override.
    """
    module = registry.load(name)
    return apply_overrides(module.CONFIG, overrides)


def request_config(name: str, overrides: Sequence[str] = (), resume: str | Path | None = None) -> ExperimentConfig:
    """Returns the config a run request trains with: defaults plus overrides, or a resumed run's own.

    Raises:
        UsageError: For an unknown experiment, a bad override or resume folder,
            or both overrides and a resume folder.
    """
    if resume is None:
        return resolve(name, overrides)
    if overrides:
        raise UsageError(f"--resume continues with the run's saved config; received --set {shown(overrides[0])}; "
                         "allowed: --resume without --set")
    return resume_config(name, resume)


def resume_config(name: str, run_dir: str | Path) -> ExperimentConfig:
    """Checks that `run_dir` is an unfinished run of experiment `name` and returns its config.

    Needs no TensorFlow: the CLI calls it so that a bad folder fails at once,
    before anything in it is written.

    Args:
        name: The experiment the run must belong to.
        run_dir: A run folder, `LOGDIR/NAME/RUN_ID`.

    Returns:
        The run's saved config (`config.json`), validated against the experiment.

    Raises:
        UsageError: A missing, corrupt, finished or other experiment's folder.
    """
    module = registry.load(name)
    folder = Path(run_dir)
    prefix = f"--resume {shown(str(run_dir), 200)}"
    allowed = f"allowed: a run folder of {name} (LOGDIR/{name}/RUN_ID) that did not finish"
    if not folder.is_dir():
        raise UsageError(f"{prefix}: not a folder; {allowed}")
    _check_regular_files(folder, prefix)
    results = _read_json(folder / "results.json", prefix, allowed, required=False)
    if not results and rundir.regular_file_problem(folder / "config.json") == "missing":
        # Not a run at all (its parent's name says nothing then).
        raise UsageError(f"{prefix}: no config.json in it; {allowed}")
    states = _load_states(folder, prefix, allowed)
    experiment = _experiment_of(name, module, folder, results, states, prefix, allowed)
    if experiment != name:
        raise UsageError(f"{prefix}: a run of {experiment!r}, not {name!r}; {allowed}")
    if results and results.get("status") == "ok":
        raise UsageError(f"{prefix}: this run finished (status ok); nothing to resume; {allowed}")
    saved = _read_json(folder / "config.json", prefix, allowed, required=True)
    try:
        config = from_dict(module.CONFIG, saved)
    except ConfigError as err:
        raise UsageError(f"{prefix}: config.json does not fit experiment {name!r} ({err}); {allowed}") from None
    for fit, state in states.items():
        if state.run and state.run.get("fit", fit) != fit:
            raise UsageError(f"{prefix}: backup/{fit} holds the state of fit {_cut(state.run['fit'])}; "
                             "allowed: each fit's state in its own backup folder, as the run left it")
        if state.run and state.run.get("config") is not None and state.run["config"] != saved:
            key, ours, theirs = _first_difference(saved, state.run["config"])
            raise UsageError(
                f"{prefix}: config.json differs from the config backup/{fit} was trained with "
                f"({key}: {_cut(ours)} in config.json, {_cut(theirs)} in its state); "
                "allowed: the run's config.json as it was written")
    _check_histories(folder, prefix)
    _check_history_has_state(folder, set(states), prefix)
    return config


def _check_regular_files(folder: Path, prefix: str) -> None:
    """Refuses a run folder holding anything but folders and regular files (or links to them).

    A resume reads and rewrites the files it finds (`config.json`, state
    files, `history.csv`, event files): opening a FIFO there would block
    forever, and a device could be endless.
    """
    for parent, _, files in os.walk(folder):
        for file in files:
            path = Path(parent) / file
            problem = rundir.regular_file_problem(path)
            if problem:
                raise UsageError(f"{prefix}: {path.relative_to(folder)} is {problem}; allowed: a run folder "
                                 "whose files are regular files, as kexp wrote them")


def _load_states(folder: Path, prefix: str, allowed: str) -> dict[str, checkpoint.TrainingState]:
    """Reads every fit's state file: a torn or forged one fails here, before anything trains or is written."""
    states = {}
    for state_file in sorted(folder.glob(f"backup/*/{checkpoint.STATE_FILE}")):
        try:
            states[state_file.parent.name] = checkpoint.load(state_file)
        except UsageError as err:
            raise UsageError(f"{prefix}: {err}; {allowed}") from None
    return states


def _experiment_of(name: str, module: Any, folder: Path, results: dict[str, Any], states: dict[str, Any], prefix: str,
                   allowed: str) -> str:
    """Returns the experiment a run folder is a run of.

    `results.json` and the state files record it, and survive a moved or
    linked folder. A run killed before its first state has neither: then its
    real location's experiment folder, or, for a folder moved out of its
    experiment's, its `config.json` when that is a complete config of
    `module`'s experiment (`config.json` does not name the experiment).
    """
    if results:
        experiment = results.get("experiment")
        if not isinstance(experiment, str):
            raise UsageError(f"{prefix}: results.json names no experiment (received {_cut(experiment)}); {allowed}")
        return experiment
    trained_under = [state.run["experiment"] for state in states.values()
                     if state.run and "experiment" in state.run]
    if trained_under:
        return trained_under[0]
    # The real folder: a link's own parent says nothing.
    layout = folder.resolve().parent.name
    if layout == name:
        return layout
    saved = _read_json(folder / "config.json", prefix, allowed, required=True)
    try:
        complete = _as_json(to_dict(from_dict(module.CONFIG, saved))) == saved
    except ConfigError:
        complete = False
    return name if complete else layout


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


# A history kexp writes holds one short line per epoch: far below this even at the epoch limit.
MAX_HISTORY_BYTES = 64 * 2**20


def _check_histories(folder: Path, prefix: str) -> None:
    """Refuses a `history.csv` a resume would read and rewrite that kexp did not write: too large, or binary."""
    for history in layout.history_files(folder):
        if not history.is_file():
            continue
        name = history.relative_to(folder)
        if history.stat().st_size > MAX_HISTORY_BYTES:
            raise UsageError(f"{prefix}: {name} is larger than {MAX_HISTORY_BYTES // 2**20} MiB; allowed: the "
                             "history kexp wrote (one line per epoch)")
        with open(history, "rb") as handle:
            if b"\0" in handle.read():
                raise UsageError(f"{prefix}: {name} holds NUL bytes, not CSV text; allowed: the history kexp "
                                 "wrote (one line per epoch)")


def _check_history_has_state(folder: Path, fits_with_state: set[str], prefix: str) -> None:
    """Refuses a folder whose logged epochs have no saved state to continue from (its backup/ deleted).

    A fit that started keeps a folder in `backup/` (its state file comes with
    its first completed epoch), so a fit with history rows and no backup
    folder lost its state: retraining it would log its epochs a second time.
    """
    for history in layout.history_files(folder):
        fit = layout.fit_of_log_dir(folder, history.parent)
        if fit in fits_with_state or (layout.backup_root(folder) / fit).is_dir():
            continue
        try:
            rows = [line for line in history.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
        except OSError:
            continue
        if rows:
            raise UsageError(
                f"{prefix}: {history.relative_to(folder)} holds {len(rows)} epochs but backup/{fit} "
                "with their saved state is missing; resuming would train and log them again; "
                "allowed: a run folder with its backup/ as the run left it")


def _first_difference(ours: Any, theirs: Any, key: str = "") -> tuple[str, Any, Any]:
    """Returns the first dotted key where two config dicts differ, with both values."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for k in [*ours, *(k for k in theirs if k not in ours)]:
            if ours.get(k) != theirs.get(k):
                return _first_difference(ours.get(k), theirs.get(k), f"{key}.{k}" if key else k)
    return key or "(config)", ours, theirs


def _cut(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _read_json(path: Path, prefix: str, allowed: str, *, required: bool) -> dict[str, Any]:
    """Reads a run folder's JSON object file; `{}` for a missing one unless `required`."""
    try:
        data = rundir.read_json(path, **({} if required else {"missing": {}}))
    except rundir.CorruptFile as err:
        if err.reason == "missing":
            raise UsageError(f"{prefix}: no {path.name} in it; {allowed}") from None
        raise UsageError(f"{prefix}: {path.name} is not readable JSON ({err.reason}); {allowed}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{prefix}: {path.name} is not a JSON object; {allowed}")
    return data


def _recording(on_open: Callable[[Path], None] | None) -> Callable[[Path], None] | None:
    """Returns `on_open`, also writing the run folder to the file `RUN_RECORD_ENV` names, when set.

    The variable is taken out of the environment: the first run of the
    process is the one its parent asked for (an experiment that runs others
    must not overwrite the record).
    """
    record = os.environ.pop(RUN_RECORD_ENV, "")
    if not record:
        return on_open

    def opened(run_dir: Path) -> None:
        try:
            rundir.write_json(Path(record), {"run_dir": str(Path(run_dir).absolute())})
        except WriteError as err:
            # The run itself is fine; only its parent will not find it.
            print(f"kexp: warning: {err}", file=sys.stderr)
        if on_open is not None:
            on_open(run_dir)

    return opened


def override_strings(overrides: Mapping[str, Any] | Iterable[str]) -> list[str]:
    """Returns overrides as `key=value` strings, from a mapping (`{"train.epochs": 3}`) or strings.

    Raises:
        TypeError: For a bare string (it would be read character by character)
            or items that are not `key=value` strings.
    """
    if isinstance(overrides, (str, bytes)):
        raise TypeError(f"overrides: received the string {shown(overrides)}; allowed: a list of key=value "
                        'strings (["train.epochs=3"]) or a mapping ({"train.epochs": 3})')
    if isinstance(overrides, Mapping):
        return [f"{key}={_as_text(value)}" for key, value in overrides.items()]
    items = list(overrides)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"overrides: received the item {shown(item)}; allowed: key=value strings")
    return items


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(_as_text(v) for v in value)
    return str(value)


def run_experiment(
    name: str,
    overrides: Mapping[str, Any] | Iterable[str] = (),
    *,
    logdir: str | Path = "logs",
    strategy: str = "auto",
    verbose: int | str = "auto",
    resume: str | Path | None = None,
    on_open: Callable[[Path], None] | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Trains a named experiment and returns its `results.json` content.

    Example: `kexp.run("lstm_sine", {"train.epochs": 5})["metrics"]["rollout_mse"]`.

    Args:
        name: Experiment name (`kexp list`).
        overrides: `section.key=value` strings, or a mapping of
            `section.key` to values (`{"train.epochs": 3}`).
        logdir: Root folder of runs; the run goes to `logdir/name/RUN_ID`.
        strategy: `auto`, `default`, `one_device`, `mirrored` or `multi_worker`.
        verbose: Keras verbosity (0 silent, 1 progress bar, 2 a line per epoch).
        resume: A run folder of this experiment to continue, with its saved
            config (no `overrides` then); every fit restarts from its last
            completed epoch.
        on_open: Called with the run folder as soon as it exists.
        label: The readable end of the run folder's name (`--name`); by
            default the settings that differ from the defaults
            (`20261204-101500-units=128`), or `defaults`.

    Returns:
        The results dict, with `run_dir` added.

    Raises:
        UsageError: Bad name, override, logdir or data request (no run folder
            is left behind).
    """
    overrides = override_strings(overrides)
    module = registry.load(name)
    config = request_config(name, overrides, resume)
    check_strategy_name(strategy)  # before TensorFlow loads: bad input fails fast
    if label is None:
        label = names.run_label(hparams.differences(to_dict(config), to_dict(module.CONFIG)))
    else:
        names.check_name(label, "--name")
    from kexp.engine.quiet import import_tensorflow_quietly

    import_tensorflow_quietly(library=True)
    from kexp.engine.session import open_run

    with open_run(name, logdir=logdir, strategy=strategy, config=config, verbose=verbose,
                  resume=resume, on_open=_recording(on_open), label=label) as harness:
        harness.record(**_run_experiment(module, name, config, harness))
    return harness.results


def _run_experiment(module: Any, name: str, config: ExperimentConfig, harness: Any) -> dict[str, float]:
    """Returns the experiment's metrics; data too large to hold, before any fit, is bad input refused in one line.

    Each setting has its limits, but two within theirs can still ask for more memory together than the
    machine has (`rnn_memory`'s `data.length` times `data.train_size`): numpy then raises `MemoryError`
    while the data is made. Refused as a `UsageError`, the new run folder is removed and the command
    exits 2. Once a fit has started the run failed instead (its folder stays, status `failed`).
    """
    try:
        return module.run(config, harness)
    except MemoryError as err:
        if harness.fit_settings:
            raise
        raise UsageError(f"{name}: its settings need more memory than this machine has ({str(err) or 'MemoryError'}); "
                         f"allowed: smaller data settings (kexp show {name} lists them and their limits)") from None
