"""Internal: `kexp check`: every experiment's declared bars re-checked by one command.

Each named experiment runs exactly as `kexp run NAME` does at its defaults
(or at `train.seed=S`), in its own process, at most `--jobs` at a time. Each
run writes its run folder's path into a record file (`KEXP_RUN_RECORD`), and
its figures come from that folder's `results.json`: processes talk through
files, never through each other's printed output. The run folders stay
normal run folders (`kexp runs` lists them); the check writes `check.json`
and `check.md` in `LOGDIR/check-ID/`, with each run's output as `NAME.log`.

Exit codes: 0 when every bar is met; 1 when one is missed or a run failed;
130/143 after SIGINT/SIGTERM (the runs in progress stop cleanly; finished
rows are kept); 2 for bad input. No TensorFlow in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from kexp.cli.stop_requests import stop_requests, stopped_exit_code
from kexp import quality, registry
from kexp.store import rundir
from kexp.store.record import RunStatus
from kexp.errors import UsageError

# A job in one of these has no metrics to judge: its rows carry the status instead of met / missed.
_UNJUDGED = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.INTERRUPTED, RunStatus.FAILED)


@dataclass
class Job:
    """One experiment's run within a check."""

    name: str
    expected: dict[str, Any]
    expected_time_s: float | None
    process: subprocess.Popen | None = None
    log: Any = None
    started: float = 0.0
    seconds: float | None = None
    # A `RunStatus` (pending, running, interrupted, failed), or the verdict `met` / `missed`.
    status: str = RunStatus.PENDING
    run_dir: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""


def plan(names: list[str]) -> list[Job]:
    """Returns a job per experiment named (all when none), each with its bars and expected time.

    Raises:
        UsageError: For an unknown name (with the closest names) or an experiment that declares no bars.
    """
    names = names or list(registry.discover())
    jobs = []
    for name in dict.fromkeys(names):
        module = registry.load(name)
        expected = getattr(module, "EXPECTED", None)
        if not expected:
            raise UsageError(f"check: experiment {name!r} declares no quality bar (EXPECTED); allowed: "
                             f"experiments that do: {', '.join(n for n in registry.discover() if _has_bars(n))}")
        jobs.append(Job(name, dict(expected), getattr(module, "EXPECTED_TIME_S", None)))
    return jobs


def _has_bars(name: str) -> bool:
    try:
        return bool(getattr(registry.load(name), "EXPECTED", None))
    except UsageError:
        return False


def list_lines(jobs: list[Job]) -> list[str]:
    """Returns `kexp check --list`: each experiment's bars and the time its default run is expected to take."""
    lines = []
    for job in jobs:
        bars = ", ".join(f"{metric} {quality.describe(bar)}" for metric, bar in job.expected.items())
        when = f"~{job.expected_time_s:g} s" if job.expected_time_s else "time not declared"
        lines.append(f"{job.name:<18} {when:>9}  {bars}")
    return lines


