"""Internal: a `kexp search`'s Optuna study: its objective, sampler and storage, created or joined.

A study records what it searches (`kexp` user attribute: the experiment,
space, fixed settings, metric, direction, seeds), so that a process joining
it with other settings is refused before it runs anything. No TensorFlow is
imported here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kexp.config_values import shown
from kexp.engine.trial_link import open_storage, shown_storage
from kexp.errors import UsageError

SAMPLERS = ("tpe", "random")
# TPE models the space only after some random trials; Optuna's 10 would leave short searches purely random.
TPE_STARTUP_TRIALS = 5
_MINIMIZING = ("<=", "<")
_MAXIMIZING = (">=", ">")


@dataclasses.dataclass(frozen=True)
class Objective:
    """What a search optimizes: a metric of `results.json` and a direction (`minimize` or `maximize`)."""

    metric: str
    direction: str

    @property
    def sign(self) -> int:
        """1 when the study minimizes, -1 when it maximizes (the sign that turns a loss into its objective)."""
        return 1 if self.direction == "minimize" else -1


def objective(name: str, metric: str | None) -> Objective:
    """Returns the objective `--metric M[:min|:max]` names; without one, the experiment's first bar metric.

    Raises:
        UsageError: No metric and no bar, an empty or malformed metric, or a
            metric whose direction its bar does not say (`==`, a range)
            given without `:min` or `:max`.
    """
    from kexp.cli.sweep_points import declared_bars

    bars = declared_bars(name)
    if metric is None:
        if not bars:
            raise UsageError(f"search: {name} declares no quality bar; allowed: --metric NAME:min or NAME:max")
        metric = next(iter(bars))
    key, _, way = metric.partition(":")
    if not key.isidentifier() or way not in ("", "min", "max"):
        raise UsageError(f"--metric {shown(metric)}: expected NAME, NAME:min or NAME:max, e.g. "
                         f"--metric {next(iter(bars), 'test_loss')}:min")
    if way:
        return Objective(key, "minimize" if way == "min" else "maximize")
    op = bars.get(key, ("",))[0]
    if op in _MINIMIZING or op in _MAXIMIZING:
        return Objective(key, "minimize" if op in _MINIMIZING else "maximize")
    if key in bars:
        raise UsageError(f"--metric {shown(metric)}: its bar ({op}) says no direction; allowed: --metric {key}:min "
                         f"or --metric {key}:max")
    raise UsageError(f"--metric {shown(metric)}: not a quality-bar metric of {name} ({', '.join(bars) or 'none'}); "
                     f"allowed: one of those, or another metric its runs report with a direction: --metric "
                     f"{key}:min or {key}:max")


def sampler(name: str, seed: int | None) -> Any:
    """Returns the Optuna sampler `--sampler NAME` names (TPE with the constant liar: parallel trials differ)."""
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=TPE_STARTUP_TRIALS, constant_liar=True, seed=seed)


def spec_of(search: dict[str, Any]) -> dict[str, Any]:
    """Returns what a study searches, as its `kexp` attribute records it (from a `search.json`)."""
    return {key: search[key] for key in ("experiment", "space", "overrides", "metric", "direction", "seeds")}


def open_study(search: dict[str, Any], storage_url: str, *, create: bool) -> Any:
    """Returns the search's Optuna study, created (or joined, when it exists and searches the same).

    Args:
        search: The search's record (`search.json`).
        storage_url: The storage URL, password included.
        create: Whether the study may be created (a resumed search's must exist).

    Raises:
        UsageError: An unreachable or unusable storage, a missing study on
            resume, or an existing study that searches something else.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    where = f"--storage {shown(shown_storage(storage_url), 200)}"
    try:
        storage = open_storage(storage_url)
        if create:
            study = optuna.create_study(study_name=search["study"], storage=storage, load_if_exists=True,
                                        direction=search["direction"],
                                        sampler=sampler(search["sampler"], search.get("sampler_seed")))
        else:
            study = optuna.load_study(study_name=search["study"], storage=storage,
                                      sampler=sampler(search["sampler"], search.get("sampler_seed")))
    except KeyError:
        raise UsageError(f"{where}: no study {search['study']!r} there; allowed: the storage the search used") from None
    except Exception as err:  # SQLAlchemy's and drivers' errors: a bad URL, a server not reachable, no driver
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"{where}: cannot open the study ({reason[:200]}); allowed: a URL Optuna accepts, "
                         "e.g. sqlite:///PATH/study.db or postgresql://USER:PASSWORD@HOST/DB") from None
    _check_same(study, search)
    return study


def _check_same(study: Any, search: dict[str, Any]) -> None:
    """Records the search's spec on a new study; refuses to join one that searches something else."""
    ours = spec_of(search)
    theirs = study.user_attrs.get("kexp")
    if theirs is None:
        if study.trials:
            raise UsageError(f"--study {search['study']!r}: a study kexp did not make (it has trials and no kexp "
                             "record); allowed: a new study name, or one a kexp search made")
        study.set_user_attr("kexp", ours)
        return
    if study.direction.name.lower() != search["direction"] or theirs != ours:
        differing = [key for key in ours if ours[key] != theirs.get(key)] or ["direction"]
        key = differing[0]
        raise UsageError(f"--study {search['study']!r}: the study searches {key} {shown(theirs.get(key), 160)}, "
                         f"not {shown(ours[key], 160)}; allowed: the same experiment, --space, --set, --metric and "
                         "--seeds as the study, or a new --study name")

