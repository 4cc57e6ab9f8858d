"""Internal: cuts a fit's logs back to the epochs its saved state says are done.

A fit writes, in its folder SUB, per completed epoch: a row of
`SUB/history.csv` (Keras' CSVLogger format: a header line, then one row per
epoch whose first column is the 0-based epoch) and TensorBoard points at
step = epoch in the event files under `SUB/train/` and `SUB/validation/`. The
logs are written before the state file that says the epoch is done, so a
process killed in between leaves logs one epoch ahead of its state. A resumed
fit trains that epoch again and logs it again: the history would read
0, 1, 1, 2 and the curves would hold step 1 twice.

`truncate(SUB, epochs_done)`, called at resume before the fit's loggers open,
drops what was logged for every epoch >= epochs_done.

What it never touches: the event files directly in SUB. For the first
unnamed fit SUB is the run folder, whose own event file is the run's:
the HParams session, the config text, each fit's model summary and the final
`metrics/*` at step 0, and the experiment's figures and text at steps it
chooses (the epoch of a GAN sample, or of another fit). Their steps are not
this fit's epochs (with epochs_done = 0 a cut by step would drop the config
text, which a resumed run does not write again), so they are not cut here. A resumed run's run-level writer (`kexp.engine.outputs`) instead
replaces each point it writes again at a `(tag, step)` the folder holds: the
figure of an epoch logged before a kill is replaced when the resumed run
logs that epoch again. Nor are SUB's sub-folders `backup`, `models` and
`plots` (the figures and text of runs written before they moved to the root)
touched, or other fits' folders.

Which epoch an event-file point belongs to: most summaries are written at
step = epoch (`epoch_*`, histograms, images). Keras' TensorBoard callback also
writes `evaluation_*_vs_iterations` into `validation/` at step = the
optimizer's iteration count (and, with `update_freq` set, `batch_*` points at
step = global batch): those steps are not epochs. Such a point is written
during its epoch, before that epoch's `epoch_*` points in the same file, so it
belongs to the epoch of the next `epoch_*` point that follows it in its file;
with none after it, its epoch's end was never logged (a kill, or an epoch cut
short) and it goes too. Events without summary values (file_version, graph,
run metadata) are kept whatever their step.

Why rewrite ("purge") the event files instead of leaving it to TensorBoard's
own orphan purge: TensorBoard purges orphaned points only on a restart it can
see. For the TF2 event files Keras writes (file_version `brain.Event:2`) that
is a `SessionLog.START` event, which Keras never writes; the out-of-order-step
check applies to old-format files only. Left alone, the repeated epoch shows
up twice in every curve (and in any other reader of the files). So the files
are rewritten, each under its own name, keeping every record except the
points of epochs >= epochs_done (as attributed above): TensorBoard, which
reads a folder's files in name order, sees the same files as before, and the
resumed fit's writer adds a new one after them.

This module does not import TensorFlow at import time; `truncate` imports it
when it has event files to read.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

from kexp.errors import WriteError
from kexp.store.rundir import fsync_dir, why_unwritable
from kexp.store.layout import BACKUP, HISTORY, MODELS, OLD_PLOTS

__all__ = ["truncate", "points", "drop_points", "remove_temp_files"]

# Sub-folders of a fit folder that hold no epoch-indexed logs of this fit. An old run's `plots` holds
# run-level points (steps the experiment chose), replaced by a resumed run's writer, never cut by epoch.
_SKIP = frozenset({BACKUP, MODELS, OLD_PLOTS})
_EVENTS = "events.out.tfevents."
# Summary tags Keras' TensorBoard callback writes at step = epoch ...
_EPOCH = "epoch_"
# ... and at step = optimizer iterations / global batch instead.
_VS_ITERATIONS = "_vs_iterations"
_BATCH = "batch_"
_TEMP_PREFIX = ".fitlogs-"


def truncate(sub: Path, epochs_done: int) -> None:
    """Drops what a fit logged for epochs >= epochs_done: history.csv rows and TensorBoard points.

    Files with nothing to drop are left untouched, byte for byte. A last line
    or record torn by a kill mid-write is dropped too. Each changed file is
    replaced atomically (a temporary file in the same folder, fsynced, then
    `os.replace`d over the original name).

    Args:
        sub: The fit's folder (the run folder, or RUN_DIR/NAME for a named fit).
            Only its history.csv and the event files in its direct sub-folders
            (`train/`, `validation/`) change: the event files directly in
            it (the run's own, at the root), sub-folders that are other fits'
            folders (they hold a history.csv) and `backup`, `models`, `plots`
            are not touched.
        epochs_done: Epochs the saved state says are complete (epochs 0..epochs_done-1).
    """
    sub = Path(sub)
    epochs_done = int(epochs_done)
    if epochs_done < 0:
        raise ValueError(f"epochs_done must be >= 0, got {epochs_done}")
    remove_temp_files(sub)
    _truncate_history(sub / HISTORY, epochs_done)
    for folder in _event_folders(sub):
        remove_temp_files(folder)
        for path in sorted(folder.iterdir()):
            if path.name.startswith(_EVENTS) and path.is_file():
                _truncate_events(path, epochs_done)


def _event_folders(sub: Path) -> list[Path]:
    """Direct sub-folders of `sub` whose event files belong to this fit."""
    if not sub.is_dir():
        return []
    folders = []
    for child in sorted(sub.iterdir()):
        if not child.is_dir() or child.is_symlink() or child.name in _SKIP:
            continue
        if (child / HISTORY).exists():  # another (named) fit's folder
            continue
        folders.append(child)
    return folders


def remove_temp_files(folder: Path) -> None:
    """Removes the temp files a rewrite killed half-way left in `folder`."""
    for leftover in Path(folder).glob(f"{_TEMP_PREFIX}*.tmp"):
        leftover.unlink(missing_ok=True)


def event_files(folder: Path) -> list[Path]:
    """Returns the TensorBoard event files directly in `folder`, in name order."""
    if not Path(folder).is_dir():
        return []
    return [p for p in sorted(Path(folder).iterdir()) if p.name.startswith(_EVENTS) and p.is_file()]


def points(files: list[Path]) -> set[tuple[str, int]]:
    """Returns every `(tag, step)` that has a summary in the given event files."""
    found: set[tuple[str, int]] = set()
    for path in files:
        for _, event in _read_events(path)[0]:
            if event.HasField("summary"):
                found.update((value.tag, int(event.step)) for value in event.summary.value)
    return found


def drop_points(files: list[Path], pairs: set[tuple[str, int]]) -> None:
    """Rewrites the given event files without the summaries at `(tag, step)` in `pairs`.

    For a run-level writer (figures, text) that writes a point again after a
    resume: the new point replaces the old one instead of repeating its step.
    """
    for path in files:
        records, torn = _read_events(path)
        keep = [not (event.HasField("summary") and any((v.tag, int(event.step)) in pairs
                                                         for v in event.summary.value))
                for _, event in records]
        if torn or not all(keep):
            _rewrite_events(path, [raw for (raw, _), flag in zip(records, keep) if flag])


# --- history.csv -------------------------------------------------------------


def _truncate_history(path: Path, epochs_done: int) -> None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    # Lines end in b"\n" (CSVLogger writes "\r\n"); a last piece without one
    # is a line torn by a kill mid-write, and goes.
    lines = [line + b"\n" for line in data.split(b"\n")[:-1]]
    kept = []
    for line in lines:
        epoch = _row_epoch(line)
        if epoch is not None and epoch >= epochs_done:
            continue
        kept.append(line)
    new = b"".join(kept)
    if new == data:
        return

    def write(tmp: str) -> None:
        with open(tmp, "wb") as out:
            out.write(new)
            out.flush()
            os.fsync(out.fileno())

    _replace(path, write)


def _row_epoch(line: bytes) -> int | None:
    """The epoch of a history row; None for the header (or anything not a row)."""
    first = line.split(b",", 1)[0].strip().strip(b'"')
    try:
        return int(first)
    except ValueError:
        return None


# --- TensorBoard event files -------------------------------------------------


def _read_events(path: Path) -> tuple[list[tuple[bytes, Any]], bool]:
    """Returns an event file's `(raw record, Event)` pairs and whether its last record was torn."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    records: list[tuple[bytes, Any]] = []
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            raw = record.numpy()
            records.append((raw, event_pb2.Event.FromString(raw)))
    except tf.errors.DataLossError:
        # A record torn by a kill mid-write (or corrupt): keep what came before it.
        return records, True
    return records, False


def _truncate_events(path: Path, epochs_done: int) -> None:
    records, torn = _read_events(path)
    keep = _keep(records, epochs_done)
    if not torn and all(keep):
        return
    _rewrite_events(path, [raw for (raw, _), flag in zip(records, keep) if flag])


def _rewrite_events(path: Path, kept: list[bytes]) -> None:
    import tensorflow as tf

    def write(tmp: str) -> None:
        with tf.io.TFRecordWriter(tmp) as writer:
            for raw in kept:
                writer.write(raw)
        with open(tmp, "rb+") as out:
            os.fsync(out.fileno())

    _replace(path, write)


def _keep(records: list[tuple[bytes, Any]], epochs_done: int) -> list[bool]:
    """Whether to keep each (raw, Event) of one event file, in file order."""
    keep = [True] * len(records)
    next_epoch: int | None = None  # step of the nearest epoch_* point after the one at hand
    for index in range(len(records) - 1, -1, -1):
        event = records[index][1]
        tags = [value.tag for value in event.summary.value] if event.HasField("summary") else []
        if not tags:
            continue  # file_version, graph, metadata: kept
        if all(tag.startswith(_EPOCH) for tag in tags):
            next_epoch = int(event.step)
            epoch: int | None = next_epoch
        elif any(tag.endswith(_VS_ITERATIONS) or tag.startswith(_BATCH) for tag in tags):
            epoch = next_epoch  # stepped by iterations: the epoch it was written in
        else:
            epoch = int(event.step)
        keep[index] = epoch is not None and epoch < epochs_done
    return keep


# --- atomic replace ----------------------------------------------------------


def _replace(path: Path, write: Callable[[str], None]) -> None:
    """Writes a new `path` through `write(tmp)` and swaps it in atomically and durably.

    Raises:
        WriteError: Naming `path` when it cannot be rewritten (a full disk, a
            read-only folder); the original is then left as it was.
    """
    tmp = ""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        # The temporary name has no "tfevents" in it: TensorBoard must not read it as an event file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX, suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        _discard(tmp)
        raise WriteError(path, err) from None
    except Exception as err:
        if not type(err).__module__.startswith("tensorflow"):
            _discard(tmp)
            raise
        # Its record writer's errors are not OSErrors: probe for the reason while the partial copy still
        # holds its space.
        reason = why_unwritable(path.parent)
        _discard(tmp)
        raise WriteError(path, reason) from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str) -> None:
    if tmp:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder: the next write or resume removes it (`remove_temp_files`)
