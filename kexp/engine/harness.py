"""The one fit/evaluate harness every experiment trains through.

It owns the run: the `tf.distribute` strategy, the run folder, seeded
`tf.data` pipelines, compile and fit inside `strategy.scope()`, the standard
callbacks (TensorBoard, the per-epoch state file `--resume` continues from, TerminateOnNaN, CSV
history, clean stops on SIGINT/SIGTERM), figures, and what `results.json` reports of each fit.

Use it on your own Keras model without writing an experiment file:

    import kexp

    with kexp.open_run("my_model", train=kexp.TrainConfig(epochs=5)) as harness:
        model = harness.fit(build_model, (x_train, y_train), (x_val, y_val), loss="mse")
        harness.record(**harness.evaluate(model, (x_test, y_test)))
    print(harness.run_dir, harness.results["metrics"])
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import keras
import tensorflow as tf

from kexp.engine import compiling, fitargs, fitdata, fitrun, modelinfo, optim
from kexp.engine.plan import FitPlan, make_plan, overridden
from kexp.engine.compat import quiet_retracing_warnings
from kexp.config import TrainConfig
from kexp.engine.interrupt import StopRequest
from kexp.engine.outputs import RunOutputs
from kexp.engine.pipeline import Pipeline
from kexp.store.record import RunStatus
from kexp.engine.strategy import is_chief
from kexp.store import layout

Data = Any  # what `fit` takes: see `kexp.engine.inputs`


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
            `model_2`, or its `name`): `steps_per_execution`, `jit_compile` (and
            `jit_compile_set_by`, why), `fused_steps` (batches fused), `compiled_by`,
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
        seeded_globally: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.backup_root = Path(backup_root) if backup_root else layout.backup_root(self.run_dir)
        self.stop = stop or StopRequest()
        self.train = train
        self.strategy = strategy
        self.strategy_name = strategy_name
        self.metrics: dict[str, float] = {}
        self.status = RunStatus.OK
        self.results: dict[str, Any] = {}
        self.is_chief = is_chief(strategy)
        quiet_retracing_warnings()
        self.verbose = (1 if sys.stdout.isatty() else 2) if verbose == "auto" else verbose
        self._train_seconds = 0.0
        self._train_samples = 0
        self.pipeline = Pipeline(train, int(strategy.num_replicas_in_sync), strategy_name)
        # The plan of the fit whose model is being built and compiled (`building`); None otherwise.
        self._building: FitPlan | None = None
        self.fit_settings: dict[str, dict[str, Any]] = {}
        self.run_info = run_info
        self.resumed = resumed
        self.seeded_globally = seeded_globally  # whether the run seeded Python, NumPy and TF (`results.json`)
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
        configured = self.train
        changed = overridden(configured, changes)
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
    def train_samples_per_s(self) -> float | None:
        """Training throughput over steady-state epochs (first epoch of each fit excluded); None: none trained."""
        return self._train_samples / self._train_seconds if self._train_seconds > 0 else None

    # -- model ------------------------------------------------------------

    def optimizer(self, total_steps: int | None = None, **options: Any) -> keras.optimizers.Optimizer:
        """Returns a fresh optimizer as `train.optimizer` names it, with its learning rate or schedule.

        Works inside or outside a fit: nothing of an earlier fit is read. For
        the configured optimizer with other arguments in a fit, pass
        `fit(..., optimizer_options={...})`: the harness then makes it with
        the fit's schedule (two, for a GAN).

        Args:
            total_steps: Optimizer steps a cosine `train.lr_schedule` decays over (a fit's
                `FitPlan.total_steps`); without it, the constant rate.
            **options: More arguments of that optimizer (e.g. Adam's `beta_1`).
        """
        return optim.make_optimizer(self.train, total_steps, **options)

    def compile(
        self,
        model: keras.Model,
        *,
        loss: Any,
        metrics: Any = None,
        optimizer: keras.optimizers.Optimizer | Callable[[], keras.optimizers.Optimizer] | None = None,
        optimizer_options: Mapping[str, Any] | None = None,
        steps_per_epoch: int | None = None,
        epochs: int | None = None,
        loss_weights: Any = None,
        weighted_metrics: Any = None,
    ) -> keras.Model:
        """Compiles `model` with the train config's optimizer and speed settings.

        Call inside `strategy.scope()` (`fit` does). `loss`, `metrics`,
        `loss_weights`, `weighted_metrics`, `optimizer` and `optimizer_options`
        are as `fit` takes them.

        Args:
            model: The model to compile.
            steps_per_epoch: Lets `steps_per_execution=0` pick a value.
            epochs: With `steps_per_epoch`, the length of a cosine schedule
                (`train.epochs` if not given), and of the fit `jit_compile=auto` weighs.

        Returns:
            The compiled model.
        """
        building = self._building
        if building is not None:  # a builder compiling its own model: the fit it is built for
            steps_per_epoch, epochs = steps_per_epoch or building.steps_per_epoch, epochs or building.epochs
        return compiling.compile_model(
            model, self.train, self.num_replicas, loss=loss, metrics=metrics, optimizer=optimizer,
            optimizer_options=optimizer_options, steps_per_epoch=steps_per_epoch, epochs=epochs,
            loss_weights=loss_weights, weighted_metrics=weighted_metrics, plan=building)

    def compile_options(self, model: keras.Model | None = None, steps_per_epoch: int | None = None) -> dict[str, Any]:
        """Returns the `steps_per_execution` and `jit_compile` arguments for `Model.compile`.

        For models that compile themselves inside `build_model` (a GAN with
        two optimizers, say), so they get the same speed settings as the rest.

        Args:
            model: The model to be compiled; `jit_compile=auto` looks at its layers.
            steps_per_epoch: The fit's steps per epoch, which `steps_per_execution=0` (auto) divides.
        """
        building = self._building  # set: a builder's call, for the fit it builds for
        steps_per_epoch = steps_per_epoch or (building.steps_per_epoch if building else None)
        return compiling.compile_options(self.train, self.num_replicas, model, steps_per_epoch, plan=building)

    @contextlib.contextmanager
    def building(self, plan: FitPlan) -> Iterator[None]:
        """Within the block, `compile` and `compile_options` called by a builder take `plan`'s length.

        `fit` calls a builder inside it; outside a fit nothing is assumed.
        """
        self._building = plan
        try:
            yield
        finally:
            self._building = None

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
        optimizer_options: Mapping[str, Any] | None = None,
        class_weight: Mapping[int, float] | None = None,
        validation_freq: int = 1,
        pad: bool = False,
        **fit_kwargs: Any,
    ) -> keras.Model:
        """Builds (or takes), compiles and fits a model inside the strategy's scope, and saves it.

        A resumed run's fit restores its state and trains the epochs still to do. The model is saved as
        `RUN_DIR/models/FIT.keras`; its `History` is `model.history` and `history[FIT]`.

        Args:
            model: A function returning a new `keras.Model`, called inside `strategy.scope()` so that its
                variables are mirrored; or a model instance (under several replicas, built inside the scope).
                A model that comes compiled keeps its compilation (the harness still picks
                `steps_per_execution` when it has Keras' default of 1 and `train.steps_per_execution` is 0).
            train: `(x,)`, `(x, y)` or `(x, y, sample_weight)` of (nests of) arrays, an unbatched dataset, or a
                `keras.utils.PyDataset` or generator of batches, as Keras reads them (`kexp.engine.streams`).
            validation: Data of the same kind, a fraction of `train` held out (its last examples), or None.
            loss: As `Model.compile` takes it. The compile arguments (`loss`, `metrics`, `loss_weights`,
                `weighted_metrics`, `optimizer`, `optimizer_options`) are for a model the harness compiles:
                with a model its user compiled they are refused (`UsageError`), as none would apply.
            metrics: As `Model.compile` takes them (a list, or a list or dict by output).
            loss_weights: As in `Model.compile`.
            weighted_metrics: As in `Model.compile`.
            epochs: Overrides `train.epochs`.
            callbacks: Extra callbacks, run after the logging ones, before the epoch's state is saved.
            name: The fit's name (one folder name): its logs' sub-folder, its state and its saved model.
            optimizer: Overrides `train.optimizer`: an optimizer, or a function called inside the scope
                (a `kexp.models.GAN` gets two calls, one per network).
            optimizer_options: More arguments of `train.optimizer` (e.g. `{"beta_1": 0.5}`), which the
                harness makes with this fit's schedule (two, for a GAN).
            class_weight: `{class_index: weight}`, as in Keras' `fit`.
            validation_freq: Validate every this many epochs, as in Keras' `fit`.
            pad: Pad each batch to its longest example (sequences of varying length).
            **fit_kwargs: Keras' `validation_data` or `validation_split` (as `validation`), `verbose` (this
                fit's), and `steps_per_epoch` for a generator or an endless PyDataset. The harness owns
                `initial_epoch`, `shuffle`, `batch_size` and, for arrays and datasets, `steps_per_epoch`.

        Returns:
            The trained model.

        Raises:
            UsageError: (a `ValueError`) for data or arguments refused, saying why; nothing is left in the folder.
            RunInterrupted: SIGINT/SIGTERM stopped the fit (the last completed epoch's state is on disk).
        """
        self.stop.check()
        keras_args, compile_args = fitargs.checked(train, validation, fit_kwargs, name, dict(
            loss=loss, metrics=metrics, loss_weights=loss_weights, weighted_metrics=weighted_metrics,
            optimizer=optimizer, optimizer_options=optimizer_options))
        data, plan = self._plan(train, keras_args, name, epochs, validation_freq, class_weight, pad)
        model, compiled, data = compiling.prepare_model(self, model, compile_args, plan, data)
        with compiling.one_step_per_call_after(model, compiled):
            group = fitrun.fused_group(self, model, data, pad)
            self.fit_settings[plan.name] = fitrun.settings_before_training(self, model, data, compiled, group)
            if plan.finished_before:
                # Trained to the end before the resume: nothing to train, nothing to write.
                history = model.history = keras.callbacks.History()
                history.set_model(model)
            else:
                if self.is_chief and plan.initial_epoch == 0:
                    self.images.write_text(f"model_summary/{plan.name}", modelinfo.summary_markdown(model))
                history = fitrun.run_fit(self, model, data, plan, group, callbacks, keras_args.verbose)
                self.stop.check()
        fitrun.record_fit(self, model, history, plan.name, finished_before=plan.finished_before)
        return model

    def _plan(self, train: Data, keras_args: fitargs.KerasFitArguments, name: str | None, epochs: int | None,
              validation_freq: int, class_weight: Mapping[int, float] | None, pad: bool
              ) -> tuple[fitdata.FitData, FitPlan]:
        """Returns a fit's data, checked and counted, and its plan (which reads a resumed run's state)."""
        epochs = self.train.epochs if epochs is None else fitargs.count_argument("epochs", epochs, 1_000_000)
        validation_freq = fitargs.count_argument("validation_freq", validation_freq, 1_000_000)
        data = fitdata.prepare(self.pipeline, train, keras_args.validation, class_weight=class_weight,
                               epochs=epochs, steps_per_epoch=keras_args.steps_per_epoch,
                               global_batch_size=self.global_batch_size, num_replicas=self.num_replicas,
                               should_stop=self.stop.check)
        plan = make_plan(self.run_dir, self.backup_root, self._fit_name(name or "model"), epochs=epochs,
                         steps_per_epoch=data.steps_per_epoch, validation_freq=validation_freq, pad=pad,
                         streamed=data.is_stream)
        return data, plan

    def count_trained(self, seconds: float, examples: int) -> None:
        """Adds a fit's steady-state epochs to the run's throughput (`train_samples_per_s`).

        Args:
            seconds: Their wall time.
            examples: The examples they trained on.
        """
        self._train_seconds += seconds
        self._train_samples += examples

    def _fit_name(self, name: str) -> str:
        """Returns the fit's name in the run: the first of NAME, NAME_2, ... that no earlier fit took.

        Fits are numbered in call order, so a resumed run maps each fit to its
        own state; a fit refused before it trained takes no name.
        """
        number = 1
        while (candidate := name if number == 1 else f"{name}_{number}") in self.fit_settings:
            number += 1
        return candidate

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
        return fitrun.evaluate_model(self, model, data, prefix, pad)

    # -- outputs ----------------------------------------------------------

    def record(self, **metrics: float) -> None:
        """Adds quality figures to the run's `results.json` `metrics`."""
        for key, value in metrics.items():
            self.metrics[key] = float(value)
