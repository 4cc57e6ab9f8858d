"""The one fit/evaluate harness every experiment trains through.

It owns the run: the `tf.distribute` strategy, the run folder, seeded
`tf.data` pipelines, compile and fit inside `strategy.scope()`, the standard
callbacks (TensorBoard, the per-epoch state file `--resume` continues from,
TerminateOnNaN, CSV history, clean stops on SIGINT/SIGTERM),
figures, and what `results.json` reports of each fit (`kexp.engine.session` writes it).

Use it on your own Keras model without writing an experiment file:

    import kexp

    with kexp.open_run("my_model", train=kexp.TrainConfig(epochs=5)) as harness:
        model = harness.fit(build_model, (x_train, y_train), (x_val, y_val), loss="mse")
        harness.record(**harness.evaluate(model, (x_test, y_test)))
    print(harness.run_dir, harness.results["metrics"])
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import keras
import tensorflow as tf

from kexp.engine import building, fitargs, fitdata, fused, inputs, modelinfo, speed, streams
from kexp.store import checkpoint, fitlogs, rundir, saving
from kexp.engine.callbacks import (
    SaveState, EpochGate, EpochTimer, HistoryCSV, StopOnRequest, TensorBoardLogger,
)
from kexp.engine.compat import built_locally, is_multi_worker, prepare_multi_worker_fit, quiet_retracing_warnings
from kexp.config import ExperimentConfig, TrainConfig, validate
from kexp.errors import UsageError
from kexp.engine.interrupt import StopRequest
from kexp.models.gan import GAN
from kexp.engine.outputs import RunOutputs
from kexp.engine.pipeline import Pipeline, fixed_shapes
from kexp.engine.strategy import is_chief

Data = Any  # what `fit` takes: see `kexp.engine.inputs`


# The train settings a fit reads when it starts, which `Harness.overrides` may change for some fits.
PER_FIT_SETTINGS = ("epochs", "batch_size", "learning_rate", "optimizer", "lr_schedule", "steps_per_execution",
                    "jit_compile", "fuse_steps", "profile_steps")


class Harness(RunOutputs):
    """Trains and evaluates Keras models for one run, in one strategy.

    Create it with `open_run(...)`, which also writes the run folder's files.

    Attributes:
        run_dir: The run folder.
        train: The training settings.
        strategy: The `tf.distribute.Strategy` everything runs under.
        strategy_name: The name it was chosen by (`auto`, `mirrored`, ...).
        metrics: Quality figures recorded so far (`record`).
        status: `ok`, `diverged`, `interrupted` or `failed`.
        stop: The run's SIGINT/SIGTERM stop request.
        backup_root: Where each fit's state file is read from (and, on the
            chief, written to): `run_dir/backup`, or on other workers of a
            resumed multi-worker run, the chief's folder's.
        fit_settings: What each `fit` ran with, by its fit name (`model`,
            `model_2`, or its `name`): `steps_per_execution`, `jit_compile`,
            `fused_steps` (whether its batches ran fused), `compiled_by`,
            example counts, `examples_per_s` (its epochs after the first,
            which holds tracing), and what trained it (`optimizers` with their
            learning rate or schedule, `loss`, `params`); `results.json`
            holds them as `fits`.
        history: Each fit's `keras.callbacks.History`, by fit name (also
            the fitted model's `model.history`).
        saved_models: Each fit's saved model, relative to the run folder
            (`models/FIT.keras`); `results.json` holds them as `models`.
        precision: The dtype policy the run trains under (`policy`) and
            whether `train.precision` or the caller's global policy set it
            (`set_by`); `results.json` holds it as `precision`.
    """

    def __init__(
        self,
        run_dir: Path,
        train: TrainConfig,
        strategy: Any,
        strategy_name: str,
        verbose: int | str = "auto",
        stop: StopRequest | None = None,
        backup_root: Path | None = None,
        run_info: dict[str, Any] | None = None,
        resumed: bool = False,
        precision: dict[str, str] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.backup_root = Path(backup_root) if backup_root else self.run_dir / "backup"
        self.stop = stop or StopRequest()
        self.train = train
        self.strategy = strategy
        self.strategy_name = strategy_name
        self.metrics: dict[str, float] = {}
        self.status = "ok"
        self.results: dict[str, Any] = {}
        self.is_chief = is_chief(strategy)
        quiet_retracing_warnings()
        self.verbose = (1 if sys.stdout.isatty() else 2) if verbose == "auto" else verbose
        self._train_seconds = 0.0
        self._train_samples = 0
        self._steps_per_epoch: int | None = None
        self._epochs: int | None = None
        self.pipeline = Pipeline(train, int(strategy.num_replicas_in_sync), strategy_name)
        self._fits: dict[str, int] = {}
        self.fit_settings: dict[str, dict[str, Any]] = {}
        self.run_info = run_info
        self.resumed = resumed
        self.precision = precision or {"policy": keras.mixed_precision.dtype_policy().name,
                                       "set_by": "the global policy"}
        self.history: dict[str, keras.callbacks.History] = {}
        self.saved_models: dict[str, str] = {}
        # Whether the final metrics and HParams session end went to TensorBoard (`kexp.engine.session`).
        self.final_logged = False
        # When the run started (`time.perf_counter`), and whether bad input ended it: nothing more is
        # written then, and a new folder is removed (`kexp.engine.session`).
        self.started = time.perf_counter()
        self.refused = False

    @contextlib.contextmanager
    def overrides(self, **changes: Any) -> Iterator[TrainConfig]:
        """Changes train settings for the fits inside the `with` block, e.g. one optimizer of a comparison.

        Example: `with harness.overrides(batch_size=1, optimizer="sgd", learning_rate=0.01): harness.fit(...)`.
        Each fit's `batch_size` and optimizer are recorded in `fit_settings`
        (`results.json` `fits`); the run's config keeps the configured values.

        Args:
            **changes: `TrainConfig` fields that each fit reads (`PER_FIT_SETTINGS`:
                epochs, batch size, optimizer and learning rate, speed
                settings), checked against the field's limits. The data
                order, seed and precision are the run's and cannot change.

        Yields:
            The train settings in force.

        Raises:
            UsageError: For a name not in `PER_FIT_SETTINGS` or a value out of its limits.
        """
        unknown = sorted(set(changes) - set(PER_FIT_SETTINGS))
        if unknown:
            # The others (seed, shuffling, precision, ...) are fixed when the run opens.
            raise UsageError(f"Harness.overrides: received {', '.join(unknown)}; allowed: the settings each fit "
                             f"reads, {', '.join(PER_FIT_SETTINGS)}")
        configured = self.train
        changed = dataclasses.replace(configured, **changes)
        validate(ExperimentConfig(data=None, model=None, train=changed))
        self.train = changed
        try:
            yield changed
        finally:
            self.train = configured

    # -- data -------------------------------------------------------------

    @property
    def data_epoch(self) -> tf.Variable:
        """The epoch whose order training datasets yield (`Pipeline.data_epoch`); `fit` sets it."""
        return self.pipeline.data_epoch

    def dataset(self, data: Data, *, training: bool, batch_size: int | None = None, **kwargs: Any) -> tf.data.Dataset:
        """Returns a cached, batched, prefetched `tf.data` pipeline; see `kexp.engine.pipeline.Pipeline.dataset`.

        Args:
            data: What `fit` takes (`kexp.engine.inputs`).
            training: Shuffle (seeded per epoch) and trim to the replicas.
            batch_size: Global batch size; defaults to `global_batch_size`.
            **kwargs: `epochs`, `num_examples`, `group`, `pad`.
        """
        return self.pipeline.dataset(data, training=training, batch_size=batch_size or self.global_batch_size,
                                     **kwargs)

    @property
    def num_replicas(self) -> int:
        """Number of replicas training in sync."""
        return int(self.strategy.num_replicas_in_sync)

    @property
    def global_batch_size(self) -> int:
        """Per-replica batch size times the number of replicas."""
        return self.train.batch_size * self.num_replicas

    @property
    def train_samples_per_s(self) -> float:
        """Training throughput over steady-state epochs (first epoch of each fit excluded)."""
        return self._train_samples / self._train_seconds if self._train_seconds > 0 else 0.0

    # -- model ------------------------------------------------------------

    def learning_rate(self) -> Any:
        """Returns `train.learning_rate`, or its cosine schedule over the steps of the fit in progress."""
        total_steps = (self._steps_per_epoch or 0) * (self._epochs or self.train.epochs)
        if self.train.lr_schedule == "cosine" and total_steps:
            return keras.optimizers.schedules.CosineDecay(self.train.learning_rate, decay_steps=total_steps)
        return self.train.learning_rate

    def optimizer(self, **options: Any) -> keras.optimizers.Optimizer:
        """Returns a fresh optimizer as named by `train.optimizer`, with `learning_rate()`.

        Args:
            **options: More arguments of that optimizer (e.g. Adam's `beta_1`).
        """
        lr: Any = self.learning_rate()
        name = self.train.optimizer
        kind = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD,
                "momentum": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}.get(name)
        taken = inspect.signature(kind).parameters if kind else {}
        for key in options:
            if key not in taken:
                raise UsageError(f"train.optimizer: {name} takes no {key} (set by the experiment); "
                                 f"allowed: an optimizer that takes {', '.join(options)}, e.g. adam")
        if name == "adam":
            return keras.optimizers.Adam(lr, **options)
        if name == "adamw":
            return keras.optimizers.AdamW(lr, **options)
        if name == "sgd":
            return keras.optimizers.SGD(lr, **options)
        if name == "momentum":
            return keras.optimizers.SGD(lr, **{"momentum": 0.9, **options})
        if name == "rmsprop":
            return keras.optimizers.RMSprop(lr, **options)
        raise UsageError(f"train.optimizer: received {name!r}; allowed: adam, adamw, sgd, momentum, rmsprop")

    def compile(
        self,
        model: keras.Model,
        *,
        loss: Any,
        metrics: Any = None,
        optimizer: keras.optimizers.Optimizer | Callable[[], keras.optimizers.Optimizer] | None = None,
        steps_per_epoch: int | None = None,
        epochs: int | None = None,
        loss_weights: Any = None,
        weighted_metrics: Any = None,
    ) -> keras.Model:
        """Compiles `model` with the train config's optimizer and speed settings.

        Call inside `strategy.scope()` (`fit` does).

        Args:
            model: The model to compile.
            loss: Keras loss (one, or a list or dict by output).
            metrics: Keras metrics (a list, or a list or dict by output).
            optimizer: Overrides the optimizer named in the train config: an
                optimizer, or a function returning one (a `kexp.models.GAN`
                gets one from each call, for its two networks).
            steps_per_epoch: Lets `steps_per_execution=0` pick a value.
            epochs: With `steps_per_epoch`, the length of a cosine schedule.
            loss_weights: As in `Model.compile`.
            weighted_metrics: As in `Model.compile`.

        Returns:
            The compiled model.
        """
        self._steps_per_epoch = steps_per_epoch or self._steps_per_epoch
        self._epochs = epochs or self._epochs
        if isinstance(model, GAN):
            # Two optimizers of the configured kind; `optimizer` makes each one.
            make = optimizer if callable(optimizer) else self.optimizer
            model.compile(d_optimizer=make(), g_optimizer=make(), **self.compile_options(model))
            return model
        model.compile(
            optimizer=(optimizer() if callable(optimizer) else optimizer) or self.optimizer(),
            loss=loss,
            # As Keras takes them: a list, or one list per output by name or position.
            metrics=metrics,
            loss_weights=loss_weights,
            weighted_metrics=weighted_metrics,
            **self.compile_options(model),
        )
        return model

    def compile_options(self, model: keras.Model | None = None) -> dict[str, Any]:
        """Returns the `steps_per_execution` and `jit_compile` arguments for `Model.compile`.

        For models that compile themselves inside `build_model` (a GAN with
        two optimizers, say), so they get the same speed settings as the rest.

        Args:
            model: The model to be compiled; `jit_compile=auto` looks at its layers.
        """
        return {
            "steps_per_execution": speed.steps_per_execution(self.train, self._steps_per_epoch, self.num_replicas),
            "jit_compile": speed.jit_compile(self.train, model, self.num_replicas),
        }

    def fit(
        self,
        model: keras.Model | Callable[[], keras.Model],
        train: Data = None,
        validation: Data | float | None = None,
        *,
        loss: Any = None,
        metrics: Any = None,
        loss_weights: Any = None,
        weighted_metrics: Any = None,
        epochs: int | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        name: str | None = None,
        optimizer: keras.optimizers.Optimizer | Callable[[], keras.optimizers.Optimizer] | None = None,
        class_weight: Mapping[int, float] | None = None,
        validation_freq: int = 1,
        pad: bool = False,
        **fit_kwargs: Any,
    ) -> keras.Model:
        """Builds (or takes), compiles and fits a model inside the strategy's scope, and saves it.

        Takes the data Keras' own `fit` takes (see `kexp.engine.inputs`). A fit
        whose state file exists in the run folder (a resumed run) restores
        it and trains only the epochs still to do; one that had finished
        trains none and returns the trained model. The trained model is
        saved as `RUN_DIR/models/FIT.keras` (`kexp.load_model`), its
        `keras.callbacks.History` is `model.history` and `history[FIT]`.

        Args:
            model: A function that returns a new `keras.Model`, called inside
                `strategy.scope()` so that its variables are mirrored; or a
                model instance (under several replicas it must have been
                built inside `strategy.scope()`: pass a function instead). A
                model that comes compiled keeps its compilation; the harness
                still picks `steps_per_execution` when the model has Keras'
                default of 1 and `train.steps_per_execution` is 0 (auto).
            train: Training data: `(x,)`, `(x, y)` or `(x, y, sample_weight)`
                of arrays or nests of arrays, or an unbatched dataset; or a
                `keras.utils.PyDataset` or Python generator of batches, which
                Keras reads as it would in its own `fit` (`kexp.engine.streams` says
                what the harness then does and does not guarantee).
            validation: Validation data of the same kind, a fraction of
                `train` to hold out (its last examples, as Keras'
                `validation_split`), or None.
            loss: Loss for `compile`, as `Model.compile` takes it (one, or a
                list or dict by output). Compile arguments (`loss`, `metrics`,
                `loss_weights`, `weighted_metrics`, `optimizer`) are for a
                model the harness compiles: with a model its user compiled
                they are refused (`UsageError`), since Keras' `fit` takes none.
            metrics: Metrics for `compile` (a list, or a list or dict by output).
            loss_weights: As in `Model.compile`.
            weighted_metrics: As in `Model.compile`.
            epochs: Overrides `train.epochs`.
            callbacks: Extra callbacks, run after the standard logging ones
                and before the epoch's state is saved.
            name: This fit's name when a run trains several models: its
                sub-folder for TensorBoard logs and history, its state and
                its saved model. One folder name.
            optimizer: Overrides the optimizer named in the train config
                (e.g. for an auxiliary model); created inside the scope if
                callable. A `kexp.models.GAN` returned uncompiled gets two of
                `train.optimizer` (or two calls of this function), e.g.
                `optimizer=lambda: harness.optimizer(beta_1=0.5)`.
            class_weight: `{class_index: weight}`, as in Keras' `fit`: each
                example's loss is weighted by its class's weight.
            validation_freq: Validate every this many epochs, as in Keras' `fit`.
            pad: Batch examples of varying shapes (variable-length sequences)
                by padding each batch to its longest example (`padded_batch`).
            **fit_kwargs: Keras' `validation_data` or `validation_split`
                (as `validation`), `verbose` (this fit's; default the run's),
                and `steps_per_epoch` for a Python generator or an endless
                PyDataset. The harness owns `initial_epoch`, `shuffle`,
                `batch_size` and, for arrays and datasets, `steps_per_epoch`:
                passing one is a `UsageError` saying why.

        Returns:
            The trained model.

        Raises:
            UsageError: (a `ValueError`) for data of a shape Keras' `fit`
                refuses, an argument the harness refuses (saying why), or a
                model instance built outside a multi-replica strategy's scope.
                A refused call leaves nothing in the run folder.
            RunInterrupted: SIGINT/SIGTERM stopped the fit (the last completed
                epoch's state is on disk).
        """
        self.stop.check()
        keras_args = fitargs.keras_fit_arguments(validation, fit_kwargs)
        epochs = self.train.epochs if epochs is None else fitargs.count_argument("epochs", epochs, 1_000_000)
        validation_freq = fitargs.count_argument("validation_freq", validation_freq, 1_000_000)
        if train is None:
            raise UsageError("fit: received no training data; allowed: fit(model, (x, y)) or fit(model, (x,)), "
                             "an unbatched tf.data.Dataset, a keras.utils.PyDataset or a generator")
        compile_args = fitargs.compile_arguments(loss=loss, metrics=metrics, loss_weights=loss_weights,
                                                 weighted_metrics=weighted_metrics, optimizer=optimizer)
        if name is not None:
            rundir.check_name(name, "fit name")
        data = fitdata.prepare(self.pipeline, train, keras_args.validation, class_weight=class_weight,
                               epochs=epochs, steps_per_epoch=keras_args.steps_per_epoch,
                               global_batch_size=self.global_batch_size, num_replicas=self.num_replicas,
                               should_stop=self.stop.check)
        steps_per_epoch = data.steps_per_epoch
        self._steps_per_epoch, self._epochs = steps_per_epoch, epochs
        fit_name = self._backup_name(name or "model")
        backup_dir = self.backup_root / fit_name
        state = checkpoint.load(checkpoint.state_path(backup_dir)) \
            if checkpoint.state_path(backup_dir).exists() else None
        initial_epoch = min(state.epochs_done, epochs) if state else 0
        with self.strategy.scope():
            model, compiled_by = self._model_for_fit(model, compile_args, steps_per_epoch, epochs)
            if state is not None:
                # Before any callback writes: a state that does not fit fails with the folder untouched.
                one_batch, data = fitdata.first_batch(data, self.dataset) if building.needs_build(model) \
                    else (None, data)
                building.restore_built(model, state, f"--resume {str(self.run_dir)!r}", one_batch, self.strategy)
        group = 1 if data.is_stream else self._fused_group(model, data.train, data.n_train, pad)
        self.fit_settings[fit_name] = {**self._settings(model, data, compiled_by), "fused_steps": group > 1}
        if state is not None and initial_epoch >= epochs:
            # Trained to the end before the resume: nothing to train, nothing to write (a later fit's
            # state that does not fit then leaves the folder as it was).
            model.history = keras.callbacks.History()
            model.history.set_model(model)
            self._after_fit(model, model.history, fit_name, finished_before=True)
            return model
        if self.is_chief and initial_epoch == 0:
            self.images.write_text(f"model_summary/{fit_name}", modelinfo.summary_markdown(model))
        history = self._run_fit(model, data, fit_name, epochs, initial_epoch, validation_freq, pad, group,
                                callbacks, keras_args.verbose)
        self.stop.check()
        self._after_fit(model, history, fit_name)
        return model

    def _settings(self, model: keras.Model, data: fitdata.FitData, compiled_by: str) -> dict[str, Any]:
        """Returns what `results.json` `fits` records of a fit before it trains."""
        settings = {
            "steps_per_execution": int(model.steps_per_execution), "jit_compile": bool(model.jit_compile),
            "compiled_by": compiled_by, "global_batch_size": self.global_batch_size,
            "train_examples": data.n_all, "trained_examples_per_epoch": data.n_train,
            "validation_examples": data.n_validation,
        }
        if data.is_stream:
            settings["global_batch_size"] = None  # the stream's own batches
        return settings

    def _run_fit(self, model: keras.Model, data: fitdata.FitData, fit_name: str, epochs: int, initial_epoch: int,
                 validation_freq: int, pad: bool, group: int, callbacks: Sequence[keras.callbacks.Callback],
                 verbose: int | str | None) -> keras.callbacks.History:
        """Runs Keras' `fit` of one harness fit, from `initial_epoch`, with the harness's pipeline and callbacks.

        `group` is how many batches each compiled call runs fused (`_fused_group`; 1: Keras' own steps).
        """
        steps_per_epoch = data.steps_per_epoch
        steps_per_execution = int(model.steps_per_execution)
        # One input stream for the whole fit when a compiled call never spans
        # two epochs (a fused call ends with its epoch); else one iteration per epoch.
        one_stream = not data.is_stream and (steps_per_epoch % steps_per_execution == 0 or group > 1)
        if data.is_stream:
            train_ds = data.train
        else:
            # (A finished fit still gets its last epoch's stream: Keras may peek at a batch.)
            stream_epochs = (min(initial_epoch, epochs - 1), epochs)
            train_ds = self.dataset(data.train, training=True, epochs=stream_epochs if one_stream else None,
                                    num_examples=data.n_all, group=group, pad=pad)
        val_ds = data.validation
        if data.validation is not None and data.n_validation is not None:
            val_ds = self.dataset(data.validation, training=False, num_examples=data.n_validation, pad=pad)
        if data.is_stream:
            self.fit_settings[fit_name]["input"] = streams.describe(data.source, None, steps_per_epoch)
        if is_multi_worker(self.strategy):
            prepare_multi_worker_fit(model, self.strategy, train_ds)
        calls = (epochs - initial_epoch) * math.ceil((steps_per_epoch or 1) / steps_per_execution)
        all_callbacks, timer = self._callbacks(fit_name, epochs, initial_epoch, data, calls, one_stream, callbacks)
        fusing = fused.fused_steps(model, train_ds.element_spec, tail=data.n_train % self.global_batch_size != 0
                                   ) if group > 1 else built_locally(model, train_ds, self.strategy)
        try:
            with self.strategy.scope(), fusing:
                return model.fit(
                    train_ds,
                    validation_data=val_ds,
                    validation_freq=validation_freq,
                    epochs=epochs,
                    initial_epoch=initial_epoch,
                    # A stream's epoch is Keras' to end (a PyDataset's length), unless steps were given.
                    steps_per_epoch=steps_per_epoch if one_stream else data.given_steps,
                    callbacks=all_callbacks,
                    verbose=self.verbose if verbose is None else verbose,
                    shuffle=False,  # the pipeline already shuffles, seeded
                    class_weight=data.class_weight,  # a stream's (the pipeline weighs the others' examples)
                )
        finally:
            # Completed epochs count towards throughput however the fit ends.
            steady = timer.durations[1:] or timer.durations
            examples = data.examples_in_epochs(len(steady))
            if examples is not None:  # (a generator's examples per epoch are not known)
                self._train_seconds += sum(steady)
                self._train_samples += examples
            if steady and examples is not None:
                # This fit alone: what a comparison of models reports as its throughput.
                self.fit_settings[fit_name]["examples_per_s"] = examples / max(sum(steady), 1e-9)
            if data.is_stream:
                self.fit_settings[fit_name]["input"] = streams.describe(data.source, data.counter, steps_per_epoch)

    def _fused_group(self, model: keras.Model, train: Any, n_train: int, pad: bool) -> int:
        """Returns how many batches each compiled call runs in one loop (`kexp.engine.fused`), or 1 where it cannot."""
        steps_per_execution = int(model.steps_per_execution)
        held_as_tensors = not isinstance(train, tf.data.Dataset) or fixed_shapes(train)
        fusable = (
            self.train.fuse_steps and steps_per_execution > 1 and not pad
            # Data held as tensors is gathered a call's batches at a time: an
            # epoch's last call may hold fewer batches, and its partial last
            # batch rides along as a tail. Batches of other data may differ in
            # shape and cannot be stacked.
            and held_as_tensors and n_train >= self.global_batch_size
            and not is_multi_worker(self.strategy) and fused.supports(model))
        return steps_per_execution if fusable else 1

    def _callbacks(self, fit_name: str, epochs: int, initial_epoch: int, data: fitdata.FitData, calls: int,
                   stream: bool,
                   callbacks: Sequence[keras.callbacks.Callback]) -> tuple[list[keras.callbacks.Callback], EpochTimer]:
        """Returns a fit's callbacks, in the order their epoch-end work must run, and its timer.

        Each fit logs into its own folder: the run folder for the first
        unnamed one, else RUN_DIR/FIT (the name its state is kept under).
        """
        sub = self.run_dir if fit_name == "model" else self.run_dir / fit_name
        backup_dir = self.backup_root / fit_name
        gate = EpochGate(self.stop)
        timer = EpochTimer(gate)
        logging: list[keras.callbacks.Callback] = []
        if self.is_chief:
            sub.mkdir(parents=True, exist_ok=True)
            # The backup folder marks the fit as started: a resume that finds
            # it without a state file retrains from epoch 0 over no history.
            backup_dir.mkdir(parents=True, exist_ok=True)
            if self.resumed:
                # Logs written past the saved state (a kill between the two
                # writes, a failed state save) are dropped: no epoch twice.
                fitlogs.truncate(sub, initial_epoch)
            tb_timer = EpochTimer(gate)
            logging = [
                tb_timer,
                # The model's conceptual graph goes in once, at step 0, with the fit's first epoch.
                TensorBoardLogger(gate, tb_timer, data.last_epoch_examples if data.is_stream else data.n_train, log_dir=str(sub), write_graph=initial_epoch == 0,
                                  profile_batch=self._profile_range(sub, calls)),
                HistoryCSV(gate, str(sub / "history.csv")),
            ]
        data_epoch = self.data_epoch  # made outside the scope: a plain, unmirrored variable
        # Order matters at epoch end: the gate decides first whether the epoch
        # counts; logs are written before the state that says the epoch is done
        # (a crash in between repeats at most the last epoch's points); the
        # timer comes last so that all of it counts as epoch time.
        return [
            gate,
            # A stream's epoch count closes before anything reads it.
            *([streams.EpochCounts(data.counter)] if data.counter is not None else []),
            keras.callbacks.TerminateOnNaN(),
            StopOnRequest(self.stop),
            # A stream carries its epochs itself; a per-epoch pipeline reads `data_epoch`.
            *([] if stream or data.is_stream else [keras.callbacks.LambdaCallback(
                on_epoch_begin=lambda epoch, logs: data_epoch.assign(epoch))]),
            *logging,
            *callbacks,
            SaveState(backup_dir, gate, epochs, write=self.is_chief,
                            run_info={**self.run_info, "fit": fit_name} if self.run_info else None),
            timer,
        ], timer

    def _profile_range(self, sub: Path, calls: int) -> tuple[int, int] | int:
        """Returns Keras' `profile_batch` for `train.profile_steps`, saying where the trace goes.

        Args:
            sub: The fit's log folder.
            calls: Compiled calls the fit will run.
        """
        start, stop = self.train.profile_steps
        if not stop:
            return 0
        if start > calls:
            print(f"kexp: warning: train.profile_steps={start},{stop}: fit {sub.name!r} runs {calls} compiled "
                  f"call(s) (steps_per_execution batches each); nothing of it is profiled", file=sys.stderr)
            return 0
        import importlib.util

        where = sub / "train" / "plugins" / "profile"
        view = ("open it in TensorBoard's Profile tab" if importlib.util.find_spec("tensorboard_plugin_profile")
                else "TensorBoard's Profile tab shows it once its optional plugin is installed: "
                "pip install tensorboard-plugin-profile (or the extra kexp[profile])")
        print(f"kexp: profiling compiled calls {start}-{stop} into {where}; {view}", file=sys.stderr)
        return (start, stop)

    def _after_fit(self, model: keras.Model, history: keras.callbacks.History, fit_name: str,
                   finished_before: bool = False) -> None:
        """Records the fit: history, divergence, what trained it, its saved model.

        A fit that had finished before a resume keeps the model file it
        saved then; it is written only if a kill came before it was.
        """
        self.history[fit_name] = history
        losses = history.history.get("loss", [])
        if any(not math.isfinite(v) for v in losses) or not modelinfo.finite_weights(model):
            # NaN in the inputs can leave finite logged losses but NaN weights.
            self.status = "diverged"
        self.fit_settings[fit_name].update(modelinfo.describe_training(model))
        saved = saving.model_path(self.run_dir, fit_name)
        if finished_before and saved.is_file():
            self.saved_models[fit_name] = str(saved.relative_to(self.run_dir))
        elif self.is_chief:
            try:
                path = saving.save_fit_model(model, self.run_dir, fit_name)
                self.saved_models[fit_name] = str(path.relative_to(self.run_dir))
            except saving.NotSaveable as err:
                # The training stands; only the file is missing, and results.json says why.
                self.fit_settings[fit_name]["not_saved"] = str(err)
                print(f"kexp: warning: fit {fit_name!r} trained, but Keras cannot save it ({err}); "
                      "results.json fits says so", file=sys.stderr)

    def _model_for_fit(self, model: Any, compile_args: dict[str, Any], steps_per_epoch: int | None,
                       epochs: int) -> tuple[keras.Model, str]:
        """Returns the model to fit, built and compiled in the strategy's scope, and who compiled it.

        Call inside `strategy.scope()`.
        """
        model = fitargs.model_from(model, self.num_replicas, self.strategy_name)
        if not model.compiled:
            fitargs.needs_loss(model, compile_args, isinstance(model, GAN))
            self.compile(model, **compile_args, steps_per_epoch=steps_per_epoch, epochs=epochs)
            return model, "harness"
        fitargs.check_compile_arguments(model, compile_args)
        if self.train.steps_per_execution == 0 and int(model.steps_per_execution) == 1 \
                and model.train_function is None and steps_per_epoch:
            # Keras' default of one step per call: the harness's choice
            # costs the user nothing and is worth 1.2-4x on small models.
            model.steps_per_execution = speed.steps_per_execution(self.train, steps_per_epoch, self.num_replicas)
            return model, "user (steps_per_execution chosen by the harness)"
        return model, "user"

    def _backup_name(self, name: str) -> str:
        # Fits of a run get their state files in call order (model, model_2,
        # ...), so a resumed run maps each fit to its own state.
        self._fits[name] = self._fits.get(name, 0) + 1
        return name if self._fits[name] == 1 else f"{name}_{self._fits[name]}"

    def evaluate(self, model: keras.Model, data: Data, prefix: str = "test_", *, pad: bool = False
                 ) -> dict[str, float]:
        """Evaluates `model` on held-out data inside the strategy's scope, scoring every example.

        Args:
            model: A compiled model.
            data: What `fit` takes (`kexp.engine.inputs`): arrays or an unbatched dataset.
            prefix: Put before each metric name.
            pad: Pad each batch to its longest example (as `fit(pad=True)`).

        Returns:
            `{prefix + metric_name: value}`, e.g. `{"test_loss": 0.01}`.
        """
        self.stop.check()
        if streams.is_stream(data):
            # Keras reads it as its own `evaluate` would (`kexp.engine.streams`).
            ds = streams.prepare(data, "data", self.num_replicas, 1, None)[0]
        else:
            data = inputs.normalize(data, "data")
            n = inputs.count_examples(data, "data", self.stop.check)
            ds = self.dataset(data, training=False, num_examples=n, pad=pad)
        with self.strategy.scope(), built_locally(model, ds, self.strategy):
            values = model.evaluate(ds, verbose=0, return_dict=True)
        return {f"{prefix}{k}": float(v) for k, v in values.items()}

    # -- outputs ----------------------------------------------------------

    def record(self, **metrics: float) -> None:
        """Adds quality figures to the run's `results.json` `metrics`."""
        for key, value in metrics.items():
            self.metrics[key] = float(value)
