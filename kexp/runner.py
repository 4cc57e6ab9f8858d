"""Runs a named experiment: registry -> config -> harness -> run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from kexp import checkpoint, registry
from kexp.config import ExperimentConfig, apply_overrides, from_dict
from kexp.errors import ConfigError, UsageError
from kexp.strategy import check_name


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
        raise UsageError(f"--resume continues with the run's saved config; received --set {overrides[0]!r}; "
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
    prefix = f"--resume {str(run_dir)!r}"
    allowed = f"allowed: a run folder of {name} (LOGDIR/{name}/RUN_ID) that did not finish"
    if not folder.is_dir():
        raise UsageError(f"{prefix}: not a folder; {allowed}")
    results = _read_json(folder / "results.json", prefix, allowed, required=False)
    experiment = results.get("experiment") if results else folder.absolute().parent.name
    if experiment != name:
        raise UsageError(f"{prefix}: a run of {experiment!r}, not {name!r}; {allowed}")
    if results and results.get("status") == "ok":
        raise UsageError(f"{prefix}: this run finished (status ok); nothing to resume; {allowed}")
    saved = _read_json(folder / "config.json", prefix, allowed, required=True)
    try:
        config = from_dict(module.CONFIG, saved)
    except ConfigError as err:
        raise UsageError(f"{prefix}: config.json does not fit experiment {name!r} ({err}); {allowed}") from None
    for state in sorted(folder.glob(f"backup/*/{checkpoint.STATE_FILE}")):
        try:
            checkpoint.load(state)  # a torn state file fails here, before training
        except UsageError as err:
            raise UsageError(f"{prefix}: {err}; {allowed}") from None
    return config


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


def run_experiment(
    name: str,
    overrides: Sequence[str] = (),
    *,
    logdir: str | Path = "logs",
    strategy: str = "auto",
    verbose: int | str = "auto",
    resume: str | Path | None = None,
) -> dict[str, Any]:
    """Trains a named experiment and returns its `results.json` content.

    Example: `kexp.run("lstm_sine", ["train.epochs=5"])["metrics"]["rollout_mse"]`.

    Args:
        name: Experiment name (`kexp list`).
        overrides: `section.key=value` strings.
        logdir: Root folder of runs; the run goes to `logdir/name/RUN_ID`.
        strategy: `auto`, `default`, `one_device`, `mirrored` or `multi_worker`.
        verbose: Keras verbosity (0 silent, 1 progress bar, 2 a line per epoch).
        resume: A run folder of this experiment to continue, with its saved
            config (no `overrides` then); every fit restarts from its last
            completed epoch.

    Returns:
        The results dict, with `run_dir` added.

    Raises:
        UsageError: Bad name, override, logdir or data request (no run folder
            is left behind).
    """
    module = registry.load(name)
    config = request_config(name, overrides, resume)
    check_name(strategy)  # before TensorFlow loads: bad input fails fast
    from kexp.harness import open_run

    with open_run(name, logdir=logdir, strategy=strategy, config=config, verbose=verbose,
                  resume=resume) as harness:
        harness.record(**module.run(config, harness))
    return harness.results
