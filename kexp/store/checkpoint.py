"""Internal: training state on disk: what `--resume` continues from.

Each fit of a run keeps one file, `RUN_DIR/backup/FIT/state.npz`, rewritten
at the end of every completed epoch. It holds the values of the model's
variables (trainable, non-trainable and random-seed state) and of every
built optimizer the model carries (a GAN has two), plus a small JSON header:
the epochs completed and the names and shapes it was saved with.

The file is written to a temp name and renamed, so a process killed at any
moment leaves either the previous epoch's state or the new one, never a
torn file. Saving is a copy of variable values into NumPy and one `np.savez`:
about 1 ms for a tiny net where `model.save_weights` (HDF5) took 15 ms per
epoch (measured in this repository, 2-core CPU), which on 30 ms epochs was
the difference between overhead and math.

This module imports NumPy only at load time; Keras is touched only through
the model objects passed in, so the CLI can validate a run folder before
TensorFlow loads.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kexp.errors import UsageError, WriteError
from kexp.store.rundir import fsync_dir, parse_json, regular_file_problem

STATE_FILE = "state.npz"
_TEMP_PREFIX = ".state-"
_FORMAT = 1
_HEADER = "__kexp_state__"


@dataclass
class TrainingState:
    """A fit's saved state.

    Attributes:
        epochs_done: Epochs completed when it was saved.
        arrays: Variable values by key (`model/INDEX` or `optimizer:ATTR/INDEX`).
        names: Variable path of each key, as saved (for error messages).
        run: What the state was trained under: `{"experiment": NAME,
            "config": CONFIG_DICT}` (None in states of library runs that
            passed no config); a resume compares it with `config.json`.
    """

    epochs_done: int
    arrays: dict[str, np.ndarray]
    names: dict[str, str]
    run: dict[str, Any] | None = None


def state_path(backup_dir: Path) -> Path:
    """Returns the state file inside a fit's backup folder."""
    return Path(backup_dir) / STATE_FILE


def optimizers_of(model: Any) -> dict[str, Any]:
    """Returns the model's built optimizers by attribute name, `optimizer` first."""
    found: dict[str, Any] = {}
    seen: set[int] = set()
    candidates = [("optimizer", getattr(model, "optimizer", None))]
    candidates += sorted((k, v) for k, v in vars(model).items() if k != "optimizer" and not k.startswith("__"))
    for attr, value in candidates:
        if value is None or id(value) in seen or not hasattr(value, "apply_gradients"):
            continue
        if not getattr(value, "built", False):
            continue
        seen.add(id(value))
        found[attr.lstrip("_")] = value
    return found


def _variables(model: Any) -> dict[str, Any]:
    variables = {f"model/{i}": v for i, v in enumerate(model.variables)}
    for attr, optimizer in optimizers_of(model).items():
        variables.update({f"optimizer:{attr}/{i}": v for i, v in enumerate(optimizer.variables)})
    return variables


def save(backup_dir: Path, model: Any, epochs_done: int, epochs: int, run: dict[str, Any] | None = None) -> Path:
    """Writes the model's and its optimizers' state atomically and durably.

    The file is fsynced before it is renamed over the old one and the folder
    after, so that a power cut leaves the previous state or the new one.

    Args:
        backup_dir: The fit's backup folder (created if missing).
        model: A built, compiled Keras model.
        epochs_done: Epochs completed.
        epochs: Epochs the fit runs for.
        run: What the run trains under (`TrainingState.run`).

    Returns:
        The state file's path.
    """
    backup_dir = Path(backup_dir)
    backup_dir.mkdir(parents=True, exist_ok=True)
    variables = _variables(model)
    arrays = {key: np.asarray(v.numpy()) for key, v in variables.items()}
    header = {
        "format": _FORMAT,
        "epochs_done": int(epochs_done),
        "epochs": int(epochs),
        "names": {key: str(getattr(v, "path", getattr(v, "name", key))) for key, v in variables.items()},
        "run": run,
    }
    arrays[_HEADER] = np.array(json.dumps(header))
    path = state_path(backup_dir)
    remove_temp_files(backup_dir)
    fd, tmp = tempfile.mkstemp(dir=backup_dir, prefix=_TEMP_PREFIX, suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **arrays)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        fsync_dir(backup_dir)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(path, err) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_temp_files(backup_dir: Path) -> None:
    """Removes temp files that a process killed while saving left in a backup folder."""
    for leftover in Path(backup_dir).glob(f"{_TEMP_PREFIX}*.npz"):
        leftover.unlink(missing_ok=True)


