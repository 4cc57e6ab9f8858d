"""One harness fit's training (its input streams, callbacks in order, Keras' `fit` call, throughput), and evaluation.

`Harness.fit` decides what to train (`kexp.engine.plan.FitPlan`); `run_fit`
trains it. Functions here read the harness's declared attributes (strategy,
folders, settings) and the plan, never state an earlier fit left.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import keras
import tensorflow as tf

from kexp.engine import fitdata, fused, inputs, labels, modelinfo, streams
from kexp.engine.callbacks import (EpochGate, EpochTimer, HistoryCSV, ReportToTrial, SaveState, StopOnRequest,
                                   TensorBoardLogger)
from kexp.engine.trial_link import current as current_trial
from kexp.errors import RunPruned, UsageError
from kexp.engine.compat import built_locally, is_multi_worker, prepare_multi_worker_fit
from kexp.engine.outputs import events_error_in
from kexp.engine.pipeline import fixed_shapes
from kexp.engine.plan import FitPlan
from kexp.store import fitlogs, saving
from kexp.store.record import RunStatus
from kexp.store import layout

if TYPE_CHECKING:
    from kexp.engine.compiling import Compiled
    from kexp.engine.harness import Harness


def fused_group(harness: Harness, model: keras.Model, data: fitdata.FitData, pad: bool) -> int:
    """Returns how many batches each compiled call runs in one loop (`kexp.engine.fused`), or 1 where it cannot."""
    if data.is_stream:
        return 1
    steps_per_execution = int(model.steps_per_execution)
    held_as_tensors = not isinstance(data.train, tf.data.Dataset) or fixed_shapes(data.train)
    fusable = (
        harness.train.fuse_steps and steps_per_execution > 1 and not pad
        # Data held as tensors is gathered a call's batches at a time: an
        # epoch's last call may hold fewer batches, and its partial last
        # batch rides along as a tail. Batches of other data may differ in
        # shape and cannot be stacked.
        and held_as_tensors and data.n_train >= harness.global_batch_size
        and not is_multi_worker(harness.strategy) and fused.supports(model))
    return steps_per_execution if fusable else 1


def settings_before_training(harness: Harness, model: keras.Model, data: fitdata.FitData,
                             compiled: Compiled, group: int) -> dict[str, Any]:
    """Returns what `results.json` `fits` records of a fit before it trains."""
    return {
        "steps_per_execution": int(model.steps_per_execution), "jit_compile": bool(model.jit_compile),
        "jit_compile_set_by": compiled.jit_compile_set_by, "compiled_by": compiled.by,
        # A stream's batches are its own.
        "global_batch_size": None if data.is_stream else harness.global_batch_size,
        "train_examples": data.n_all, "trained_examples_per_epoch": data.n_train,
        "validation_examples": data.n_validation, "fused_steps": group > 1,
        # The run's `precision` is the policy when it opened; a layer built with its own dtype policy (or before
        # the run) trains in that one. `_flatten_layers` is Keras' own walk over nested layers (no public one).
        "dtype_policies": sorted({layer.dtype_policy.name for layer in model._flatten_layers(include_self=True)}),
    }


def run_fit(harness: Harness, model: keras.Model, data: fitdata.FitData, plan: FitPlan, group: int,
            callbacks: Sequence[keras.callbacks.Callback], verbose: int | str | None) -> keras.callbacks.History:
    """Runs Keras' `fit` for one harness fit, from `plan.initial_epoch`, with the harness's pipeline and callbacks.

    Args:
        harness: The run's harness.
        model: The built, compiled (and, on a resume, restored) model.
        data: The fit's data (`kexp.engine.fitdata`).
        plan: The fit's plan.
        group: Batches each compiled call runs fused (`fused_group`; 1: Keras' own steps).
        callbacks: The caller's callbacks.
        verbose: This fit's Keras verbosity; None for the run's.

    Returns:
        Keras' `History` of the fit.
    """
    settings = harness.fit_settings[plan.name]
    steps_per_execution = int(model.steps_per_execution)
    # One input stream for the whole fit when a compiled call never spans
    # two epochs (a fused call ends with its epoch); else one iteration per epoch.
    one_stream = not data.is_stream and ((data.steps_per_epoch or 0) % steps_per_execution == 0 or group > 1)
    train_ds, val_ds = _datasets(harness, data, plan, group, one_stream)
    if data.is_stream:
        settings["input"] = streams.describe(data.source, None, data.steps_per_epoch)
    if is_multi_worker(harness.strategy):
        prepare_multi_worker_fit(model, harness.strategy, train_ds)
    calls = (plan.epochs - plan.initial_epoch) * math.ceil((data.steps_per_epoch or 1) / steps_per_execution)
    all_callbacks, timer = fit_callbacks(harness, plan, data, calls, one_stream, callbacks)
    phase = _Phase()
    fusing = fused.fused_steps(model, train_ds.element_spec, tail=data.n_train % harness.global_batch_size != 0
                               ) if group > 1 else built_locally(model, train_ds, harness.strategy)
    verbose = harness.verbose if verbose is None else verbose
    if verbose != 0 and plan.name != "model":
        # Keras numbers every fit's epochs from 1: a run of several fits (xor's two nets, a GAN after
        # its judge) would print blocks of `Epoch 1/N` that nothing tells apart.
        print(fit_heading(plan), flush=True)
    try:
        data_named = _errors_in_one_line(plan.pad, lambda: "validation" if phase.validating else "train")
        with data_named, harness.strategy.scope(), fusing:
            history = model.fit(
                train_ds,
                validation_data=val_ds,
                validation_freq=plan.validation_freq,
                epochs=plan.epochs,
                initial_epoch=plan.initial_epoch,
                # A stream's epoch is Keras' to end (a PyDataset's length), unless steps were given.
                steps_per_epoch=data.steps_per_epoch if one_stream else data.given_steps,
                callbacks=[*all_callbacks, phase],
                verbose=verbose,
                shuffle=False,  # the pipeline already shuffles, seeded
                class_weight=data.class_weight,  # a stream's (the pipeline weighs the others' examples)
            )
        _raise_if_pruned(all_callbacks, plan)
        return history
    finally:
        # Completed epochs count towards throughput however the fit ends.
        steady = timer.durations[1:] or timer.durations
        examples = data.examples_in_epochs(len(steady))
        if examples is not None:  # (a generator's examples per epoch are not known)
            harness.count_trained(sum(steady), examples)
        if steady and examples is not None:
            # This fit alone: what a comparison of models reports as its throughput.
            settings["examples_per_s"] = examples / max(sum(steady), 1e-9)
        if data.is_stream:
            settings["input"] = streams.describe(data.source, data.counter, data.steps_per_epoch)


class _Phase(keras.callbacks.Callback):
    """Whether a fit is scoring its validation data: where an input error then comes from."""

    def __init__(self) -> None:
        super().__init__()
        self.validating = False

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.validating = True

    def on_test_end(self, logs: dict | None = None) -> None:
        self.validating = False


@contextlib.contextmanager
def _errors_in_one_line(pad: bool, where: Callable[[], str]) -> Iterator[None]:
    """Turns a TensorFlow error whose meaning is known (`_one_line_error`) into one line; `where()` names the data."""
    try:
        yield
    except tf.errors.OpError as err:
        named = _one_line_error(err, pad, where())
        if named is None:
            raise
        raise named from None


def _one_line_error(err: tf.errors.OpError, pad: bool, where: str) -> Exception | None:
    """Returns what a TensorFlow error of a fit's data (`where` "train" or "validation") or an evaluation's
    ("data") means in one line, where that is known, else None."""
    batching = "Cannot batch tensors with different shapes"
    if not pad and isinstance(err, tf.errors.InvalidArgumentError) and batching in str(err):
        # A dataset's shapes are only seen as it streams: (None,) in its spec may still be one length throughout.
        # TensorFlow's first line is "Graph execution error:"; the shapes are on the line that names them.
        detail = next(line for line in str(err).splitlines() if batching in line).split("[[", 1)[0].strip()
        return UsageError(f"{where}: examples of different shapes cannot be batched ({detail[:200]}); allowed: "
                          "pad=True (each batch padded to its longest example), or examples of one shape")
    return events_error_in(err)  # Keras' own TensorBoard writes failed (a full disk): one line, not 40


def fit_heading(plan: FitPlan) -> str:
    """Returns the line printed above a named fit's epochs: `fit two_layer: 30 epochs` (`epochs 12-30` resumed)."""
    if plan.initial_epoch:
        return f"fit {plan.name}: epochs {plan.initial_epoch + 1}-{plan.epochs} (resumed)"
    return f"fit {plan.name}: {plan.epochs} epoch{'s' if plan.epochs != 1 else ''}"


def record_fit(harness: Harness, model: keras.Model, history: keras.callbacks.History, fit_name: str,
               finished_before: bool = False) -> None:
    """Records the fit: history, divergence, what trained it, its saved model.

    A fit that had finished before a resume keeps the model file it
    saved then; it is written only if a kill came before it was.
    """
    harness.history[fit_name] = history
    losses = history.history.get("loss", [])
    if any(not math.isfinite(v) for v in losses) or not modelinfo.finite_weights(model):
        # NaN in the inputs can leave finite logged losses but NaN weights.
        harness.status = RunStatus.DIVERGED
    harness.fit_settings[fit_name].update(modelinfo.describe_training(model))
    saved = saving.model_path(harness.run_dir, fit_name)
    if finished_before and saved.is_file():
        harness.saved_models[fit_name] = str(saved.relative_to(harness.run_dir))
    elif harness.is_chief:
        try:
            path = saving.save_fit_model(model, harness.run_dir, fit_name)
            harness.saved_models[fit_name] = str(path.relative_to(harness.run_dir))
        except saving.NotSaveable as err:
            # The training stands; only the file is missing, and results.json says why.
            harness.fit_settings[fit_name]["not_saved"] = str(err)
            print(f"kexp: warning: fit {fit_name!r} trained, but Keras cannot save it ({err}); "
                  "results.json fits says so", file=sys.stderr)


def evaluate_model(harness: Harness, model: keras.Model, data: Any, prefix: str, pad: bool) -> dict[str, float]:
    """Evaluates `model` on held-out data inside the strategy's scope, scoring every example (`Harness.evaluate`)."""
    harness.stop.check()
    if streams.is_stream(data):
        # Keras reads it as its own `evaluate` would (`kexp.engine.streams`).
        ds = streams.prepare(data, "data", harness.num_replicas, 1, None)[0]
    else:
        data = inputs.normalize(data, "data")
        n = inputs.count_examples(data, "data", harness.stop.check)
        labels.check_sparse_labels(model, data=data)
        ds = harness.dataset(data, training=False, num_examples=n, pad=pad)
    with _errors_in_one_line(pad, lambda: "data"), harness.strategy.scope(), built_locally(model, ds, harness.strategy):
        values = model.evaluate(ds, verbose=0, return_dict=True)
    return {f"{prefix}{k}": float(v) for k, v in values.items()}


def _datasets(harness: Harness, data: fitdata.FitData, plan: FitPlan, group: int, one_stream: bool) -> tuple[Any, Any]:
    """Returns the fit's training and validation inputs as Keras' `fit` reads them."""
    if data.is_stream:
        train_ds = data.train
    else:
        # (A finished fit still gets its last epoch's stream: Keras may peek at a batch.)
        stream_epochs = (min(plan.initial_epoch, plan.epochs - 1), plan.epochs)
        train_ds = harness.dataset(data.train, training=True, epochs=stream_epochs if one_stream else None,
                                   num_examples=data.n_all, group=group, pad=plan.pad)
    val_ds = data.validation
    if data.validation is not None and data.n_validation is not None:
        val_ds = harness.dataset(data.validation, training=False, num_examples=data.n_validation, pad=plan.pad)
    return train_ds, val_ds


def _raise_if_pruned(callbacks: Sequence[keras.callbacks.Callback], plan: FitPlan) -> None:
    """Ends the run (status `pruned`) when its search trial's pruner stopped this fit."""
    for callback in callbacks:
        if isinstance(callback, ReportToTrial) and callback.pruned_after is not None:
            raise RunPruned(plan.name, callback.pruned_after)


def fit_callbacks(harness: Harness, plan: FitPlan, data: fitdata.FitData, calls: int, stream: bool,
                  callbacks: Sequence[keras.callbacks.Callback]) -> tuple[list[keras.callbacks.Callback], EpochTimer]:
    """Returns a fit's callbacks, in the order their epoch-end work must run, and its timer."""
    gate = EpochGate(harness.stop)
    timer = EpochTimer(gate)
    logging: list[keras.callbacks.Callback] = []
    if harness.is_chief:
        plan.log_dir.mkdir(parents=True, exist_ok=True)
        # The backup folder marks the fit as started: a resume that finds
        # it without a state file retrains from epoch 0 over no history.
        plan.backup_dir.mkdir(parents=True, exist_ok=True)
        if harness.resumed:
            # Logs written past the saved state (a kill between the two
            # writes, a failed state save) are dropped: no epoch twice.
            fitlogs.truncate(plan.log_dir, plan.initial_epoch)
        tb_timer = EpochTimer(gate)
        logging = [
            tb_timer,
            # The model's conceptual graph goes in once, at step 0, with the fit's first epoch.
            TensorBoardLogger(gate, tb_timer, data.last_epoch_examples if data.is_stream else data.n_train,
                              log_dir=str(plan.log_dir), write_graph=plan.initial_epoch == 0,
                              profile_batch=profile_range(harness.train.profile_steps, plan.log_dir, calls)),
            HistoryCSV(gate, str(plan.log_dir / layout.HISTORY)),
        ]
    data_epoch = harness.data_epoch  # made outside the scope: a plain, unmirrored variable
    # Order matters at epoch end: the gate decides first whether the epoch
    # counts; logs are written before the state that says the epoch is done
    # (a crash in between repeats at most the last epoch's points); the
    # timer comes last so that all of it counts as epoch time.
    return [
        gate,
        # A stream's epoch count closes before anything reads it.
        *([streams.EpochCounts(data.counter)] if data.counter is not None else []),
        keras.callbacks.TerminateOnNaN(),
        StopOnRequest(harness.stop),
        # A stream carries its epochs itself; a per-epoch pipeline reads `data_epoch`.
        *([] if stream or data.is_stream else [keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: data_epoch.assign(epoch))]),
        *logging,
        *callbacks,
        SaveState(plan.backup_dir, gate, plan.epochs, write=harness.is_chief,
                  run_info={**harness.run_info, "fit": plan.name} if harness.run_info else None),
        *_trial_reporter(gate, plan, data),
        timer,
    ], timer


