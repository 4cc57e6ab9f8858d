"""Internal: the link between a `kexp run` process and the Optuna trial a `kexp search` runs it for.

The search writes a small JSON file per trial (`trials/trial-NNNN.json` in
its folder) and names it in `KEXP_TRIAL` when it starts the trial's
`kexp run`. The run reads it once (`current`), reports its per-epoch loss to
the trial and asks the study's pruner after every epoch
(`kexp.engine.callbacks.ReportToTrial`), and records the study and trial in `results.json`.
Processes share nothing else: the study's storage (an SQLite file or a
database server) is where Optuna keeps the trial. No TensorFlow here.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

TRIAL_ENV = "KEXP_TRIAL"

# The pruners `kexp search --prune` offers: Optuna's median rule after a few finished trials, from the
# second epoch on (a first epoch says little about where a setting ends up), or none.
PRUNERS = ("median", "none")
MEDIAN_STARTUP_TRIALS = 3
MEDIAN_WARMUP_STEPS = 1


def make_pruner(name: str) -> Any:
    """Returns the Optuna pruner `--prune NAME` names (both sides of a trial build the same one)."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_STEPS)
    return optuna.pruners.NopPruner()


def open_storage(url: str) -> Any:
    """Returns Optuna's storage for `url` (SQLite waits up to a minute for a lock other processes hold)."""
    import optuna

    import random
    import time

    import sqlalchemy.exc

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as err:
            # Processes that start together on an empty database all create Optuna's tables; all but one
            # collide on the catalog (PostgreSQL's pg_type: an integrity error) or on a table another made
            # between Optuna's check and its CREATE (42P07 duplicate_table, 42710 duplicate_object; SQLite's
            # "table studies already exists", an operational error). Once one has made them, the others find them.
            collided = isinstance(err, sqlalchemy.exc.IntegrityError) or (
                (getattr(err.orig, "sqlstate", None) or getattr(err.orig, "pgcode", None)) in ("42P07", "42710")) or (
                isinstance(err, sqlalchemy.exc.OperationalError) and "already exists" in str(err.orig))
            if attempt == 5 or not collided:
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def shown_storage(url: str) -> str:
    """Returns a storage URL with its password replaced by `***` (for files, messages and results.json)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


class TrialLink:
    """The trial a run belongs to: its study, storage, number, pruner, and the sign that makes loss its objective.

    Args:
        info: The trial file's content: `storage`, `study`, `trial_id`,
            `number`, `prune` (a `PRUNERS` name) and `sign` (1 when the
            study minimizes, -1 when it maximizes: a lower loss is then a
            higher reported value).
    """

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self._trial: Any = None
        self.steps_before: dict[str, int] = {}  # each fit's first step: the epochs of the fits before it
        self.next_step = 0

    def record(self) -> dict[str, Any]:
        """Returns what `results.json` records under `search`: the study, its storage (no password), the trial."""
        return {"study": self.info["study"], "storage": shown_storage(self.info["storage"]),
                "trial": self.info["number"]}

    def report(self, fit: str, epochs: int, epoch: int, loss: float) -> bool:
        """Reports a fit's epoch loss to the trial and returns whether the study's pruner stops the trial.

        Args:
            fit: The fit's name; a run's fits count their epochs one after another.
            epochs: The fit's planned epochs.
            epoch: The epoch that ended (from 0).
            loss: Its validation loss (training loss for a fit without validation).
        """
        if not self.info.get("report", True):
            return False  # a later seed's run: the trial's first run alone reports its epochs
        if self._trial is None:
            import optuna

            study = optuna.load_study(study_name=self.info["study"], storage=open_storage(self.info["storage"]),
                                      pruner=make_pruner(self.info["prune"]))
            self._trial = optuna.trial.Trial(study, self.info["trial_id"])
        if fit not in self.steps_before:
            self.steps_before[fit] = self.next_step
            self.next_step += epochs
        value = self.info["sign"] * loss
        # A non-finite loss is the worst value in the study's direction (Optuna's pruners skip NaN).
        worst = self.info["sign"] * float("inf")
        self._trial.report(value if math.isfinite(value) else worst, self.steps_before[fit] + epoch)
        return self.info["prune"] != "none" and self._trial.should_prune()


_current: list[TrialLink | None] = []


def current() -> TrialLink | None:
    """Returns this process's trial link, read once from the file `KEXP_TRIAL` names; None outside a search.

    The variable is taken out of the environment, so that processes this
    run starts are not taken for the trial.

    Raises:
        RuntimeError: A trial file that is not one `kexp search` wrote.
    """
    if not _current:
        path = os.environ.pop(TRIAL_ENV, "")
        link = None
        if path:
            with open(path, encoding="utf-8") as file:
                info = json.load(file)
            keys = {"storage", "study", "trial_id", "number", "prune", "sign"}
            if not isinstance(info, dict) or not keys <= set(info) or info["prune"] not in PRUNERS:
                raise RuntimeError(f"{TRIAL_ENV}={path}: not a trial file kexp search wrote")
            link = TrialLink(info)
        _current.append(link)
    return _current[0]
