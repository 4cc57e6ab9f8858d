"""The run folder's layout: the names of its fit folders and the rules that place a fit's files.

    RUN_DIR/config.json, results.json                 the run (`kexp.store.rundir`, `kexp.engine.session`)
    RUN_DIR/events.out.tfevents.*                     the run's own TensorBoard points: HParams session,
                                                      final metrics, figures and text (`kexp.engine.outputs`)
    RUN_DIR/history.csv, train/, validation/          the first unnamed fit's logs (fit `model`)
    RUN_DIR/FIT/history.csv, FIT/train/, ...          every other fit's logs
    RUN_DIR/backup/FIT/state.npz                      each fit's per-epoch state (`--resume`)
    RUN_DIR/models/FIT.keras                          each fit's trained model (`kexp.store.saving`)
    RUN_DIR/plots/                                    figures and text, in runs written before they moved
                                                      to the root (`OLD_PLOTS`)

Code that needs a fit's folder, its history or the backup folder asks here, so that those names are spelt
once (`config.json` and `results.json` are still named where they are read and written).
"""

from __future__ import annotations

from pathlib import Path

BACKUP = "backup"
HISTORY = "history.csv"
MODELS = "models"
# Runs written before issue 25 keep their TensorBoard figures and text in this folder, a TensorBoard run
# of its own; new runs write them at the root, so that a run with one fit shows as three runs, not four.
OLD_PLOTS = "plots"
FIRST_FIT = "model"  # the name of a run's first unnamed fit, which logs at the folder's root


def backup_root(run_dir: Path) -> Path:
    """Returns the folder holding each fit's state folder."""
    return Path(run_dir) / BACKUP


def fit_log_dir(run_dir: Path, fit: str) -> Path:
    """Returns where fit FIT's TensorBoard logs and history go: the run folder for `model`, else `RUN_DIR/FIT`."""
    return Path(run_dir) if fit == FIRST_FIT else Path(run_dir) / fit


def fit_of_log_dir(run_dir: Path, log_dir: Path) -> str:
    """Returns the fit whose logs `log_dir` holds (the inverse of `fit_log_dir`)."""
    return FIRST_FIT if Path(log_dir) == Path(run_dir) else Path(log_dir).name


def history_files(run_dir: Path) -> list[Path]:
    """Returns the paths every fit's `history.csv` has in the run folder (the first fit's, then named fits'), sorted."""
    folder = Path(run_dir)
    return sorted([folder / HISTORY, *folder.glob(f"*/{HISTORY}")])
