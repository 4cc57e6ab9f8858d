"""A fit's model made ready: built in the strategy's scope, compiled (or a user's compilation kept), restored.

`Harness.compile` and `Harness.fit` call these; the optimizer and its
schedule come from `kexp.engine.optim` with the fit's own length.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import keras

from kexp.config import TrainConfig
from kexp.engine import building, fitargs, fitdata, labels, optim, speed
from kexp.engine.plan import FitPlan
from kexp.errors import UsageError
from kexp.models.gan import GAN

if TYPE_CHECKING:
    from kexp.engine.harness import Harness

OptimizerArg = keras.optimizers.Optimizer | Callable[[], keras.optimizers.Optimizer] | None


def compile_options(train: TrainConfig, num_replicas: int, model: keras.Model | None = None,
                    steps_per_epoch: int | None = None, epochs: int | None = None,
                    plan: FitPlan | None = None, user_code: str = "") -> dict[str, Any]:
    """Returns the `steps_per_execution` and `jit_compile` arguments for `Model.compile`.

    Args:
        train: The train settings.
        num_replicas: Replicas training in sync.
        model: The model to be compiled; `jit_compile=auto` looks at its layers.
        steps_per_epoch: The fit's steps per epoch, which `steps_per_execution=0` (auto) divides.
        epochs: The fit's epochs (None: the plan's, else `train.epochs`); with
            `steps_per_epoch`, its length, which `jit_compile=auto` weighs for recurrent nets.
        plan: The fit the model is compiled for, when known: its length, and
            whether its batches may differ in shape.
        user_code: The compile argument holding the user's code (`speed.user_code_in`), or "".
    """
    epochs = epochs or (plan.epochs if plan else train.epochs)
    total_steps = steps_per_epoch * epochs if steps_per_epoch else None
    shapes_may_vary = plan is not None and plan.shapes_may_vary
    return {
        "steps_per_execution": speed.steps_per_execution(train, steps_per_epoch, num_replicas),
        "jit_compile": speed.jit_compile(train, model, num_replicas, total_steps, shapes_may_vary, user_code),
    }


def compile_model(model: keras.Model, train: TrainConfig, num_replicas: int, *, loss: Any, metrics: Any,
                  optimizer: OptimizerArg, optimizer_options: Mapping[str, Any] | None, steps_per_epoch: int | None,
                  epochs: int | None, loss_weights: Any, weighted_metrics: Any,
                  plan: FitPlan | None = None) -> keras.Model:
    """Compiles `model` as `Harness.compile` documents; call inside the strategy's scope.

    Returns:
        The compiled model.
    """
    total_steps = steps_per_epoch * (epochs or train.epochs) if steps_per_epoch else None
    options = dict(optimizer_options or {})

    def make() -> keras.optimizers.Optimizer:
        if optimizer is None:
            return optim.make_optimizer(train, total_steps, **options)
        return optimizer() if callable(optimizer) else optimizer

    user_code = speed.user_code_in(dict(loss=loss, metrics=metrics, weighted_metrics=weighted_metrics,
                                        optimizer=optimizer))
    speed_options = compile_options(train, num_replicas, model, steps_per_epoch, epochs, plan, user_code)
    if isinstance(model, GAN):
        if optimizer is not None and not callable(optimizer):
            raise UsageError(f"fit: received optimizer {type(optimizer).__name__} (one instance) for a "
                             "kexp.models.GAN, which trains two networks; allowed: a function returning a new "
                             "optimizer (called once per network), or optimizer_options")
        # Two optimizers of the configured kind (or two calls of `optimizer`), one per network.
        model.compile(d_optimizer=make(), g_optimizer=make(), **speed_options)
        return model
    # Metrics as Keras takes them: a list, or one list per output by name or position.
    model.compile(optimizer=make(), loss=loss, metrics=metrics, loss_weights=loss_weights,
                  weighted_metrics=weighted_metrics, **speed_options)
    return model


@dataclasses.dataclass(frozen=True)
class Compiled:
    """Who compiled a fit's model, and why XLA is on or off (`results.json` `fits`).

    Attributes:
        by: `harness`, `user`, or `user (steps_per_execution chosen by the harness)`.
        jit_compile_set_by: The rule or setting behind `jit_compile`, in words.
    """

    by: str
    jit_compile_set_by: str


def prepare_model(harness: Harness, model: Any, compile_args: dict[str, Any], plan: FitPlan,
                  data: fitdata.FitData) -> tuple[keras.Model, Compiled, fitdata.FitData]:
    """Returns the model to fit, who compiled it, and the data left to train on.

    The model is built and compiled in the strategy's scope and, on a resume,
    restored from the plan's state; a lazily built model is built by one batch
    taken from the data first. In-memory labels a sparse categorical loss
    cannot score are refused here, once the loss is known (`kexp.engine.labels`).

    Args:
        harness: The run's harness.
        model: What `fit` was given: a model or a function returning one.
        compile_args: `fit`'s compile arguments (`kexp.engine.fitargs.COMPILE_ARGUMENTS`).
        plan: The fit's plan.
        data: The fit's data.
    """
    with harness.strategy.scope(), harness.building(plan):
        model = fitargs.model_from(model, harness.num_replicas, harness.strategy_name)
        if not model.compiled:
            fitargs.needs_loss(model, compile_args, isinstance(model, GAN))
            # The words of the choice `harness.compile` makes from the same model and plan.
            jit_why = speed.jit_choice(harness.train, model, harness.num_replicas, plan.total_steps,
                                       plan.shapes_may_vary, speed.user_code_in(compile_args))[1]
            harness.compile(model, **compile_args, steps_per_epoch=plan.steps_per_epoch, epochs=plan.epochs)
            compiled = Compiled("harness", jit_why)
        else:
            compiled = Compiled(_adopt_compiled(harness, model, compile_args, plan.steps_per_epoch),
                                "the model came compiled: its own compile's jit_compile")
        try:
            data = dataclasses.replace(data, train=labels.held_in_memory(model, data.train, data.n_all or 0))
            labels.check_sparse_labels(model, train=data.train, validation=data.validation)
            if plan.state is not None:
                # Before any callback writes: a state that does not fit fails with the folder untouched.
                one_batch, data = fitdata.first_batch(data, harness.dataset) if building.needs_build(model) \
                    else (None, data)
                building.restore_built(model, plan.state, f"--resume {str(harness.run_dir)!r}", one_batch,
                                       harness.strategy)
        except BaseException:
            hand_back(model, compiled)  # a refused fit leaves no steps_per_execution of the harness's behind
            raise
    return model, compiled, data


def _adopt_compiled(harness: Harness, model: keras.Model, compile_args: dict[str, Any],
                    steps_per_epoch: int | None) -> str:
    """Takes a model its user compiled (refusing compile arguments), and says who compiled it."""
    fitargs.check_compile_arguments(model, compile_args)
    if harness.train.steps_per_execution == 0 and int(model.steps_per_execution) == 1 \
            and model.train_function is None and steps_per_epoch:
        # Keras' default of one step per call: the harness's choice
        # costs the user nothing and is worth 1.2-4x on small models.
        chosen = speed.steps_per_execution(harness.train, steps_per_epoch, harness.num_replicas)
        if chosen != 1:  # (with several replicas it is 1: nothing changed)
            model.steps_per_execution = chosen
            return HARNESS_CHOSE_STEPS
    return "user"


HARNESS_CHOSE_STEPS = "user (steps_per_execution chosen by the harness)"


@contextlib.contextmanager
def one_step_per_call_after(model: keras.Model, compiled: Compiled) -> Iterator[None]:
    """Hands the model back with Keras' default `steps_per_execution` of 1 once the fit ends, however it ends.

    The harness's choice is for its own fit. A model its user compiled at 1 gets its own setting back; one
    the harness compiled gets Keras' default, which the user never chose against. Either way the user's
    later `fit`, `evaluate` or `predict` (and the saved model's compile config) run one step per call, and
    per-batch callbacks see every batch. A `steps_per_execution` the user chose themselves stays.

    Args:
        model: The fit's model.
        compiled: Who compiled it (`prepare_model`).
    """
    try:
        yield
    finally:
        hand_back(model, compiled)


def hand_back(model: keras.Model, compiled: Compiled) -> None:
    """Sets a model's `steps_per_execution` back to 1 unless its user chose it (`one_step_per_call_after`).

    Args:
        model: The fit's model.
        compiled: Who compiled it.
    """
    if compiled.by in (HARNESS_CHOSE_STEPS, "harness"):
        model.steps_per_execution = 1
        # Keras keeps its compiled functions, and with them the harness's steps per call, until rebuilt.
        model.train_function = model.test_function = model.predict_function = None
        # And the compile call's arguments, which a saved model is compiled with again when loaded.
        compile_arguments = getattr(getattr(model, "_compile_config", None), "config", None)
        if isinstance(compile_arguments, dict) and "steps_per_execution" in compile_arguments:
            compile_arguments["steps_per_execution"] = 1
