"""kexp: classic deep-learning experiments on Keras 3 / TensorFlow, trained by one shared harness.

    import kexp
    results = kexp.run("lstm_sine", {"train.epochs": 5})     # a named experiment
    with kexp.open_run("mine") as harness:                    # your own model
        model = harness.fit(build_model, (x, y), loss="mse")
    model = kexp.load_model(harness.run_dir)                  # what it trained

The public API is `__all__` here and in `kexp.models`, `kexp.data` and
`kexp.study`; an experiment file imports from these four alone (the author
API, docs/library.md "Adding your own experiments"). Other modules are internal. Importing `kexp` does not import TensorFlow: the names that need
it (`open_run`, `load_model`, `Harness`, `models`) load it on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from kexp.config import ConfigError, ExperimentConfig, ImageDataConfig, TrainConfig, param
from kexp.errors import UsageError

__version__ = "0.1.0"
__all__ = [
    "run", "open_run", "load_model", "Harness", "TrainConfig", "ExperimentConfig", "ImageDataConfig", "param",
    "ConfigError", "UsageError", "models", "__version__",
]

# Loaded on first use: each pulls in TensorFlow (`run` NumPy only; kept out so that `python -m kexp`
# starts, and installs its signal handlers, in milliseconds).
_LAZY = {
    "run": ("kexp.runner", "run_experiment"),
    "open_run": ("kexp.engine.session", "open_run"),
    "load_model": ("kexp.store.saving", "load_model"),
    "Harness": ("kexp.engine.harness", "Harness"),
    "models": ("kexp.models", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'kexp' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    if name != "run":  # `run` imports TensorFlow only once its input is checked
        from kexp.engine.quiet import import_tensorflow_quietly

        import_tensorflow_quietly(library=True)
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
