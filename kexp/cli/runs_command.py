"""Internal: `kexp runs [NAME] [--format table|md|csv|json]` and `kexp runs diff RUN_A RUN_B` (no TensorFlow)."""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path

from kexp.errors import UsageError

__all__ = ["runs_command"]


def runs_command(args: argparse.Namespace) -> int:
    """Lists past runs, or compares two (`diff`).

    Args:
        args: `name` (a list: [], [NAME] or ["diff", RUN_A, RUN_B]), `logdir`, `format`, `json`.

    Raises:
        UsageError: For more than one NAME, a `diff` without two runs, or `--json` with another format.
    """
    from kexp.store import runs, runs_export

    words = list(args.name)
    if words[:1] == ["diff"]:
        if len(words) != 3:
            raise UsageError(f"runs diff: received {len(words) - 1} run(s); allowed: exactly two, "
                             "e.g. kexp runs diff logs/xor/RUN_A logs/xor/RUN_B")
        first, second = (runs_export.find_run(word, args.logdir) for word in words[1:])
        print("\n".join(runs_export.diff_lines(first, second)))
        return 0
    if len(words) > 1:
        raise UsageError(f"runs: received {' '.join(words)!r}; allowed: one experiment NAME, "
                         "or diff RUN_A RUN_B")
    if args.json and args.format not in (None, "json"):
        raise UsageError(f"runs: received --json and --format {args.format}; allowed: one of them")
    name = words[0] if words else None
    form = "json" if args.json else args.format or "table"
    entries = runs.collect(args.logdir, name)
    if not entries and name:
        _check_runs_name(name, args.logdir)
    if form == "json":
        print(json.dumps(entries, allow_nan=False, default=str))
    elif form == "csv":
        print(runs_export.to_csv(entries), end="")
    elif not entries:
        print(f"no runs{f' of {name}' if name else ''} in {args.logdir}")
    elif form == "md":
        print(runs_export.to_markdown(entries), end="")
    else:
        print("\n".join(runs.format_table(entries)))
    return 0


def _check_runs_name(name: str, logdir: str) -> None:
    """Refuses a `kexp runs NAME` that names no experiment and no folder of `logdir` but is close to one.

    Raises:
        UsageError: `did you mean lstm_sine?`, for a typo (`lstm_sin`).
    """
    from kexp import registry

    known = set(registry.discover())
    if name in known or (Path(logdir) / name).exists():
        return  # a real experiment that has no runs yet: "no runs of NAME"
    if Path(logdir).is_dir():
        known |= {path.name for path in Path(logdir).iterdir() if path.is_dir()}
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
    if close:
        raise UsageError(f"runs {name!r}: no experiment or run folder of that name in {logdir}; "
                         f"did you mean {', '.join(close)}?")