def _trial_reporter(gate: EpochGate, plan: FitPlan, data: fitdata.FitData) -> list[keras.callbacks.Callback]:
    """Returns the callback that reports to this run's `kexp search` trial, when it has one."""
    link = current_trial()
    if link is None:
        return []
    return [ReportToTrial(link, gate, plan.name, plan.epochs, validates=data.validation is not None)]


def profile_range(profile_steps: tuple[int, int], log_dir: Path, calls: int) -> tuple[int, int] | int:
    """Returns Keras' `profile_batch` for `train.profile_steps`, saying where the trace goes.

    Args:
        profile_steps: `train.profile_steps` (first and last compiled call; 0, 0 for none).
        log_dir: The fit's log folder.
        calls: Compiled calls the fit will run.
    """
    start, stop = profile_steps
    if not stop:
        return 0
    if start > calls:
        print(f"kexp: warning: train.profile_steps={start},{stop}: fit {log_dir.name!r} runs {calls} compiled "
              f"call(s) (steps_per_execution batches each); nothing of it is profiled", file=sys.stderr)
        return 0
    where = log_dir / "train" / "plugins" / "profile"
    view = ("open it in TensorBoard's Profile tab" if importlib.util.find_spec("tensorboard_plugin_profile")
            else "TensorBoard's Profile tab shows it once its optional plugin is installed: "
            "pip install tensorboard-plugin-profile (or the extra kexp[profile])")
    print(f"kexp: profiling compiled calls {start}-{stop} into {where}; {view}", file=sys.stderr)
    return (start, stop)
