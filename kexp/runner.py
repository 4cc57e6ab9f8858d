"""Runs a named experiment: registry -> config -> harness -> run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from kexp import registry
from kexp.config import ExperimentConfig, apply_overrides
from kexp.strategy import check_name


def resolve(name: str, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Returns an experiment's default config with `overrides` applied.

    Raises:
        UsageError: For an unknown experiment or a bad override.
    """
    module = registry.load(name)
    return apply_overrides(module.CONFIG, overrides)


def run_experiment(
    name: str,
    overrides: Sequence[str] = (),
    *,
    logdir: str | Path = "logs",
    strategy: str = "auto",
    verbose: int | str = "auto",
) -> dict[str, Any]:
    """Trains a named experiment and returns its `results.json` content.

    Example: `kexp.run("lstm_sine", ["train.epochs=5"])["metrics"]["rollout_mse"]`.

    Args:
        name: Experiment name (`kexp list`).
        overrides: `section.key=value` strings.
        logdir: Root folder of runs; the run goes to `logdir/name/RUN_ID`.
        strategy: `auto`, `default`, `one_device`, `mirrored` or `multi_worker`.
        verbose: Keras verbosity (0 silent, 1 progress bar, 2 a line per epoch).

    Returns:
        The results dict, with `run_dir` added.

    Raises:
        UsageError: Bad name, override, logdir or data request (no run folder
            is left behind).
    """
    module = registry.load(name)
    config = apply_overrides(module.CONFIG, overrides)
    check_name(strategy)  # before TensorFlow loads: bad input fails fast
    from kexp.harness import open_run

    with open_run(name, logdir=logdir, strategy=strategy, config=config, verbose=verbose) as harness:
        harness.record(**module.run(config, harness))
    return harness.results
