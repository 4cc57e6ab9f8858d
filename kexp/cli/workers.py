"""Internal: `kexp run NAME --strategy multi_worker --workers N`: a multi-worker cluster on this machine.

It starts N `kexp run` processes, each with the `TF_CONFIG` that names all
N on 127.0.0.1 (free ports) and its own index, one CPU device and an equal
share of the cores, as the two-terminal recipe in docs/distributed.md does
by hand. Worker 0 is the chief: its output is this command's, and it alone
writes the run folder; the others' output goes to
`RUN_DIR/workers/worker-I.log` once the chief's folder exists (the chief
records it in a file, `kexp.runner.RUN_RECORD_ENV`). A worker that fails
stops the others (they would wait for it forever); Ctrl-C or SIGTERM goes to
the chief, which saves its state and stops, and then the others are ended.
`--resume RUN_DIR --workers N` continues the run with N workers. For
clusters, see docs/distributed.md (Slurm through TensorFlow's
`SlurmClusterResolver`). No TensorFlow is imported here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kexp.errors import UsageError

MAX_WORKERS = 16


def check(args: argparse.Namespace) -> None:
    """Refuses `--workers` without `--strategy multi_worker`, with a `TF_CONFIG` set, or out of 2..16.

    Raises:
        UsageError: One line naming what is wrong.
    """
    if args.strategy != "multi_worker":
        raise UsageError(f"--workers {args.workers}: starts a multi-worker cluster on this machine; allowed: "
                         "--workers with --strategy multi_worker")
    if not 2 <= args.workers <= MAX_WORKERS:
        raise UsageError(f"--workers {args.workers}: allowed: 2 to {MAX_WORKERS} workers")
    if os.environ.get("TF_CONFIG"):
        raise UsageError("--workers: TF_CONFIG is set, and --workers writes each worker's own; allowed: --workers "
                         "with TF_CONFIG unset, or TF_CONFIG without --workers (one worker per command)")


def free_ports(count: int) -> list[int]:
    """Returns `count` distinct TCP ports free on 127.0.0.1 now (the OS's choice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _command(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """Returns one worker's `kexp run` command: the same run, without `--workers`."""
    command = [sys.executable, "-m", "kexp", "run", args.name, "--strategy", "multi_worker", "--logdir", args.logdir]
    if args.resume is not None:
        return [*command, "--resume", args.resume]
    if args.name_label is not None:
        command += [f"--name={args.name_label}"]
    for item in overrides:
        command += ["--set", item]
    return command


def launch(args: argparse.Namespace, overrides: list[str]) -> int:
    """Runs the N workers to the end and returns the chief's exit code (or the first failed worker's)."""
    from kexp.runner import RUN_RECORD_ENV

    ports = free_ports(args.workers)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    scratch = Path(tempfile.mkdtemp(prefix="kexp-workers-"))
    threads = str(max(1, (os.cpu_count() or 1) // args.workers))
    processes, logs = [], []
    for index in range(args.workers):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "KEXP_CPU_DEVICES": os.environ.get("KEXP_CPU_DEVICES", "1"),
               "TF_NUM_INTRAOP_THREADS": os.environ.get("TF_NUM_INTRAOP_THREADS", threads),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        if index == 0:
            env[RUN_RECORD_ENV] = str(scratch / "chief.json")
            env["KEXP_WORKERS"] = str(args.workers)  # its resume hint names --workers
            out = None  # the chief's output is this command's
        else:
            logs.append(scratch / f"worker-{index}.log")
            out = open(logs[-1], "wb")
        processes.append(subprocess.Popen(_command(args, overrides), env=env, stdout=out, stderr=out,
                                          stdin=subprocess.DEVNULL, start_new_session=index > 0))
        if out is not None:
            out.close()
    print(f"kexp: started {args.workers} workers on 127.0.0.1 (ports {', '.join(map(str, ports))}); worker 0 "
          "writes the run folder (the run_dir it prints); the others' output goes to RUN_DIR/workers/worker-I.log",
          file=sys.stderr, flush=True)
    try:
        code = _wait(processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        _keep_logs(scratch, logs)
    return code


def _wait(processes: list[subprocess.Popen]) -> int:
    """Waits for the chief; ends the others once it exits, or all of them when one fails first."""
    from kexp.cli.stop_requests import stop_requests

    forwarded = 0
    with stop_requests() as requests:
        while True:
            chief = processes[0].poll()
            if len(requests) > forwarded:
                # The chief saves its state and stops; the others then wait on it and are ended below.
                processes[0].send_signal(requests[forwarded])
                forwarded += 1
            if chief is not None:
                # After a finished run the others print their own figures and end too; after a stopped
                # or failed one they would wait on the chief for good.
                deadline = time.monotonic() + (60 if chief == 0 else 0)
                while time.monotonic() < deadline and any(p.poll() is None for p in processes[1:]):
                    time.sleep(0.1)
                for process in processes[1:]:
                    if process.poll() is None:
                        process.terminate()
                return chief
            failed = [p for p in processes[1:] if p.poll() not in (None, 0)]
            if failed:
                print(f"kexp: error: worker {processes.index(failed[0])} exited with code {failed[0].returncode}; "
                      "the others are stopped (its output is in the run folder's workers/)", file=sys.stderr)
                processes[0].send_signal(signal.SIGINT)  # the chief saves what it has
                try:
                    processes[0].wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
                return 1
            time.sleep(0.1)


def _keep_logs(scratch: Path, logs: list[Path]) -> None:
    """Moves the other workers' output into the chief's run folder (`workers/`), or names where it stayed."""
    try:
        run_dir = Path(json.loads((scratch / "chief.json").read_text())["run_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        run_dir = None
    if run_dir is None or not run_dir.is_dir():
        if any(log.exists() and log.stat().st_size for log in logs):
            print(f"kexp: the other workers' output is in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    (run_dir / "workers").mkdir(exist_ok=True)
    for log in logs:
        if log.exists():
            # A resumed run's workers add to what the earlier attempts' wrote.
            with open(run_dir / "workers" / log.name, "ab") as kept:
                kept.write(log.read_bytes())
    shutil.rmtree(scratch, ignore_errors=True)
