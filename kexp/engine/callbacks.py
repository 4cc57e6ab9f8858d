"""Internal: the Keras callbacks the harness adds to every fit (timing, stopping, logging, saving state)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import keras

from kexp.store import checkpoint
from kexp.errors import WriteError
from kexp.engine.interrupt import StopRequest
from kexp.engine.outputs import event_writer, flush_events


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
        if not self.complete:
            # Keras has printed this epoch's line as if it were whole; the CLI says it was dropped.
            self.stop.dropped_epoch = epoch + 1


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
        for key, writer in self._writers.items():
            flush_events(writer, self._train_dir if key == "train" else self._val_dir)

    # Keras creates its writers on first use; TensorFlow's failure (a full disk) then names no file.
    @property
    def _train_writer(self) -> Any:
        if "train" not in self._writers:
            self._writers["train"] = event_writer(self._train_dir)
        return self._writers["train"]

    @property
    def _val_writer(self) -> Any:
        if "val" not in self._writers:
            self._writers["val"] = event_writer(self._val_dir)
        return self._writers["val"]

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


class ReportToTrial(keras.callbacks.Callback):
    """Reports each completed epoch's loss to the `kexp search` trial the run belongs to; stops the fit if pruned.

    Put it after `SaveState`: a pruned trial's last epoch is in its logs
    and state like any other.

    Args:
        link: The run's trial (`kexp.engine.trial_link.current`).
        gate: The fit's `EpochGate`.
        fit: The fit's name.
        epochs: Epochs the fit runs for.
        validates: Whether the fit has validation data: its epochs then
            report `val_loss` (epochs without validation report nothing),
            else `loss`.
    """

    def __init__(self, link: Any, gate: EpochGate, fit: str, epochs: int, validates: bool) -> None:
        super().__init__()
        self.link, self.gate, self.fit, self.epochs, self.validates = link, gate, fit, epochs, validates
        self.pruned_after: int | None = None

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        loss = (logs or {}).get("val_loss" if self.validates else "loss")
        if not self.gate.complete or loss is None:
            return  # a GAN's fit logs no `loss`: its trials are never pruned
        if self.link.report(self.fit, self.epochs, epoch, float(loss)):
            self.pruned_after = epoch + 1
            self.model.stop_training = True


def _all_finite(logs: Any) -> bool:
    for value in (logs or {}).values():
        try:
            if not math.isfinite(float(value)):
                return False
        except (TypeError, ValueError):
            continue
    return True