def start(job: Job, check_dir: Path, logdir: str, seed: int | None) -> None:
    """Starts `kexp run NAME` for a job, its output into `check_dir/NAME.log`, its folder recorded."""
    from kexp.runner import RUN_RECORD_ENV
    from kexp.cli.sweep_points import _die_with_parent

    command = [sys.executable, "-m", "kexp", "run", job.name, "--logdir", logdir]
    if seed is not None:
        command += ["--set", f"train.seed={seed}"]
    record = check_dir / f"{job.name}.record.json"
    record.unlink(missing_ok=True)
    job.log = open(check_dir / f"{job.name}.log", "wb")
    # Its own session: a Ctrl-C at the terminal reaches the check alone, which passes one SIGINT on.
    job.process = subprocess.Popen(command, stdout=job.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, preexec_fn=_die_with_parent,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", RUN_RECORD_ENV: str(record)})
    job.started = time.monotonic()
    job.status = RunStatus.RUNNING


def finish(job: Job, check_dir: Path) -> None:
    """Fills a job in from its exit code, its recorded run folder and that folder's `results.json`."""
    job.log.close()
    job.seconds = round(time.monotonic() - job.started, 1)
    code = job.process.returncode  # type: ignore[union-attr]
    record = check_dir / f"{job.name}.record.json"
    try:
        recorded = rundir.read_json(record, missing={})
        job.run_dir = recorded.get("run_dir") if isinstance(recorded, dict) else None
    except UsageError:
        job.run_dir = None
    results: Any = {}
    if job.run_dir:
        try:
            results = rundir.read_json(Path(job.run_dir) / "results.json", missing={}, null_nonfinite=True)
        except UsageError as err:
            job.error = str(err)
    metrics = results.get("metrics") if isinstance(results, dict) else None
    job.metrics = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
    run_status = results.get("status") if isinstance(results, dict) else None
    if code in (130, 143) or run_status == RunStatus.INTERRUPTED:
        job.status = RunStatus.INTERRUPTED
    elif run_status == RunStatus.DIVERGED:
        job.status = RunStatus.FAILED
        job.error = job.error or "the run diverged (a non-finite loss, weight or metric; status diverged)"
    elif run_status != RunStatus.OK:
        job.status = RunStatus.FAILED
        if not job.error:
            lines = (check_dir / f"{job.name}.log").read_text("utf-8", "replace").splitlines()
            errors = [line for line in lines if line.startswith("kexp: error: ")] or [
                line for line in lines if not line.startswith(("run_dir:", "status:", "kexp: run folder"))][-1:]
            job.error = (errors[-1] if errors else f"exit code {code}")[:300]
    else:
        job.status = "met" if not quality.failures(job.expected, job.metrics) else "missed"


def run_jobs(jobs: list[Job], check_dir: Path, logdir: str, seed: int | None, workers: int,
             requests: list[int], say: Callable[[str], None], progress: Callable[[str], None]) -> bool:
    """Runs the jobs, `workers` at a time; returns False when a signal stopped the check.

    Args:
        jobs: From `plan`.
        check_dir: The check's folder.
        logdir: Where the runs' folders go.
        seed: `train.seed` for every run, or None for the default.
        workers: Runs at a time.
        requests: Signals received (the caller's handler appends them).
        say: Prints a line that stays (a run started or finished).
        progress: Shows a line that the next one replaces (elapsed times).
    """
    pending = list(jobs)
    running: list[Job] = []
    begun = time.monotonic()
    while pending or running:
        if requests:
            _stop(running, check_dir, requests)
            return False
        while pending and len(running) < workers:
            job = pending.pop(0)
            start(job, check_dir, logdir, seed)
            running.append(job)
            say(f"kexp check: started {job.name} ({_expected(job)})")
        for job in [j for j in running if j.process.poll() is not None]:  # type: ignore[union-attr]
            running.remove(job)
            finish(job, check_dir)
            done = sum(j.status not in (RunStatus.PENDING, RunStatus.RUNNING) for j in jobs)
            say(f"kexp check: [{done}/{len(jobs)}] {job.name}: {job.status} in {job.seconds:.0f} s"
                + (f" ({job.error})" if job.error else ""))
        if running:
            now = time.monotonic()
            progress(f"[{time.monotonic() - begun:5.0f} s] running: " + ", ".join(
                f"{j.name} {now - j.started:.0f} s" for j in running))
            time.sleep(0.5)
    return True


def _expected(job: Job) -> str:
    return f"expected ~{job.expected_time_s:g} s" if job.expected_time_s else "no expected time declared"


def _stop(running: list[Job], check_dir: Path, requests: list[int]) -> None:
    """Passes one SIGINT to each run in progress (a clean stop: interrupted, resumable) and waits for it.

    A second signal to the check passes a second SIGINT on, which ends a run at once (as a second Ctrl-C
    ends `kexp run`); a run still going after two minutes is killed.
    """
    for job in running:
        job.process.send_signal(signal.SIGINT)  # type: ignore[union-attr]
    deadline = time.monotonic() + 120
    passed_on = 1
    while any(job.process.poll() is None for job in running) and time.monotonic() < deadline:  # type: ignore
        if len(requests) > passed_on:
            passed_on = len(requests)
            for job in running:
                if job.process.poll() is None:  # type: ignore[union-attr]
                    job.process.send_signal(signal.SIGINT)  # type: ignore[union-attr]
        time.sleep(0.2)
    for job in running:
        if job.process.poll() is None:  # type: ignore[union-attr]
            job.process.kill()  # type: ignore[union-attr]
            job.process.wait()  # type: ignore[union-attr]
        finish(job, check_dir)
        job.status = RunStatus.INTERRUPTED


def rows(jobs: list[Job]) -> list[dict[str, Any]]:
    """Returns one row per experiment and bar metric: value, bar, result, time (check.json's `rows`)."""
    out = []
    for job in jobs:
        for metric, bar in job.expected.items():
            value = job.metrics.get(metric)
            result = job.status if job.status in _UNJUDGED else (
                "met" if quality.meets(bar, value) else "missed")
            out.append({"experiment": job.name, "metric": metric, "value": value, "bar": quality.describe(bar),
                        "result": result, "seconds": job.seconds, "expected_seconds": job.expected_time_s,
                        "run_dir": job.run_dir, "error": job.error})
    return out


def markdown(table: list[dict[str, Any]]) -> list[str]:
    """Returns the rows as a Markdown table."""
    lines = ["| experiment | metric | value | bar | result | time s | expected s |", "|---|---|---|---|---|---|---|"]
    for row in table:
        value = "" if row["value"] is None else f"{row['value']:.4g}"
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.0f}"
        expected = "" if row["expected_seconds"] is None else f"{row['expected_seconds']:g}"
        lines.append(f"| {row['experiment']} | {row['metric']} | {value} | {row['bar']} | {row['result']} | "
                     f"{seconds} | {expected} |")
    return lines


