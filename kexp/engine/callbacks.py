"""Internal: Keras callbacks and TensorBoard writers the harness adds to every fit, and recorders experiments pass."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import keras
import tensorflow as tf

from kexp.store import checkpoint, fitlogs, rundir
from kexp.errors import UsageError, WriteError
from kexp.engine.interrupt import StopRequest


class EpochTimer(keras.callbacks.Callback):
    """Records the training time of each epoch, validation excluded.

    Put it last in the callback list: the epoch-end work of the callbacks
    before it (history, TensorBoard, the state file) then counts as part of
    the epoch, as a user waiting for it would count it.

    Args:
        gate: The fit's `EpochGate`, when an epoch cut short by a stop must
            not count (it trained on part of the data only).

    Attributes:
        durations: Seconds spent in each finished epoch, validation excluded.
    """

    def __init__(self, gate: EpochGate | None = None) -> None:
        super().__init__()
        self.gate = gate
        self.durations: list[float] = []
        self._start: float | None = None
        self._elapsed = 0.0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._elapsed = 0.0
        self._start = time.perf_counter()

    def on_test_begin(self, logs: Any = None) -> None:
        # Validation inside fit starts here: pause the epoch's clock.
        if self._start is not None:
            self._elapsed += time.perf_counter() - self._start
            self._start = None

    def on_test_end(self, logs: Any = None) -> None:
        if self._elapsed:
            self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self._start is not None:
            self._elapsed += time.perf_counter() - self._start
            self._start = None
        if self.gate is None or self.gate.complete:
            self.durations.append(self._elapsed)


class EpochGate(keras.callbacks.Callback):
    """Decides, once per epoch end, whether the epoch completed.

    An epoch cut short by a stop request must leave no trace (no history row,
    no TensorBoard point, no saved state): `--resume` runs it again from its
    start, and its curves must not hold the same epoch twice. Put it first in
    the callback list; the callbacks that log epochs ask `complete`.

    Args:
        stop: The run's stop request.
    """

    def __init__(self, stop: StopRequest) -> None:
        super().__init__()
        self.stop = stop
        self.complete = True

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.complete = True

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.complete = not self.stop.requested


class StopOnRequest(keras.callbacks.Callback):
    """Stops `fit` at the next step boundary once the run's stop request fires."""

    def __init__(self, stop: StopRequest) -> None:
        super().__init__()
        self.stop = stop
        self._remove: Any = None

    def on_train_begin(self, logs: Any = None) -> None:
        self._remove = self.stop.on_request(self._request)
        if self.stop.requested:
            self._request()

    def _request(self) -> None:
        # Called from the signal watcher thread; Keras reads the flag between steps.
        self.model.stop_training = True

    def on_train_end(self, logs: Any = None) -> None:
        if self._remove is not None:
            self._remove()


