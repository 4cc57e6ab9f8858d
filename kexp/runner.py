"""Internal: runs a named experiment: registry -> config -> harness -> run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from kexp import checkpoint, registry
from kexp.config import ExperimentConfig, _shown, apply_overrides, from_dict
from kexp.errors import ConfigError, UsageError
from kexp.strategy import check_name


# The line `kexp run` prints first once its folder exists (kexp sweep reads it); its last is `run_dir: PATH`.
RUN_FOLDER_LINE = "kexp: run folder "


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
        raise UsageError(f"--resume continues with the run's saved config; received --set {_shown(overrides[0])}; "
                         "allowed: --resume without --set")
    return resume_config(name, resume)


def resume_config(name: str, run_dir: str | Path) -> ExperimentConfig:
    """Checks that `run_dir` is an unfinished run of experiment `name` and returns its config.

    Needs no TensorFlow: the CLI calls it so that a bad folder fails at once.

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
    prefix = f"--resume {_shown(str(run_dir), 200)}"
    allowed = f"allowed: a run folder of {name} (LOGDIR/{name}/RUN_ID) that did not finish"
    if not folder.is_dir():
        raise UsageError(f"{prefix}: not a folder; {allowed}")
    results = _read_json(folder / "results.json", prefix, allowed, required=False)
    if not results and not (folder / "config.json").exists():
        # Not a run at all (its parent's name says nothing then).
        raise UsageError(f"{prefix}: no config.json in it; {allowed}")
    states = {}
    for state_file in sorted(folder.glob(f"backup/*/{checkpoint.STATE_FILE}")):
        try:
            states[state_file.parent.name] = checkpoint.load(state_file)  # a torn state fails here, before training
        except UsageError as err:
            raise UsageError(f"{prefix}: {err}; {allowed}") from None
    trained_under = [state.run for state in states.values() if state.run]
    # The name a state was trained under survives a moved or linked folder.
    experiment = (results.get("experiment") if results else None) or (
        trained_under[0].get("experiment") if trained_under else folder.absolute().parent.name)
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
    _check_history_has_state(folder, set(states), prefix)
    return config


def _check_history_has_state(folder: Path, fits_with_state: set[str], prefix: str) -> None:
    """Refuses a folder whose logged epochs have no saved state to continue from (its backup/ deleted).

    A fit that started keeps a folder in `backup/` (its state file comes with
    its first completed epoch), so a fit with history rows and no backup
    folder lost its state: retraining it would log its epochs a second time.
    """
    for history in sorted([folder / "history.csv", *folder.glob("*/history.csv")]):
        fit = "model" if history.parent == folder else history.parent.name
        if fit in fits_with_state or (folder / "backup" / fit).is_dir():
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
    if not path.exists():
        if required:
            raise UsageError(f"{prefix}: no {path.name} in it; {allowed}")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"{prefix}: {path.name} is not readable JSON ({err}); {allowed}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{prefix}: {path.name} is not a JSON object; {allowed}")
    return data


def override_strings(overrides: Mapping[str, Any] | Iterable[str]) -> list[str]:
    """Returns overrides as `key=value` strings, from a mapping (`{"train.epochs": 3}`) or strings.

    Raises:
        TypeError: For a bare string (it would be read character by character)
            or items that are not `key=value` strings.
    """
    if isinstance(overrides, (str, bytes)):
        raise TypeError(f"overrides: received the string {_shown(overrides)}; allowed: a list of key=value "
                        'strings (["train.epochs=3"]) or a mapping ({"train.epochs": 3})')
    if isinstance(overrides, Mapping):
        return [f"{key}={_as_text(value)}" for key, value in overrides.items()]
    items = list(overrides)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"overrides: received the item {_shown(item)}; allowed: key=value strings")
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

    Returns:
        The results dict, with `run_dir` added.

    Raises:
        UsageError: Bad name, override, logdir or data request (no run folder
            is left behind).
    """
    overrides = override_strings(overrides)
    module = registry.load(name)
    config = request_config(name, overrides, resume)
    check_name(strategy)  # before TensorFlow loads: bad input fails fast
    from kexp.session import open_run

    with open_run(name, logdir=logdir, strategy=strategy, config=config, verbose=verbose,
                  resume=resume, on_open=on_open) as harness:
        harness.record(**module.run(config, harness))
    return harness.results