def write_report(check_dir: Path, jobs: list[Job], seed: int | None, finished: bool) -> dict[str, Any]:
    """Writes `check.json` and `check.md` (atomically) and returns the report."""
    table = rows(jobs)
    report = {"check_id": check_dir.name, "seed": seed, "finished": finished,
              "passed": finished and all(row["result"] == "met" for row in table),
              "experiments": {job.name: {"status": job.status, "seconds": job.seconds, "run_dir": job.run_dir,
                                         "error": job.error} for job in jobs},
              "rows": table}
    rundir.write_json(check_dir / "check.json", report)
    rundir.write_text(check_dir / "check.md", "\n".join(markdown(table)) + "\n")
    return report


def new_check_dir(logdir: str) -> Path:
    """Creates `LOGDIR/check-ID/` (a new ID each time)."""
    base = Path(logdir)
    for _ in range(100):
        path = base / f"check-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as err:
            raise UsageError(f"--logdir {str(logdir)!r}: cannot create a check folder there ({err.strerror})") from None
    raise UsageError(f"--logdir {str(logdir)!r}: no free check folder name")


def command(names: list[str], *, jobs: int, logdir: str, seed: int | None, as_json: bool, list_only: bool) -> int:
    """Runs `kexp check` and returns its exit code (see the module docstring).

    Raises:
        UsageError: For an unknown experiment, a bad seed or an unwritable logdir.
    """
    import json

    planned = plan(names)
    if list_only:
        print("\n".join(list_lines(planned)))
        return 0
    if seed is not None and not 0 <= seed <= 2**32 - 1:
        raise UsageError(f"check --seed: received {seed}; allowed: 0..{2**32 - 1} (train.seed)")
    check_dir = new_check_dir(logdir)
    tty = sys.stderr.isatty()

    def say(line: str) -> None:
        print(("\r\033[K" if tty else "") + line, file=sys.stderr, flush=True)

    def progress(line: str) -> None:
        if tty:  # one line that keeps moving; a log file gets the start and end lines only
            print("\r\033[K" + line[:150], end="", file=sys.stderr, flush=True)

    with stop_requests() as requests:
        say(f"kexp check: {len(planned)} experiment(s), {jobs} at a time, into {check_dir}")
        finished = run_jobs(planned, check_dir, logdir, seed, jobs, requests, say, progress)
        report = write_report(check_dir, planned, seed, finished)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(markdown(report["rows"])))
        print(f"check_dir: {check_dir}")
    if not finished:
        say(f"kexp check: interrupted; finished rows kept in {check_dir / 'check.json'}")
        return stopped_exit_code(requests)
    return 0 if report["passed"] else 1
