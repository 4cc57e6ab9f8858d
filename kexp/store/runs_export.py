"""Internal: `kexp runs --format csv|md` and `kexp runs diff`: past runs as tables other tools read.

Built on `kexp.store.runs.collect`'s entries and the run folders' own
`config.json` and `results.json`; no TensorFlow.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from kexp.errors import UsageError
from kexp.store import hparams, rundir
from kexp.store.runs import format_number, settings_text

__all__ = ["FORMATS", "diff_lines", "find_run", "to_csv", "to_markdown"]

FORMATS = ("table", "md", "csv", "json")
_FIXED = ("run_id", "experiment", "status", "meets_bar", "wall_time_s", "train_samples_per_s", "settings")


def _columns(entries: list[dict[str, Any]]) -> list[str]:
    """The fixed columns, then every metric any run has, in the order they first appear."""
    metrics = list(dict.fromkeys(name for entry in entries for name in entry["metrics"]))
    return [*_FIXED, *metrics]


def _row(entry: dict[str, Any], metrics: list[str]) -> list[Any]:
    return [entry["run_id"], entry["experiment"], entry["status"], entry["meets_bar"], entry["wall_time_s"],
            entry["train_samples_per_s"], settings_text(entry["overrides"]),
            *(entry["metrics"].get(name) for name in metrics)]


def to_csv(entries: list[dict[str, Any]]) -> str:
    """Returns the runs as CSV: one header row, one row per run; a metric a run lacks is an empty cell.

    `meets_bar` is `True`, `False` or empty (no bar); numbers are written in full (`repr`).
    """
    columns = _columns(entries)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for entry in entries:
        writer.writerow(["" if cell is None else cell for cell in _row(entry, columns[len(_FIXED):])])
    return out.getvalue()


def to_markdown(entries: list[dict[str, Any]]) -> str:
    """Returns the runs as a Markdown table (numbers to 4 significant digits, `-` where there is none)."""
    columns = _columns(entries)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for entry in entries:
        cells = []
        for cell in _row(entry, columns[len(_FIXED):]):
            if isinstance(cell, bool):
                cells.append("met" if cell else "missed")
            elif isinstance(cell, (int, float)):
                cells.append(format_number(cell))
            else:
                cells.append("-" if cell in (None, "") else str(cell).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def find_run(text: str, logdir: str) -> Path:
    """Returns the run folder `text` names: a path, or a RUN_ID under `logdir`'s experiments.

    Raises:
        UsageError: When it names no run folder, or a RUN_ID several experiments have.
    """
    path = Path(text)
    if (path / "config.json").is_file() or (path / "results.json").is_file():
        return path
    matches = sorted(Path(logdir).glob(f"*/{text}")) if "/" not in text and Path(logdir).is_dir() else []
    matches = [m for m in matches if (m / "config.json").is_file()]
    if len(matches) == 1:
        return matches[0]
    allowed = "allowed: a run folder (LOGDIR/NAME/RUN_ID) or a RUN_ID under --logdir"
    if matches:
        raise UsageError(f"runs diff {text!r}: a run of {len(matches)} experiments; {allowed}")
    raise UsageError(f"runs diff {text!r}: no run folder there or under {logdir}; {allowed}")


def diff_lines(first: Path, second: Path) -> list[str]:
    """Returns `kexp runs diff`'s table: the status, settings and figures that differ, side by side.

    Args:
        first: A run folder.
        second: Another one.

    Raises:
        CorruptFile: When a run's `config.json` or `results.json` is not as kexp writes it.
    """
    sides = [_read_side(folder) for folder in (first, second)]
    rows = [("", first.name, second.name)]
    for key in dict.fromkeys([*sides[0], *sides[1]]):
        values = [side.get(key, "-") for side in sides]
        if values[0] != values[1]:
            rows.append((key, *(_shown(value) for value in values)))
    if len(rows) == 1:
        return [f"{first.name} and {second.name}: same settings, status and figures"]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return [f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip() for row in rows]


def _read_side(folder: Path) -> dict[str, Any]:
    """A run's experiment, status, flat settings and metrics as one mapping (`metrics.NAME` for figures)."""
    config = rundir.read_json(folder / "config.json", missing={})
    results = rundir.read_json(folder / "results.json", missing={}, null_nonfinite=True)
    side: dict[str, Any] = {"experiment": results.get("experiment", folder.parent.name) if isinstance(results, dict)
                            else folder.parent.name,
                            "status": results.get("status", "-") if isinstance(results, dict) else "-"}
    side.update(hparams.flatten(config) if isinstance(config, dict) else {})
    metrics = results.get("metrics") if isinstance(results, dict) else None
    side.update({f"metrics.{name}": value for name, value in (metrics or {}).items()})
    return side


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format_number(value, ".6g")
    return "null" if value is None else str(value)
