"""Internal: a lazily built model's variables made before a saved state is restored into it.

A Sequential model without an `Input`, or a subclassed model whose own
`train_step` calls its sub-layers, gets its variables (and its optimizer's)
only when Keras traces the first training step. A resumed fit must restore
its state before that step, into variables that do not exist yet. Keras'
own build from a symbolic batch (`Model.build`, `_symbolic_build`) needs a
`call` method that such models may not have, so the harness runs one real
training step on one batch instead: it creates every variable, and the
restore that follows overwrites every value it touched (weights, optimizer
slots and iterations, random-seed state).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kexp.store import checkpoint


def needs_build(model: keras.Model) -> bool:
    """Returns whether the model (or an optimizer it holds) has variables still to create."""
    if not model.built:
        return True
    optimizer = getattr(model, "optimizer", None)
    # An optimizer that is not built yet is built by the restore itself (on the model's trainable variables).
    return optimizer is not None and optimizer.built and not optimizer.variables


def build_by_one_step(model: keras.Model, one_batch: tf.data.Dataset, strategy: tf.distribute.Strategy) -> None:
    """Creates the model's and its optimizers' variables by training one step on one batch.

    The batch reaches `train_step` as `fit` hands it over (`(x, y)`, not
    `train_on_batch`'s `(x, y, None)`), under the strategy the fit runs in.
    Call inside the strategy's scope, before `checkpoint.restore`.

    Args:
        model: A compiled model.
        one_batch: A dataset of one batch, as the fit's pipeline yields it.
        strategy: The fit's strategy.
    """
    batch = next(iter(strategy.experimental_distribute_dataset(one_batch)))
    tf.function(lambda data: strategy.run(model.train_step, args=(data,)))(batch)


def restore_built(model: keras.Model, state: checkpoint.TrainingState, where: str,
                  one_batch: tf.data.Dataset | None, strategy: tf.distribute.Strategy) -> None:
    """Restores `state` into `model`, first building the model by one step if it is built lazily.

    Args:
        model: The compiled model of the fit.
        state: The fit's saved state.
        where: What to name the state by in error messages.
        one_batch: A dataset of one training batch (None when `needs_build` is false).
        strategy: The fit's strategy.
    """
    if one_batch is not None and needs_build(model):
        build_by_one_step(model, one_batch, strategy)
    checkpoint.restore(model, state, where)
