"""Internal: what a run writes besides its fits: figures, text and the run-level TensorBoard writers.

`Harness` inherits these; they need its `run_dir`, `is_chief` and `resumed`.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import tensorflow as tf

from kexp.errors import UsageError, WriteError
from kexp.study import plots
from kexp.store import fitlogs, layout, rundir
from kexp.store.record import RunStatus


def event_writer(logdir: Path | str) -> Any:
    """Returns `tf.summary.create_file_writer(logdir)`, its failure named as kexp's one-line write error.

    Raises:
        WriteError: `could not write LOGDIR/events.out.tfevents.* (No space left on device)`, with the
            reason a test write meets (TensorFlow says only `Could not initialize events writer`).
    """
    try:
        return tf.summary.create_file_writer(str(logdir))
    except tf.errors.OpError:
        raise events_error(logdir) from None


def flush_events(writer: Any, logdir: Path | str) -> None:
    """Flushes an event writer, its failure named as `event_writer`'s.

    Raises:
        WriteError: Naming the folder's event file.
    """
    try:
        writer.flush()
    except tf.errors.OpError:
        raise events_error(logdir) from None


def events_error(logdir: Path | str) -> WriteError:
    """Returns the one-line error for an event file in `logdir` that TensorFlow could not write.

    The reason is the operating system's, met by a test write (`rundir.why_unwritable`).
    """
    folder = Path(logdir)
    return WriteError(folder / "events.out.tfevents.*", rundir.why_unwritable(folder if folder.is_dir() else folder.parent))


def events_error_in(err: BaseException) -> WriteError | None:
    """Returns `events_error` for a TensorFlow error that names an event file it could not write, else None.

    Keras' TensorBoard callback writes and flushes inside `fit`, where kexp's
    wrappers do not reach: TensorFlow then raises `FlushSummaryWriter ...
    PATH/events.out.tfevents...; No space left on device` in many lines.
    """
    if not isinstance(err, tf.errors.OpError):
        return None
    found = _EVENT_FILE.search(str(err))
    return events_error(Path(found.group(1)).parent) if found else None


_EVENT_FILE = re.compile(r"(\S*/events\.out\.tfevents\.[^\s;:'\"]+)")


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
        self._writer = event_writer(logdir)

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

        # The plugin has no "aborted": an interrupted (resumable) run, or a search trial its pruner stopped,
        # is unknown.
        code = {RunStatus.OK: api_pb2.STATUS_SUCCESS, RunStatus.INTERRUPTED: api_pb2.STATUS_UNKNOWN,
                RunStatus.PRUNED: api_pb2.STATUS_UNKNOWN}.get(status, api_pb2.STATUS_FAILURE)
        with self._writer.as_default():
            tf.summary.experimental.write_raw_pb(
                hparams_summary.session_end_pb(code).SerializeToString(), step=0)
        self._written([metadata.SESSION_END_INFO_TAG], 0)

    def _written(self, tags: list[str], step: int) -> None:
        flush_events(self._writer, self._logdir)
        # The new point is on disk first: a kill in between leaves it twice, never missing.
        replaced = {(tag, step) for tag in tags} & self._old_points
        if replaced:
            fitlogs.drop_points(self._old_files, replaced)
            self._old_points -= replaced

    def close(self) -> None:
        """Flushes and closes the event file."""
        self._writer.close()


class RunOutputs:
    """Figures and text saved as files and as TensorBoard images/text; the run's TensorBoard writer.

    Attributes (set by the class that uses it):
        run_dir: The run folder.
        is_chief: Whether this process writes the run folder.
        resumed: Whether the run continues an earlier one (writers then replace repeated points).
    """

    run_dir: Path
    is_chief: bool
    resumed: bool
    _images: SummaryWriter | None = None
    _summaries: SummaryWriter | None = None

    def log_figure(self, name: str, fig: Any, step: int = 0, filename: str | None = None) -> Path:
        """Saves a matplotlib figure as `NAME.png` and as a TensorBoard image.

        Args:
            name: File stem and TensorBoard tag.
            fig: A matplotlib figure; it is closed afterwards.
            step: TensorBoard step (e.g. the epoch).
            filename: PNG path relative to the run folder, instead of `NAME.png`
                (e.g. one file per epoch).

        Returns:
            The PNG's path.
        """
        path = self.run_dir / (filename or f"{name}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        png = plots.save(fig, path)
        if self.is_chief:
            self.images.write_png(name, png, step=step)
        return path

    def log_text(self, name: str, text: str, step: int = 0, filename: str | None = None) -> Path:
        """Saves text as `NAME.txt` and as a TensorBoard Text entry (a Markdown code block).

        Args:
            name: File stem and TensorBoard tag.
            text: Plain text (e.g. generated samples).
            step: TensorBoard step (e.g. the epoch).
            filename: Path relative to the run folder, instead of `NAME.txt`.

        Returns:
            The file's path.
        """
        path = self.run_dir / (filename or f"{name}.txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        rundir.write_text(path, text if text.endswith("\n") else text + "\n")
        if self.is_chief:
            self.images.write_text(name, f"```\n{text}\n```", step=step)
        return path

    def save_text(self, filename: str, text: str) -> Path:
        """Saves text in the run folder only (no TensorBoard entry), replacing the file whole.

        Args:
            filename: Path relative to the run folder.
            text: The file's content.

        Returns:
            The file's path.

        Raises:
            UsageError: For a path outside the run folder or one of the files kexp writes there.
        """
        path = self.run_dir / _own_file(filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        rundir.write_text(path, text)
        return path

    @property
    def images(self) -> SummaryWriter:
        """TensorBoard writer for figures and text: the run folder's own writer (`summaries`).

        They sit at the run's root with its HParams session, so that a run
        with one fit is three TensorBoard runs (the root, `train`,
        `validation`), not four with a `plots` run as well. A resumed run
        written before they moved there keeps writing them into its `plots/`
        folder: its figures stay in one place, and a point written again
        replaces the old one there, as it always did.
        """
        if self._images is None:
            old_plots = self.run_dir / layout.OLD_PLOTS
            # Event files directly in plots/ mark the old layout; a new run's plots/ could only hold
            # files an experiment saved (`filename="plots/..."`), or a fit named `plots` (events in sub-folders).
            old_layout = self.resumed and bool(fitlogs.event_files(old_plots))
            self._images = (SummaryWriter(old_plots, replace_existing=True) if old_layout else self.summaries)
        return self._images

    @property
    def summaries(self) -> SummaryWriter:
        """TensorBoard writer of the run folder itself: HParams, the final quality metrics, figures and text.

        The run folder is the HParams session; the fits' `train/` and
        `validation/` scalars below it are the session's metrics too. One
        writer for all of them: of two in one folder of a resumed run, the
        second would count the first's new event file among the earlier ones
        and rewrite it (to replace a point) while the first writes to it.
        """
        if self._summaries is None:
            self._summaries = SummaryWriter(self.run_dir, replace_existing=self.resumed)
        return self._summaries

    def close(self) -> None:
        """Closes the run's TensorBoard writers."""
        writers = {id(writer): writer for writer in (self._images, self._summaries) if writer is not None}
        for writer in writers.values():
            writer.close()
        self._images = self._summaries = None


# The run folder's own files and folders, which an experiment's text must not replace.
_KEXP_OWNED = {"config.json", "results.json", layout.BACKUP, layout.MODELS, layout.HISTORY}


def _own_file(filename: str) -> str:
    """Returns `filename` if it names a file inside the run folder that kexp does not write itself.

    Raises:
        UsageError: Naming the file and what is allowed.
    """
    parts = PurePosixPath(str(filename)).parts
    if not parts or PurePosixPath(str(filename)).is_absolute() or ".." in parts or parts[0] in _KEXP_OWNED:
        raise UsageError(f"save_text: received {str(filename)!r}; allowed: a path relative to the run folder, "
                         f"inside it, not one of kexp's own ({', '.join(sorted(_KEXP_OWNED))})")
    return str(filename)
