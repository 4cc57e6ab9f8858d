"""Internal: `kexp runs`: past runs read from their run folders, newest first.

Each run folder `LOGDIR/NAME/RUN_ID` is described from its `results.json`
alone (no TensorFlow), and every folder gets a line whatever state it is in:

- `ok`, `diverged`, `interrupted`, `failed`: what its `results.json` says;
- `running`: a process trains in it now (it holds the folder's lock);
- `crashed`: a `config.json` but no `results.json`, and no process in it
  (killed with SIGKILL, or the machine went down; `kexp run NAME --resume`
  continues it);
- `corrupt`: a `results.json` or `config.json` that is not readable JSON of
  the right shape, or a folder that is not a run at all.

Sweep and search folders (`kexp sweep`, `kexp search`: they hold a `sweep.json` or `search.json`) are not runs
and are skipped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from kexp.store import hparams, names, rundir
from kexp import quality
from kexp.errors import UsageError
from kexp.store.record import RECORDED, RunStatus


def collect(logdir: str | Path, name: str | None = None) -> list[dict[str, Any]]:
    """Returns one entry per run folder under `logdir`, newest first.

    Args:
        logdir: The root of run folders.
        name: Only this experiment's runs.

    Returns:
        Dicts with `run_id`, `experiment`, `run_dir`, `status`, `reason`
        (why a run is `crashed` or `corrupt`, else ""), `overrides` (the
        config values that differ from the experiment's defaults; None when
        the experiment cannot be loaded), `metrics`, `meets_bar` (whether the
        metrics meet the experiment's declared bar; None without a bar or
        metrics), `missed` (the bars missed), `wall_time_s` and
        `train_samples_per_s` (None when unknown).

    Raises:
        UsageError: When `logdir` is not a folder.
    """
    root = Path(logdir)
    if not root.is_dir():
        raise UsageError(f"--logdir {str(logdir)!r}: not a folder; allowed: a folder of runs (kexp run writes "
                         "LOGDIR/NAME/RUN_ID; default ./logs)")
    if name is not None:
        names.check_name(name, "runs NAME")
    experiments = [root / name] if name is not None else _folders(root)
    defaults: dict[str, tuple[Mapping[str, Any] | None, Mapping[str, Any]]] = {}
    entries = []
    for folder in experiments:
        for run_dir in _folders(folder):
            if (run_dir / "sweep.json").exists() or (run_dir / "search.json").exists():
                continue
            entry = describe(run_dir)
            if entry["experiment"] not in defaults:
                defaults[entry["experiment"]] = _defaults_and_bars(entry["experiment"])
            config_defaults, bars = defaults[entry["experiment"]]
            _add_comparisons(entry, config_defaults, bars)
            entries.append(entry)
    # Run ids start with their creation second; config.json's time breaks ties; the name last.
    entries.sort(key=lambda e: (e.pop("_created"), e["run_id"]), reverse=True)
    return entries


def describe(run_dir: Path) -> dict[str, Any]:
    """Returns what a run folder's files say about it (see `collect`), without comparisons."""
    entry: dict[str, Any] = {
        "run_id": run_dir.name, "experiment": run_dir.parent.name, "run_dir": str(run_dir), "status": "",
        "reason": "", "config": None, "metrics": {}, "wall_time_s": None, "train_samples_per_s": None,
        "_created": _created(run_dir),
    }
    # Other tools write NaN for a diverged metric: listed as null, as kexp writes it.
    results, results_error = _read(run_dir / "results.json", null_nonfinite=True)
    config, config_error = _read(run_dir / "config.json")
    if rundir.in_use(run_dir):
        entry["status"] = RunStatus.RUNNING
    elif results is not None:
        status = results.get("status")
        if status not in RECORDED:
            entry["status"], entry["reason"] = RunStatus.CORRUPT, f"results.json has no valid status (received {_cut(status)})"
        elif not isinstance(results.get("metrics"), dict):
            entry["status"], entry["reason"] = RunStatus.CORRUPT, "results.json metrics is not a JSON object"
        else:
            entry["status"] = RunStatus(status)
    elif results_error:
        entry["status"], entry["reason"] = RunStatus.CORRUPT, f"results.json: {results_error}"
    elif config is not None:
        problem = _resume_problem(run_dir)
        entry["status"], entry["reason"] = (RunStatus.CORRUPT, problem) if problem else (
            RunStatus.CRASHED, "no results.json and no process in it: resume it")
    elif config_error:
        entry["status"], entry["reason"] = RunStatus.CORRUPT, f"config.json: {config_error}"
    else:
        entry["status"], entry["reason"] = RunStatus.CORRUPT, "not a run folder (no config.json or results.json)"
    source = results if results is not None else {}
    entry["config"] = source.get("config") if isinstance(source.get("config"), dict) else config
    metrics = source.get("metrics")
    if isinstance(metrics, dict):
        # null is how results.json writes a non-finite value; other tools may write NaN or huge integers.
        entry["metrics"] = {str(k): _finite(v) for k, v in metrics.items() if v is None or _is_number(v)}
    for key in ("wall_time_s", "train_samples_per_s"):
        if _is_number(source.get(key)):
            entry[key] = _finite(source[key])
    if isinstance(source.get("experiment"), str):
        entry["experiment"] = source["experiment"]
    return entry


