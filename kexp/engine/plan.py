"""A fit's plan: everything decided before it trains, fixed for the fit and passed explicitly.

`Harness.fit` makes one per call (`make_plan`) once the data is counted; the
optimizer's schedule, the callbacks and the Keras `fit` call read it instead
of state an earlier fit left on the harness.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from kexp.config import ExperimentConfig, TrainConfig, validate
from kexp.errors import UsageError
from kexp.store import checkpoint
from kexp.store import layout

# The train settings a fit reads when it starts, which `Harness.overrides` may change for some fits.
PER_FIT_SETTINGS = ("epochs", "batch_size", "learning_rate", "optimizer", "lr_schedule", "steps_per_execution",
                    "jit_compile", "fuse_steps", "profile_steps")


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """One fit's name, length and folders, and the state a resumed run continues it from.

    Attributes:
        name: The fit's name in the run (`model`, `model_2`, or the caller's `name`).
        epochs: Epochs the fit trains to.
        initial_epoch: The first epoch still to train (0, or the epochs a resumed state holds).
        steps_per_epoch: Optimizer steps per epoch, None where the data does not say (a generator).
        validation_freq: Validate every this many epochs.
        pad: Whether batches are padded to their longest example.
        streamed: Whether batches come from the caller's stream (a PyDataset or a
            generator), in whatever shapes it makes.
        log_dir: Where its TensorBoard logs and history go: the run folder for
            the first unnamed fit, else `RUN_DIR/NAME`.
        backup_dir: Where its state file is read from and (on the chief) written to.
        state: The saved state a resumed run restores, or None.
    """

    name: str
    epochs: int
    initial_epoch: int
    steps_per_epoch: int | None
    validation_freq: int
    pad: bool
    streamed: bool
    log_dir: Path
    backup_dir: Path
    state: checkpoint.TrainingState | None

    @property
    def total_steps(self) -> int | None:
        """Optimizer steps over all its epochs (what a cosine schedule decays over); None if unknown."""
        return self.steps_per_epoch * self.epochs if self.steps_per_epoch else None

    @property
    def shapes_may_vary(self) -> bool:
        """Whether batches may differ in shape (padded, or a stream's), so each shape compiles on its own."""
        return self.pad or self.streamed

    @property
    def finished_before(self) -> bool:
        """Whether a resumed run had trained this fit to its end: nothing is left to train or write."""
        return self.state is not None and self.initial_epoch >= self.epochs


def make_plan(run_dir: Path, backup_root: Path, name: str, *, epochs: int, steps_per_epoch: int | None,
              validation_freq: int, pad: bool, streamed: bool = False) -> FitPlan:
    """Returns a fit's plan, reading the state a resumed run left for it.

    Args:
        run_dir: The run folder.
        backup_root: Where fits' state folders are (`RUN_DIR/backup`, or the chief's on other workers).
        name: The fit's name in the run.
        epochs: Epochs it trains to.
        steps_per_epoch: Optimizer steps per epoch, if known.
        validation_freq: Validate every this many epochs.
        pad: Whether batches are padded.
        streamed: Whether batches come from the caller's stream.

    Raises:
        UsageError: For a state file that is not kexp's or is torn (`kexp.store.checkpoint.load`).
    """
    backup_dir = backup_root / name
    path = checkpoint.state_path(backup_dir)
    state = checkpoint.load(path) if path.exists() else None
    return FitPlan(
        name=name, epochs=epochs, initial_epoch=min(state.epochs_done, epochs) if state else 0,
        steps_per_epoch=steps_per_epoch, validation_freq=validation_freq, pad=pad, streamed=streamed,
        log_dir=layout.fit_log_dir(run_dir, name), backup_dir=backup_dir, state=state)


def overridden(configured: TrainConfig, changes: Mapping[str, Any]) -> TrainConfig:
    """Returns the train settings with `Harness.overrides`' changes, checked against each field's limits.

    Raises:
        UsageError: For a name not in `PER_FIT_SETTINGS` or a value out of its limits.
    """
    unknown = sorted(set(changes) - set(PER_FIT_SETTINGS))
    if unknown:
        # The others (seed, shuffling, precision, ...) are fixed when the run opens.
        raise UsageError(f"Harness.overrides: received {', '.join(unknown)}; allowed: the settings each fit "
                         f"reads, {', '.join(PER_FIT_SETTINGS)}")
    changed = dataclasses.replace(configured, **changes)
    validate(ExperimentConfig(data=None, model=None, train=changed))
    return changed