def load(path: Path) -> TrainingState:
    """Reads a state file, checking all of it before a resume acts on any of it.

    Raises:
        UsageError: When the file is not a readable kexp state file: not a
            regular file (a FIFO would block the read), torn, or with a
            header kexp would not have written (an `epochs_done` that is not
            a count within `epochs`, an experiment that is not a name).
    """
    problem = regular_file_problem(path)
    if problem:
        raise UsageError(f"{path} is not a readable kexp training state ({problem})")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        header = parse_json(str(arrays.pop(_HEADER)))
        if not isinstance(header, dict):  # valid JSON, but not the header's object
            raise ValueError(f"header is a JSON {type(header).__name__}, not an object")
        if header.get("format") != _FORMAT:
            raise ValueError(f"format {_cut(header.get('format'))}")
        epochs, epochs_done = header.get("epochs"), header.get("epochs_done")
        if not _is_count(epochs) or not _is_count(epochs_done) or epochs_done > epochs:
            raise ValueError(f"epochs_done {_cut(epochs_done)} of epochs {_cut(epochs)}; "
                             "allowed: whole numbers, 0 <= epochs_done <= epochs")
        names = header.get("names")
        if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
            raise ValueError(f"names {_cut(names)}")
        return TrainingState(epochs_done, arrays, names, _checked_run(header.get("run")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as err:
        raise UsageError(f"{path} is not a readable kexp training state ({err})") from None


def _checked_run(run: Any) -> dict[str, Any] | None:
    """Returns a header's `run` once it has the shape `save` writes; raises ValueError otherwise."""
    if run is None:
        return None
    if not isinstance(run, dict):
        raise ValueError(f"run is a JSON {type(run).__name__}, not an object")
    for key in ("experiment", "fit"):
        if key in run and not isinstance(run[key], str):
            raise ValueError(f"run.{key} {_cut(run[key])}; allowed: a name")
    if run.get("config") is not None and not isinstance(run["config"], dict):
        raise ValueError(f"run.config {_cut(run['config'])}; allowed: a JSON object")
    return run


# More epochs than anyone trains; bounds what a forged header can make a resume do.
_MAX_EPOCHS = 10**9


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_EPOCHS


def _cut(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def restore(model: Any, state: TrainingState, where: str) -> None:
    """Assigns saved values to the model's and its optimizers' variables.

    Optimizers named in the state but not yet built are built first, on the
    model's trainable variables, as `keras.callbacks.BackupAndRestore` does.

    Args:
        model: The freshly built, compiled model of the same experiment.
        state: What `load` returned.
        where: What to name the state by in error messages.

    Raises:
        UsageError: When the saved variables do not match the model's (a
            folder from another experiment or other settings).
    """
    optimizer = getattr(model, "optimizer", None)
    if any(k.startswith("optimizer:optimizer/") for k in state.arrays) and optimizer is not None \
            and not optimizer.built:
        optimizer.build(model.trainable_variables)
    variables = _variables(model)
    missing = sorted(set(state.arrays) ^ set(variables))
    mismatched = [k for k in variables if k in state.arrays and tuple(variables[k].shape) != state.arrays[k].shape]
    if missing or mismatched:
        key = (missing or mismatched)[0]
        saved = f"{state.names.get(key, '(absent)')} {getattr(state.arrays.get(key), 'shape', '')}".strip()
        ours = variables.get(key)
        current = f"{getattr(ours, 'path', '(absent)')} {tuple(ours.shape) if ours is not None else ''}".strip()
        raise UsageError(
            f"{where}: its state does not match this model ({len(state.arrays)} saved variables, "
            f"{len(variables)} in the model; first difference: saved {saved}, model {current}); "
            "allowed: a run folder of the same experiment and config"
        )
    for key, variable in variables.items():
        variable.assign(state.arrays[key])