def _resume_problem(run_dir: Path) -> str:
    """Returns why `--resume` would refuse a crashed run's folder (its config, states, logs), or "" if it would not.

    The checks of `kexp run --resume` (`kexp.runner.resume_config`), for a folder filed under a known
    experiment, so that `kexp runs` never says "resume it" of a folder a resume refuses. (A library run,
    `open_run`, resumes through `open_run(resume=...)`: its folder is not checked here.)
    """
    from kexp import registry
    from kexp.runner import resume_config

    if run_dir.parent.name not in registry.discover():
        return ""
    try:
        resume_config(run_dir.parent.name, run_dir)
    except UsageError as err:
        text = str(err)  # "--resume 'PATH': why; allowed: ...": the reason without the path
        return text.split(": ", 1)[1] if text.startswith("--resume ") else text
    return ""


def settings_text(overrides: Mapping[str, Any] | None) -> str:
    """Returns a run's settings that differ from the defaults as `key=value ...` ("" for none; "?" when unknown)."""
    if overrides is None:
        return "?"
    return " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in overrides.items())


def format_table(entries: list[dict[str, Any]]) -> list[str]:
    """Returns `kexp runs`' table: one line per run, newest first."""
    if not entries:
        return ["no runs"]
    header = ("RUN_ID", "EXPERIMENT", "STATUS", "BAR", "WALL_S", "EXAMPLES/S", "SETTINGS", "METRICS")
    rows = [header]
    for e in entries:
        bar = {True: "met", False: "missed", None: "-"}[e["meets_bar"]]
        overrides = _printable(settings_text(e["overrides"])) or "defaults"
        metrics = " ".join(f"{_printable(k)}={'null' if v is None else format_number(v)}"
                           for k, v in e["metrics"].items())
        if e["reason"]:
            metrics = f"{metrics}  ({e['reason']})".strip()
        rows.append((_printable(e["run_id"]), _printable(e["experiment"]), e["status"], bar, format_number(e["wall_time_s"], ".1f"),
                     format_number(e["train_samples_per_s"] or None, ".0f"), overrides, metrics))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header) - 1)]
    return ["  ".join(f"{str(cell):<{w}}" for cell, w in zip(row, widths)) + "  " + str(row[-1])
            for row in rows]


def _add_comparisons(entry: dict[str, Any], defaults: Mapping[str, Any] | None, bars: Mapping[str, Any]) -> None:
    config = entry.pop("config")
    entry["overrides"] = (hparams.differences(config, defaults)
                          if defaults is not None and isinstance(config, dict) else None)
    entry["meets_bar"], entry["missed"] = None, []
    if bars and entry["metrics"]:
        entry["missed"] = quality.failures(bars, entry["metrics"])
        entry["meets_bar"] = not entry["missed"]


def _defaults_and_bars(name: str) -> tuple[Mapping[str, Any] | None, Mapping[str, Any]]:
    """Returns an experiment's default config (as config.json writes it) and its bars; None, {} when unknown."""
    from kexp import registry
    from kexp.config import to_dict

    try:
        module = registry.load(name)
        return to_dict(module.CONFIG), getattr(module, "EXPECTED", {}) or {}
    except Exception:  # an unknown or broken experiment still gets its runs listed
        return None, {}


def _folders(parent: Path) -> list[Path]:
    try:
        return sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _read(path: Path, null_nonfinite: bool = False) -> tuple[dict[str, Any] | None, str]:
    """Returns `(data, "")`, `(None, why)` for an unreadable file, or `(None, "")` for a missing one."""
    try:
        data = rundir.read_json(path, missing=None, null_nonfinite=null_nonfinite)
    except rundir.CorruptFile as err:
        return None, err.reason
    if data is None:
        return None, ""
    if not isinstance(data, dict):
        return None, "not a JSON object"
    return data, ""


def _created(run_dir: Path) -> tuple[str, int]:
    """Returns the run's creation second from its RUN_ID (`YYYYMMDD-HHMMSS-LABEL`), then its config.json's
    time in ns: runs of one second (a sweep's quick points) keep the order they were made in."""
    try:
        written = (run_dir / "config.json").stat().st_mtime_ns
    except OSError:
        written = 0
    name = run_dir.name
    if len(name) >= 15 and name[:8].isdigit() and name[8] == "-" and name[9:15].isdigit():
        return name[:15], written
    try:
        import time

        return time.strftime("%Y%m%d-%H%M%S", time.localtime(run_dir.stat().st_mtime)), written
    except OSError:
        return "", written


def _printable(text: str) -> str:
    """`text` with control characters escaped, so that one entry stays one table line."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> float | None:
    """A finite float, or None (what results.json writes for NaN and infinities)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _cut(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def format_number(value: Any, spec: str = ".4g") -> str:
    """Returns a number for a table (`-` when missing)."""
    if not isinstance(value, (int, float)):
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)
