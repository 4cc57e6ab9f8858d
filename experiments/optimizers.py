"""Full-batch GD, SGD, mini-batch SGD, momentum, RMSprop and Adam on one budget of examples (tutorial 001 §7.2).

What it shows: the same MLP on the bundled digits, from the same initial
weights, trained by each optimizer for the same number of examples
(`train.epochs` passes over the training set). Full-batch gradient descent
takes one step per pass: with the same examples it takes the fewest steps
and ends with the highest loss. Single-example SGD takes the most steps,
ends lowest, and takes the most wall time per example (each step does
little work for its fixed cost). Mini-batches trade the two. With the same
900 mini-batch steps, momentum ends lower than plain SGD, while RMSprop and
Adam at their usual learning rate 1e-3 end about level with it (measured:
0.059, 0.100, 0.102, 0.115). `train.optimizer`, `train.learning_rate` and
`train.batch_size` do not apply here: each optimizer has its own
`model.*_lr`, and `model.minibatch_size` is the mini-batch. Two figures: the training loss
against examples seen and against training seconds, one curve each; and
TensorBoard has one sub-folder per optimizer.

`adam_loss_vs_gd` is Adam's final training loss over full-batch GD's, and
`sgd_time_vs_next_slowest` is single-example SGD's time per example (the
median epoch after the first, which holds the tracing; validation
excluded) over the slowest other optimizer's. Under several replicas each
batch is split over them, rounded up (single-example SGD: one example per
replica, a global batch of 2 on two), and the table shows the global batch
each optimizer trained with. A resumed
run continues each curve from `OPTIMIZER/loss_curve.json`.

Command:  python -m kexp run optimizers
Expected: adam_loss_vs_gd < 1 (0.17 at defaults); sgd_time_vs_next_slowest > 1 (about 20).
Runtime:  about 16 s on a 2-core CPU, TensorFlow import included (README: measured figures).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from kexp import ExperimentConfig, ImageDataConfig, TrainConfig, param

if TYPE_CHECKING:
    from kexp import Harness

# name: (Harness optimizer, batch size or 0 for the whole training set, what it is)
OPTIMIZERS = {
    "gd": ("sgd", 0, "full-batch gradient descent"),
    "sgd": ("sgd", 1, "stochastic gradient descent, one example per step"),
    "minibatch": ("sgd", -1, "mini-batch SGD"),
    "momentum": ("momentum", -1, "mini-batch SGD with momentum 0.9"),
    "rmsprop": ("rmsprop", -1, "RMSprop"),
    "adam": ("adam", -1, "Adam"),
}


@dataclasses.dataclass(frozen=True)
class OptimizerStudy:
    """The model and the optimizers compared on it."""

    hidden: int = param(64, ge=1, le=100_000, help="hidden units of the MLP")
    optimizers: tuple[str, ...] = param(tuple(OPTIMIZERS), choices=tuple(OPTIMIZERS),
                                        help="comma-separated optimizers to train, each from the same weights")
    minibatch_size: int = param(32, ge=2, le=2**20, help="batch of minibatch, momentum, rmsprop and adam")
    gd_lr: float = param(0.5, gt=0, le=100, help="learning rate of full-batch GD")
    sgd_lr: float = param(0.01, gt=0, le=100, help="learning rate of single-example SGD")
    minibatch_lr: float = param(0.1, gt=0, le=100, help="learning rate of mini-batch SGD")
    momentum_lr: float = param(0.02, gt=0, le=100, help="learning rate of SGD with momentum")
    rmsprop_lr: float = param(1e-3, gt=0, le=100, help="learning rate of RMSprop")
    adam_lr: float = param(1e-3, gt=0, le=100, help="learning rate of Adam")


CONFIG = ExperimentConfig(
    data=ImageDataConfig(),
    model=OptimizerStudy(),
    # The example budget: 20 passes over the training set for every optimizer.
    train=TrainConfig(epochs=20),
)

# The quality bar, declared once: the slow tests and the README's table follow it.
EXPECTED = {"adam_loss_vs_gd": ("<", 1.0), "sgd_time_vs_next_slowest": (">", 1.0)}
EXPECTED_TIME_S = 16  # a default run, whole command, on the README's machine (kexp check)
# Small settings at which the README's test command runs it (its bars need the defaults: kexp check).
SMOKE_SETTINGS = {"train.epochs": 1, "data.test_fraction": 0.8}


def run(config: ExperimentConfig, harness: Harness) -> dict[str, float]:
    """Trains the MLP with each optimizer on the same examples and compares loss and time."""
    import sys

    import keras
    import numpy as np

    from kexp.study import compare, plots
    from kexp.study.recorders import LossCurveRecorder
    from kexp.study.classify import load_data
    from kexp import UsageError
    from kexp.models import mlp

    m = config.model
    chosen = list(dict.fromkeys(m.optimizers))
    for needed, bar in (({"adam", "gd"}, "adam_loss_vs_gd"), ({"sgd"}, "sgd_time_vs_next_slowest")):
        if not needed <= set(chosen) or len(chosen) < 2:
            raise UsageError(f"model.optimizers: received {','.join(chosen)}; allowed: a list with "
                             f"{' and '.join(sorted(needed))} and one more optimizer, which {bar} compares")
    ignored = [f"train.{key}" for key in ("optimizer", "learning_rate", "batch_size")
               if getattr(config.train, key) != getattr(CONFIG.train, key)]
    if ignored:
        print(f"kexp: warning: optimizers does not use {', '.join(ignored)}; each optimizer has its own "
              "model.*_lr, and model.minibatch_size is the mini-batch", file=sys.stderr)
    data = load_data(config)
    n = len(data.x_train)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    metrics, curves, rows = {}, {}, []
    for name in chosen:
        kind, batch, what = OPTIMIZERS[name]
        batch = n if batch == 0 else min(m.minibatch_size, n) if batch < 0 else batch
        learning_rate = getattr(m, f"{name}_lr")
        # Kept in the fit's folder: a resumed run continues each curve, or finds it whole.
        recorder = LossCurveRecorder(data.x_train, data.y_train, loss, harness.pipeline.trained_examples(n),
                                     path=harness.run_dir / name / "loss_curve.json")
        compare.reseed(config.train.seed or 0)  # the same initial weights for every optimizer
        # Split over the replicas, rounded up: full-batch GD still takes one step a pass.
        per_replica = -(-batch // harness.num_replicas)
        print(f"training with {what} (batch {batch}, learning rate {learning_rate})", flush=True)
        with harness.overrides(optimizer=kind, learning_rate=learning_rate, batch_size=per_replica):
            model = harness.fit(lambda: mlp(data.image_shape, data.num_classes, hidden=(m.hidden,), name=name),
                                (data.x_train, data.y_train), (data.x_test, data.y_test), loss=loss,
                                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")], name=name,
                                callbacks=[recorder])
        points = recorder.points or recorder.load()
        test = harness.evaluate(model, (data.x_test, data.y_test))
        settings = harness.fit_settings[name]
        batch = settings["global_batch_size"]  # per replica x replicas, as trained
        _, seconds, losses = (np.array(column, dtype=float) for column in zip(*points))
        # Steady time per example: the median epoch after the first (which holds the tracing).
        per_example = 1.0 / recorder.steady_examples_per_s()
        steps = config.train.epochs * -(-settings["trained_examples_per_epoch"] // batch)
        metrics.update({f"loss_{name}": float(losses[-1]), f"seconds_{name}": float(seconds[-1]),
                        f"us_per_example_{name}": per_example * 1e6, f"test_accuracy_{name}": test["test_accuracy"]})
        curves[name] = points
        rows.append([name, batch, learning_rate, steps, float(losses[-1]), test["test_accuracy"], float(seconds[-1]),
                     per_example * 1e6])
    others = [metrics[f"us_per_example_{o}"] for o in chosen if o != "sgd"]
    metrics["adam_loss_vs_gd"] = metrics["loss_adam"] / metrics["loss_gd"]
    metrics["sgd_time_vs_next_slowest"] = metrics["us_per_example_sgd"] / max(others)
    compare.write_table(harness, "comparison", ["optimizer", "batch", "learning_rate", "steps", "train_loss",
                                                "test_accuracy", "train_seconds", "us_per_example"], rows,
                        title=f"{config.train.epochs} passes over {n} training examples for every optimizer",
                        shows=[f"{quantity}_{name}" for name in chosen for quantity in
                               ("loss", "test_accuracy", "seconds", "us_per_example")])
    harness.log_figure("loss_curves", plots.loss_curves_figure(curves))
    return metrics