class TensorBoardLogger(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback that flushes every completed epoch, skips cut-short ones, and logs more.

    Keras' writers flush every two minutes; a process killed in between
    would lose the curves of the epochs its saved state says are done.
    Besides Keras' `epoch_*` scalars it writes, under `train/`, the epoch's
    training throughput (`epoch_examples_per_s`, validation excluded) and
    the learning rate of every optimizer a model holds (Keras logs
    `model.optimizer`'s only; a `kexp.models.GAN` has two).

    Args:
        gate: The fit's `EpochGate`.
        timer: An `EpochTimer` that runs before this callback.
        examples_per_epoch: Examples one epoch trains on, or a function returning the last epoch's count.
        **kwargs: Passed to `keras.callbacks.TensorBoard`.
    """

    def __init__(self, gate: EpochGate, timer: EpochTimer, examples_per_epoch: int | Callable[[], int],
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate
        self.timer = timer
        self.examples_per_epoch = examples_per_epoch

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if not self.gate.complete:
            return
        logs = dict(logs or {})  # a copy: History and the CSV keep Keras' own keys
        seconds = self.timer.durations[-1] if self.timer.durations else 0.0
        # A stream's examples are counted as they pass (`kexp.engine.streams`): a function gives the epoch's count.
        examples = self.examples_per_epoch() if callable(self.examples_per_epoch) else self.examples_per_epoch
        if seconds > 0 and examples:
            logs["examples_per_s"] = examples / seconds
        super().on_epoch_end(epoch, logs)
        for writer in self._writers.values():
            writer.flush()

    def on_test_end(self, logs: Any = None) -> None:
        # Keras also writes `evaluation_*_vs_iterations` here: the epoch's
        # validation values again, stepped by optimizer iterations. They add
        # nothing to `validation/epoch_*` but a second column per metric in HParams.
        self._pop_writer()

    def _collect_learning_rate(self, logs: dict[str, Any]) -> dict[str, Any]:
        # The optimizers that trained (built ones): a GAN's `model.optimizer` is
        # Keras' unused compile default, and its two real ones are elsewhere.
        optimizers = checkpoint.optimizers_of(self.model)
        if list(optimizers) in ([], ["optimizer"]):
            return super()._collect_learning_rate(logs)
        for attr, optimizer in optimizers.items():
            optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
            logs[f"learning_rate_{attr}"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        return logs


class HistoryCSV(keras.callbacks.CSVLogger):
    """Keras' CSVLogger that appends (a resumed fit continues the file) and skips cut-short epochs.

    Args:
        gate: The fit's `EpochGate`.
        filename: The CSV file.
    """

    def __init__(self, gate: EpochGate, filename: str) -> None:
        super().__init__(filename, append=True)
        self.gate = gate

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if not self.gate.complete:
            return
        try:
            super().on_epoch_end(epoch, logs)
        except OSError as err:
            raise WriteError(self.filename, err) from None


class SaveState(keras.callbacks.Callback):
    """Saves the fit's state (`kexp.store.checkpoint`) after every completed epoch.

    Restoring is the harness's job, before `fit` starts: it needs the saved
    epoch to start the data and the epoch counter there.

    Args:
        backup_dir: The fit's backup folder.
        gate: The fit's `EpochGate`.
        epochs: Epochs the fit runs for.
        write: False on non-chief workers of a multi-worker run, which keep no files.
        run_info: What the run trains under (experiment and config), saved
            with the state so that a resume can check `config.json` against it.
    """

    def __init__(self, backup_dir: Path, gate: EpochGate, epochs: int, write: bool = True,
                 run_info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.gate = gate
        self.epochs = epochs
        self.write = write
        self.run_info = run_info

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if not self.gate.complete or not self.write:
            return
        if not _all_finite(logs):
            return  # diverged: keep the last good state
        checkpoint.save(self.backup_dir, self.model, epoch + 1, self.epochs, run=self.run_info)


class LayerWeightsRecorder(keras.callbacks.Callback):
    """Keeps one layer's weights, flattened and concatenated (kernel then bias), after every epoch.

    Args:
        layer: The layer's name in the fitted model.

    Attributes:
        values: One flat NumPy array per epoch this process trained.
    """

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer
        self.values: list[Any] = []

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        import numpy as np

        weights = self.model.get_layer(self.layer).get_weights()
        self.values.append(np.concatenate([np.ravel(w) for w in weights]))


class CurveRecorder(EpochTimer):
    """Records a point after every epoch: examples seen, training seconds, and `value()` (None here).

    Seconds count training only, as `EpochTimer` does (validation and the
    recorder's own work excluded; the first epoch's tracing, and a resumed
    fit's first epoch's retracing, included). With `path` the points are
    kept in a JSON file after every epoch, so that a resumed fit continues
    them (points past the restored epoch are dropped) and a fit that had
    finished before the resume still has them (`load`).

    Args:
        examples_per_epoch: Examples one epoch trains on.
        path: JSON file the points are kept in; None keeps them in memory only.

    Attributes:
        points: `(examples_seen, seconds, value)`, the first one before training.
    """

    def __init__(self, examples_per_epoch: int, path: Path | None = None) -> None:
        super().__init__()
        self.examples_per_epoch = examples_per_epoch
        self.path = Path(path) if path else None
        self.points: list[tuple[int, float, float | None]] = []

    def value(self) -> float | None:
        """The quantity recorded after each epoch; subclasses measure one."""
        return None

    def load(self) -> list[tuple[int, float, float | None]]:
        """Returns the points kept in `path` (empty without one)."""
        if self.path is None:
            return []
        kept = rundir.read_json(self.path, missing={"points": []})  # a crafted file: CorruptFile (exit 2), naming it
        points = kept.get("points") if isinstance(kept, dict) else None
        if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 3 for p in points):
            raise UsageError(f"{self.path}: not a curve file kexp wrote (points of [examples, seconds, value])")
        return [tuple(point) for point in points]  # type: ignore[misc]

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if not self.points:  # this process's first epoch: epoch 0, or where a resumed fit goes on
            done = epoch * self.examples_per_epoch
            self.points = [p for p in self.load() if p[0] <= done]
            if not self.points or self.points[-1][0] != done:
                self.points = [(done, 0.0, self.value())]
        super().on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        super().on_epoch_end(epoch, logs)
        if not self.durations:
            return
        seconds = self.points[-1][1] + self.durations[-1]
        self.points.append(((epoch + 1) * self.examples_per_epoch, seconds, self.value()))
        if self.path is not None:
            rundir.write_json(self.path, {"points": self.points})

    def steady_examples_per_s(self) -> float:
        """Examples per second of the median epoch after the first (which holds the tracing), from `points`.

        With a single epoch recorded, that epoch's (tracing included); NaN with none.
        """
        import numpy as np

        points = self.points or self.load()
        seconds = np.diff([p[1] for p in points])
        if not len(seconds):
            return math.nan
        return self.examples_per_epoch / max(float(np.median(seconds[1:] if len(seconds) > 1 else seconds)), 1e-9)


class LossCurveRecorder(CurveRecorder):
    """A `CurveRecorder` of the loss on fixed data (e.g. the whole training set) after every epoch.

    The loss is the plain mean of `loss` over the examples: no
    regularization penalty, and no division by the number of replicas that
    Keras applies to a loss computed inside a distribution strategy.

    Args:
        x: Inputs to score.
        y: Their targets.
        loss: A Keras loss object or function of `y_true, y_pred`.
        examples_per_epoch: Examples one epoch trains on.
        path: JSON file the curve is kept in (see `CurveRecorder`).
    """

    def __init__(self, x: Any, y: Any, loss: Any, examples_per_epoch: int, path: Path | None = None) -> None:
        super().__init__(examples_per_epoch, path)
        self.x, self.y = x, y
        # A Loss object's `call` gives per-example values, before any reduction or scaling.
        self.per_example = getattr(loss, "call", loss)
        self._score: Any = None

    def value(self) -> float:
        if self._score is None:
            self._score = tf.function(
                lambda x, y: tf.reduce_mean(self.per_example(y, self.model(x, training=False))))
        return float(self._score(self.x, self.y))


def _all_finite(logs: Any) -> bool:
    for value in (logs or {}).values():
        try:
            if not math.isfinite(float(value)):
                return False
        except (TypeError, ValueError):
            continue
    return True


class SummaryWriter:
    """Writes run-level TensorBoard summaries (images, text, scalars, HParams) into one folder's event file.

    In a resumed run (`replace_existing`), a point written at a `(tag, step)`
    that the folder already holds (one the interrupted process wrote before
    its state was saved) replaces the old one, so that no step shows twice.

    Args:
        logdir: The folder.
        replace_existing: Drop earlier points at the `(tag, step)` of each new one.
    """

    def __init__(self, logdir: Path, replace_existing: bool = False) -> None:
        self._logdir = Path(logdir)
        self._old_files = fitlogs.event_files(self._logdir) if replace_existing else []
        self._old_points = fitlogs.points(self._old_files) if self._old_files else set()
        fitlogs.remove_temp_files(self._logdir)
        self._writer = tf.summary.create_file_writer(str(logdir))

    def write_png(self, tag: str, png: bytes, step: int = 0) -> None:
        """Adds one PNG as image summary `tag` at `step`."""
        image = tf.image.decode_png(png, channels=4)[tf.newaxis]
        with self._writer.as_default():
            tf.summary.image(tag, image, step=step)
        self._written([tag], step)

    def write_text(self, tag: str, text: str, step: int = 0) -> None:
        """Adds one Markdown text summary."""
        with self._writer.as_default():
            tf.summary.text(tag, text, step=step)
        self._written([tag], step)

    def write_scalars(self, values: dict[str, float], step: int = 0) -> None:
        """Adds one scalar summary per `tag: value`, all at `step`."""
        with self._writer.as_default():
            for tag, value in values.items():
                tf.summary.scalar(tag, value, step=step)
        self._written(list(values), step)

    def write_hparams(self, hparams: dict[str, Any], trial_id: str) -> None:
        """Adds the HParams plugin's session start info: this folder is one session with these values."""
        from tensorboard.plugins.hparams import api as hp
        from tensorboard.plugins.hparams import metadata

        with self._writer.as_default():
            hp.hparams(hparams, trial_id=trial_id)
        self._written([metadata.SESSION_START_INFO_TAG], 0)

    def write_session_end(self, status: str) -> None:
        """Adds the HParams plugin's session end info; `status` is a run status (`ok`, `diverged`, ...)."""
        from tensorboard.plugins.hparams import api_pb2, metadata
        from tensorboard.plugins.hparams import summary as hparams_summary

        # The plugin has no "aborted": an interrupted (resumable) run is unknown.
        code = {"ok": api_pb2.STATUS_SUCCESS, "interrupted": api_pb2.STATUS_UNKNOWN}.get(
            status, api_pb2.STATUS_FAILURE)
        with self._writer.as_default():
            tf.summary.experimental.write_raw_pb(
                hparams_summary.session_end_pb(code).SerializeToString(), step=0)
        self._written([metadata.SESSION_END_INFO_TAG], 0)

    def _written(self, tags: list[str], step: int) -> None:
        self._writer.flush()
        # The new point is on disk first: a kill in between leaves it twice, never missing.
        replaced = {(tag, step) for tag in tags} & self._old_points
        if replaced:
            fitlogs.drop_points(self._old_files, replaced)
            self._old_points -= replaced

    def close(self) -> None:
        self._writer.close()
