"""Trained models of a run: each fit's final model as `RUN_DIR/models/FIT.keras`, and `load_model`.

    import kexp
    model = kexp.load_model("logs/lstm_sine/20261125-101500-a1b2c3")          # the fit named "model"
    gan = kexp.load_model("logs/dcgan_digits/20261125-...", fit="dcgan")       # a GAN, compiled
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from kexp.errors import UsageError, WriteError
from kexp.store.rundir import fsync_dir
from kexp.store import layout

if TYPE_CHECKING:
    import keras

MODELS_DIR = layout.MODELS


def model_path(run_dir: str | os.PathLike, fit: str = "model") -> Path:
    """Returns where a fit's trained model is saved: `RUN_DIR/models/FIT.keras`."""
    return Path(run_dir) / MODELS_DIR / f"{fit}.keras"


def save_fit_model(model: keras.Model, run_dir: str | os.PathLike, fit: str) -> Path:
    """Saves a fit's trained model atomically (temp file, fsync, rename).

    Args:
        model: The trained `keras.Model`.
        run_dir: The run folder.
        fit: The fit's name (`model`, `model_2`, or the name given to `fit`).

    Returns:
        The saved file's path.

    Raises:
        WriteError: When the file cannot be written (names it).
        NotSaveable: When Keras cannot serialize the model; nothing is left on disk.
    """
    path = model_path(run_dir, fit)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for leftover in path.parent.glob(f".{fit}.*.keras"):
            leftover.unlink(missing_ok=True)  # a save killed half-way
        # Keras insists on the `.keras` suffix for the file it writes.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{fit}.", suffix=".keras")
        os.close(fd)
        model.save(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if err.errno is None:
            # Not the disk: Keras could not serialize something (inspect's
            # "could not get source code" for a lambda is an OSError too).
            raise NotSaveable(f"{type(err).__name__}: {err}") from None
        raise WriteError(path, err) from None
    except (TypeError, ValueError, NotImplementedError, AttributeError) as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise NotSaveable(f"{type(err).__name__}: {' '.join(str(err).split())[:200]}") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


class NotSaveable(Exception):
    """Keras cannot serialize this model (a lambda learning rate, an unregistered custom layer, ...)."""


def load_model(run_dir: str | os.PathLike, fit: str = "model", *, compile: bool = True) -> keras.Model:
    """Loads a fit's trained model from a run folder.

    kexp's own model classes (`kexp.models.GAN`) are registered first, so a
    model saved by kexp loads in a fresh process that never imported them.

    Args:
        run_dir: A run folder (`LOGDIR/NAME/RUN_ID`).
        fit: The fit's name: `model` for a run's first unnamed fit, else the
            name it was given (`results.json` lists them under `models`).
        compile: Restore the training configuration (optimizer, loss,
            metrics) as Keras' `load_model` does.

    Returns:
        The `keras.Model` as it was at the end of its fit.

    Raises:
        UsageError: When the run folder holds no model of that fit (the
            message lists those it holds).
    """
    import keras

    import kexp.models  # noqa: F401  registers kexp's serializable classes

    path = model_path(run_dir, fit)
    if not path.is_file():
        saved = sorted(p.stem for p in (Path(run_dir) / MODELS_DIR).glob("*.keras") if not p.name.startswith("."))
        raise UsageError(f"load_model: no model {fit!r} in {str(run_dir)!r}; "
                         f"allowed: {', '.join(saved) if saved else 'none: this run saved no model'}")
    model = keras.models.load_model(path, compile=compile)
    stored = _stored_layer_weights(path)
    loaded = sum(len(layer.weights) for layer in model.layers)
    if loaded < stored:
        # Keras only warns (or says nothing) when a layer of the rebuilt model was never built: its weights
        # stay at their initial values, or absent. A model that looks loaded and is not is refused.
        raise UsageError(
            f"load_model: {str(path)!r} holds {stored} weights but the {type(model).__name__} rebuilt from its "
            f"config has {loaded}: its layers are built lazily (in train_step or on the first call) "
            "and Keras cannot load their weights; allowed: a model whose class builds its layers in __init__ "
            "or implements build(input_shape), as Keras' saving needs")
    return model


def _stored_layer_weights(path: Path) -> int:
    """Returns how many weights of its layers a `.keras` file stores (optimizers' and the model's own variables aside)."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as archive:
        if "model.weights.h5" not in archive.namelist():
            return 0
        names: list[str] = []
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
            weights.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    # `vars/...` at the top are the model's own (a GAN's noise seed); `*optimizer*/...` its optimizers' slots.
    return sum(1 for name in names if not name.startswith("vars/")
               and not any("optimizer" in part for part in name.split("/")))
