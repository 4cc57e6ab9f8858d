"""Internal: what a run writes besides its fits: figures, text and the run-level TensorBoard writers.

`Harness` inherits these; they need its `run_dir`, `is_chief` and `resumed`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kexp.study import plots
from kexp.store import rundir
from kexp.engine.callbacks import SummaryWriter


class RunOutputs:
    """Figures and text saved as files and as TensorBoard images/text; the run's TensorBoard writers.

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

    @property
    def images(self) -> SummaryWriter:
        """TensorBoard writer for figures and text (the run's `plots` folder)."""
        if self._images is None:
            self._images = SummaryWriter(self.run_dir / "plots", replace_existing=self.resumed)
        return self._images

    @property
    def summaries(self) -> SummaryWriter:
        """TensorBoard writer of the run folder itself: HParams and the final quality metrics.

        The run folder is the HParams session; the fits' `train/` and
        `validation/` scalars below it are the session's metrics too.
        """
        if self._summaries is None:
            self._summaries = SummaryWriter(self.run_dir, replace_existing=self.resumed)
        return self._summaries

    def close(self) -> None:
        """Closes the run's TensorBoard writers."""
        for writer in (self._images, self._summaries):
            if writer is not None:
                writer.close()
        self._images = self._summaries = None
