"""Result tables an experiment prints and keeps in its run folder as Markdown and CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from kexp.store import rundir

# The metrics each run's printed tables showed, by table, per run folder: `kexp run`'s summary prints the others
# (`take_shown`), so that a number is printed once. A run prints in its own process: no file is needed.
_SHOWN: dict[str, dict[str, list[str]]] = {}


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Returns a Markdown table; floats with 4 significant digits."""
    cells = [[_cell(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def write(run_dir: Path, name: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Writes `NAME.md` and `NAME.csv` into the run folder and returns the Markdown.

    Raises:
        WriteError: Naming the file that could not be written.
    """
    text = markdown(header, rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    rundir.write_text(Path(run_dir) / f"{name}.md", text + "\n")
    rundir.write_text(Path(run_dir) / f"{name}.csv", buffer.getvalue())
    return text


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def mark_shown(run_dir: Path, name: str, metrics: Sequence[str]) -> None:
    """Notes that table `name` of the run in `run_dir` printed `metrics` (names in its results' `metrics`)."""
    if metrics:
        _SHOWN.setdefault(str(run_dir), {}).setdefault(name, []).extend(metrics)


def take_shown(run_dir: Path | str) -> dict[str, list[str]]:
    """Returns (and forgets) `{table: metric names}` of the tables the run in `run_dir` printed in this process."""
    return _SHOWN.pop(str(run_dir), {})
