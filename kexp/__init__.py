"""kexp: classic deep-learning experiments on Keras 3 / TensorFlow.

    import kexp
    results = kexp.run("lstm_sine", ["train.epochs=5"])   # a named experiment
    with kexp.open_run("mine") as run:                    # your own model
        model = run.fit(build_model, (x, y), loss="mse")

Importing `kexp` does not import TensorFlow; `run` and `open_run` do, on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["run", "open_run", "__version__"]


def run(name: str, overrides: Any = (), **kwargs: Any) -> dict:
    """Trains a named experiment; see `kexp.runner.run_experiment`."""
    from kexp.runner import run_experiment

    return run_experiment(name, overrides, **kwargs)


def open_run(name: str, **kwargs: Any) -> Any:
    """Opens a run for your own model; see `kexp.session.open_run`."""
    from kexp.session import open_run as _open_run

    return _open_run(name, **kwargs)
