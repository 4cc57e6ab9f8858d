"""Internal: `kexp run NAME` (and `--resume RUN_DIR`): checks, the run, and the lines it prints.

A run prints `kexp: run folder PATH` once its folder exists, then its
metrics, its quality bar, a status line, and `run_dir: PATH` last, however
it ended (ok, diverged, failed inside its folder, or interrupted). Exit code:
0 ok, 1 diverged or failed, 130 / 143 stopped by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path

from kexp.errors import RunPruned, UsageError, run_dir_of
from kexp.store.record import RunStatus


def run(args: argparse.Namespace) -> int:
    """Runs `kexp run` and returns its exit code.

    Args:
        args: The parsed `run` arguments (`name`, `overrides`, `logdir`,
            `strategy`, `resume`).

    Returns:
        0 when the run ended ok (or a `kexp search` pruned it), 1 when it diverged, 130 / 143 when a
        signal came after it ended (its files are complete).

    Raises:
        UsageError: Bad input, before any run folder exists.
        KeyboardInterrupt: A signal stopped the run (`interrupted_exit`
            reports it).
    """
    from kexp.engine.interrupt import StopRequest, raise_on_signals

    # A second Ctrl-C ends the command at once (a library call raises instead).
    StopRequest.exit_on_second = True
    # Before the run opens, a signal ends the command with nothing left (130/143); the run then catches them.
    raise_on_signals()
    overrides = _check_input(args)
    if args.workers is not None:
        from kexp.cli import workers

        return workers.launch(args, overrides)
    from kexp.engine.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    results = _train(args, overrides)
    # The run is over and its files written: a signal now is noted, the summary printed, and the exit code says it.
    late: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: late.append(signum))
    _print_summary(args.name, results)
    if late:
        print(f"kexp: interrupted ({signal.Signals(late[0]).name}) after the run ended (status {results['status']}, "
              "its files complete); nothing to resume", file=sys.stderr, flush=True)
        return 143 if late[0] == signal.SIGTERM else 130
    return 0 if results["status"] in (RunStatus.OK, RunStatus.PRUNED) else 1


def _check_input(args: argparse.Namespace) -> list[str]:
    """Fails on bad input here, before TensorFlow loads (seconds) and before any run folder exists.

    Returns:
        The overrides the run trains with: a `--config` file's, then `--set`'s.

    Raises:
        UsageError: An unknown experiment, a bad `--set`, `--resume`,
            `--strategy` or `--logdir`.
    """
    from kexp.engine.strategy import check_strategy_name
    from kexp.runner import request_config
    from kexp.store import names, rundir

    overrides = list(args.overrides)
    if args.config is not None:
        if args.resume is not None:
            raise UsageError(f"--config {args.config!r}: a resumed run keeps its saved config; "
                             "allowed: --config without --resume")
        from kexp.config_file import config_file_overrides

        overrides = [*config_file_overrides(args.config), *overrides]
    if args.resume is not None and args.name_label is not None:
        raise UsageError(f"--name {args.name_label!r}: a resumed run keeps its folder's name; "
                         "allowed: --name without --resume")
    request_config(args.name, overrides, args.resume)
    if args.workers is None:
        check_strategy_name(args.strategy)
    else:
        from kexp.cli.workers import check

        check(args)  # each worker checks its own TF_CONFIG, which --workers writes
    if args.resume is None:
        rundir.check_logdir(args.logdir)
        if args.name_label is not None:
            names.check_name(args.name_label, "--name")
    return overrides


def _train(args: argparse.Namespace, overrides: list[str]) -> dict:
    """Runs the experiment, printing its folder once it exists, and returns its results.

    A run that failed inside its folder still ends with `status: failed`
    and `run_dir: PATH` on stdout before the error propagates.
    """
    from kexp.runner import RUN_FOLDER_LINE, run_experiment

    try:
        return run_experiment(args.name, overrides, logdir=args.logdir, strategy=args.strategy,
                              resume=args.resume, label=args.name_label,
                              on_open=lambda run_dir: print(f"{RUN_FOLDER_LINE}{run_dir}", flush=True))
    except RunPruned as err:
        # The search that started this run stopped it: an outcome, recorded in results.json like any other.
        print(f"kexp: {err}", file=sys.stderr, flush=True)
        from kexp.store.rundir import read_json

        return read_json(Path(str(run_dir_of(err))) / "results.json")
    except Exception as err:
        run_dir = run_dir_of(err)
        if run_dir is not None and not isinstance(err, UsageError):
            sys.stderr.flush()
            print(f"status: {RunStatus.FAILED}\nrun_dir: {run_dir}", flush=True)
        raise


def _print_summary(name: str, results: dict) -> None:
    """Prints a finished run's metrics, its quality bar, its status line and `run_dir: PATH`.

    A metric that a table of the run printed (`kexp.study.compare.write_table`'s `shows`) is not printed again.
    """
    from kexp.study import tables

    shown = tables.take_shown(results["run_dir"]) if results["run_dir"] else {}
    repeated = {key for names in shown.values() for key in names} & set(results["metrics"])
    for key, value in results["metrics"].items():
        if key not in repeated:
            print(f"{key}: {value:.6g}")
    if repeated:
        named = " and ".join(table for table, names in shown.items() if repeated & set(names))
        print(f"({len(repeated)} metrics are not listed here: the {named} table above shows them; results.json has "
              "every metric)")
    bar_line = _quality_bar_line(name, results["metrics"])
    if bar_line:
        print(bar_line)
    print(
        f"status: {results['status']}  wall_time_s: {results['wall_time_s']:.1f}  "
        f"train_samples_per_s: {_throughput(results['train_samples_per_s'])}  "
        f"replicas: {results['num_replicas']}"
    )
    if results["run_dir"]:
        run_dir = Path(results["run_dir"])
        figures = sorted(path.name for path in run_dir.glob("*.png"))
        if figures:
            print(f"figures: {', '.join(figures)} (in {_from_here(run_dir)})")
        print(f"tensorboard: kexp tensorboard --logdir {shlex.quote(_from_here(run_dir.parent))}")
    print(f"run_dir: {results['run_dir'] or 'none (not the chief worker; the chief writes the run folder)'}")


def _quality_bar_line(name: str, metrics: dict[str, float]) -> str:
    """Returns `quality bar: met (...)` or `quality bar: missed: ...` for an experiment that declares one."""
    from kexp import quality, registry

    expected = getattr(registry.load(name), "EXPECTED", None) or {}
    if not expected or not metrics:
        return ""
    # A bar whose metric the run's settings left out (rnn_memory with model.cells=gru) is not a miss of this run.
    unmeasured = [key for key in expected if key not in metrics]
    measured = {key: bar for key, bar in expected.items() if key in metrics}
    names = ", ".join(unmeasured)
    if not measured:
        return f"quality bar: not measured by these settings: {names}"
    missed = quality.failures(measured, metrics)
    line = ("quality bar: missed: " + "; ".join(missed) if missed else
            "quality bar: met (" + ", ".join(f"{key} {quality.describe(bar)}" for key, bar in measured.items()) + ")")
    # A sentence of its own, not another ';': in the missed form, the misses are ';'-separated.
    return line + (f". Not measured by these settings: {names}" if unmeasured else "")


def interrupted_exit(err: KeyboardInterrupt) -> int:
    """Reports a command stopped by SIGINT / SIGTERM and returns its exit code (130 / 143).

    A run stopped inside its folder names it (`--resume RUN_DIR`) and ends
    with `status: interrupted` and `run_dir: PATH` on stdout.

    Args:
        err: The interrupt; its `exit_code` (130 when absent) says which
            signal, `kexp.errors.run_dir_of` which folder.

    Returns:
        The exit code.
    """
    code = getattr(err, "exit_code", 130)
    signal_name = "SIGTERM" if code == 143 else "SIGINT"
    run_dir = run_dir_of(err)
    if run_dir is None:
        print(f"kexp: interrupted ({signal_name}) before a run folder was created; nothing to resume",
              file=sys.stderr)
        return code
    dropped = getattr(err, "dropped_epoch", None)
    where = (f" in epoch {dropped}; that epoch is dropped (its last progress line above is not kept) and trains "
             "again on resume" if dropped else "; every completed epoch is saved")
    resume = f"kexp run {shlex.quote(Path(run_dir).parent.name)} --resume {shlex.quote(_from_here(Path(run_dir)))}"
    workers = os.environ.get("KEXP_WORKERS")  # the chief of `--workers N` (kexp.cli.workers)
    if workers:
        resume += f" --strategy multi_worker --workers {workers}"
    print(f"kexp: interrupted ({signal_name}){where}\nkexp: resume with: {resume}", file=sys.stderr)
    print(f"status: {RunStatus.INTERRUPTED}\nrun_dir: {run_dir}", flush=True)
    return code


def _throughput(samples_per_s: float | None) -> str:
    # None: nothing trained in this process (no fit, a resume with nothing left to train).
    return "n/a" if samples_per_s is None else f"{samples_per_s:.0f}"


def _from_here(path: Path) -> str:
    """Returns `path` relative to the working directory when it lies below it (what a user types), else whole.

    A relative path starting with `-` gets `./` in front, so that a command it is pasted into does not read it
    as an option.
    """
    try:
        shown = str(Path(path).absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
    from kexp.cli.board import not_an_option

    return not_an_option(shown)
