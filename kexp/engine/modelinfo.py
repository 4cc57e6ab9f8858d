"""Internal: what a trained model is, for `results.json` and TensorBoard: optimizers, loss, size, summary."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from kexp.store import checkpoint


def describe_training(model: keras.Model) -> dict[str, Any]:
    """Returns what trained a model: its optimizers (class, learning rate or schedule, clipping), loss, parameters."""
    optimizers = {}
    for attr, opt in checkpoint.optimizers_of(model).items():
        try:
            lr = opt.get_config().get("learning_rate")
        except Exception as err:  # a learning rate Keras cannot serialize (a lambda, say)
            lr = f"not serializable ({type(err).__name__})"
        optimizers[attr] = {"class": type(opt).__name__,
                            "learning_rate": float(f"{lr:.7g}") if isinstance(lr, (int, float)) else
                            lr if isinstance(lr, dict) else str(lr)}
        # Gradient clipping changes what trained; record it where set.
        for clip in ("clipnorm", "global_clipnorm", "clipvalue"):
            if getattr(opt, clip, None) is not None:
                optimizers[attr][clip] = float(getattr(opt, clip))
    return {"optimizers": optimizers, "loss": _loss_name(getattr(model, "loss", None)),
            "params": count_params(model)}


def count_params(model: keras.Model) -> int:
    """Returns the model's number of weights, as `Model.count_params` counts them.

    Works on a model Keras never marked built: a subclassed model whose own
    `train_step` calls its sub-models but never `self(x)` (Keras' VAE
    example) has built weights, yet `count_params` refuses it.
    """
    return int(sum(math.prod(w.shape) for w in model.weights))


def _loss_name(loss: Any) -> Any:
    """Returns a loss as JSON: its name, or the names of a multi-output model's losses."""
    if loss is None or isinstance(loss, str):
        return loss
    if isinstance(loss, dict):
        return {key: _loss_name(value) for key, value in loss.items()}
    if isinstance(loss, (list, tuple)):
        return [_loss_name(value) for value in loss]
    return getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__


def summary_markdown(model: keras.Model) -> str:
    """Returns `model.summary()` as a Markdown code block (TensorBoard's Text tab)."""
    lines: list[str] = []
    try:
        model.summary(print_fn=lambda line, **_: lines.append(line))
    except ValueError as err:  # a subclassed model not built yet
        lines = [f"(no summary before the model is built: {err})"]
    return "```\n" + "\n".join(lines) + "\n```"


def finite_weights(model: keras.Model) -> bool:
    """Returns whether every floating-point weight of `model` is finite."""
    return all(bool(np.isfinite(w).all()) for w in model.get_weights() if np.issubdtype(w.dtype, np.floating))
