"""Internal: the `kexp` command line: parsing, exit codes and printing only.

Exit codes: 0 ok; 2 bad usage, config or input (one line on stderr, no run
folder left); 1 the run failed or diverged; 130 / 143 stopped by SIGINT /
SIGTERM (continue with `--resume RUN_DIR`; `sweep` and `search` likewise with
`--resume` of their folder). TensorFlow is imported only by commands that train and
by `tensorboard`; `list`, `show`, `runs`, `sweep` and `search` themselves never import it. `kexp run` is
`kexp.cli.run_command`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from kexp.config_values import ascii_int
from kexp.errors import RunError, UsageError
from kexp.store.record import RunStatus
from kexp.engine.strategy import STRATEGIES


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # The CLI prefixes every error with "kexp: error:"; a subcommand's names itself after it.
        raise UsageError(message if self.prog == "kexp" else f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """Returns the parser of `kexp` and its subcommands."""
    parser = _Parser(prog="kexp", description="Run classic deep-learning experiments on Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list experiments: NAME  description")
    show = sub.add_parser("show", help="print an experiment's description, quality bar, time and resolved config")
    show.add_argument("name")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    run = sub.add_parser("run", help="train an experiment")
    run.add_argument("name")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )
    run.add_argument("--config", default=None, metavar="FILE",
                     help="settings from a JSON file, as a run's config.json holds them (--set values win)")
    run.add_argument("--logdir", default="logs", help="root of run folders (default: ./logs)")
    run.add_argument("--strategy", default="auto", choices=STRATEGIES, help="tf.distribute strategy")
    run.add_argument("--resume", metavar="RUN_DIR", default=None,
                     help="continue an interrupted run in its own folder, from its last completed epoch")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="with --strategy multi_worker: start N worker processes on this machine (to try it)")
    run.add_argument("--name", dest="name_label", default=None, metavar="LABEL",
                     help="end of the run folder's name, as TensorBoard lists it (default: the settings "
                          "that differ from the defaults, e.g. units=128, or 'defaults')")
    bench = sub.add_parser("bench", help="measure training throughput against plain model.fit")
    bench.add_argument("name", nargs="?", default=None,
                       help="benchmark case: fnn, heart_mlp, xor, lstm (kexp's LSTM(256) in the harness, Keras' in "
                            "the baseline; about 2.5 min on 2 cores) or dcgan")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--repeats", type=_positive, default=3, help="fits per method (default 3)")
    bench.add_argument("--epochs", type=_positive, default=3, help="epochs per fit; the first is excluded")
    bench.add_argument("--examples", type=_positive, default=None, help="training examples")
    bench.add_argument("--width", type=_positive, default=500, help="hidden width of fnn")
    bench.add_argument("--strategy", default="default", choices=STRATEGIES)
    bench.add_argument("--profile", action="store_true",
                       help="also trace one harness epoch with the TensorFlow profiler and list its top ops")
    bench.add_argument("--no-compare", dest="compare", action="store_false",
                       help="harness only: skip the baseline, the bare loop and the loss check")
    bench.add_argument("--no-limit", dest="limit", action="store_false",
                       help="skip the machine's limit (the FLOP count and the matmul timing, a few seconds)")
    bench.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                       help="also time the harness under mixed_bfloat16; auto: where the CPU has avx512_bf16 or "
                            "amx_bf16 (elsewhere oneDNN emulates it)")
    bench.add_argument("--sweep", action="store_true",
                       help="scaling report (batch size, width, replicas, rollout horizon) into LOGDIR/bench_sweep")
    bench.add_argument("--logdir", default="logs", help="where --sweep writes its run folder")
    bench.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="train.KEY=VALUE",
        help="a harness training setting, e.g. train.fuse_steps=false (repeatable)",
    )
    runs = sub.add_parser("runs", help="list past runs from their results.json, newest first; "
                                       "`runs diff RUN_A RUN_B` compares two")
    runs.add_argument("name", nargs="*", default=[], metavar="NAME | diff RUN_A RUN_B",
                      help="only this experiment's runs; or `diff` and two run folders (or RUN_IDs)")
    runs.add_argument("--logdir", default="logs", help="root of run folders (default: ./logs)")
    runs.add_argument("--format", choices=("table", "md", "csv", "json"), default=None,
                      help="table (default), md (Markdown), csv (a column per metric) or json")
    runs.add_argument("--json", action="store_true", help="the same as --format json")
    board = sub.add_parser("tensorboard", help="start TensorBoard on 127.0.0.1 for the run folders")
    board.add_argument("--logdir", default="logs", help="root of run folders (default: ./logs)")
    board.add_argument("--port", type=_port, default=6006, help="port (default 6006; 0: any free one)")
    _add_sweep(sub)
    from kexp.cli.search_command import add_parser as add_search

    add_search(sub, _positive, STRATEGIES)
    check = sub.add_parser("check", help="run experiments at their defaults and check every declared quality bar")
    check.add_argument("names", nargs="*", metavar="NAME", help="experiments to check (default: every one)")
    check.add_argument("--jobs", type=_positive, default=1, help="experiments run at once (default 1)")
    check.add_argument("--logdir", default="logs", help="root of run folders and check-ID/ (default: ./logs)")
    check.add_argument("--seed", type=_seed, default=None, help="train.seed of every run (default: each one's)")
    check.add_argument("--json", action="store_true", help="print check.json instead of the table")
    check.add_argument("--list", action="store_true", help="print each experiment's bars and expected time; "
                       "trains nothing")
    return parser


def _seed(text: str) -> int:
    try:
        value = ascii_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"received {text!r}; allowed: an integer 0..{2**32 - 1} (train.seed)") from None
    return value


def _port(text: str) -> int:
    try:
        value = ascii_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"received {text!r}; allowed: an integer 0-65535") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"received {value}; allowed: an integer 0-65535")
    return value


def _positive(text: str) -> int:
    try:
        value = ascii_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"received {text!r}; allowed: an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"received {value}; allowed: an integer >= 1")
    return value


def _add_sweep(sub: Any) -> None:
    """Adds `kexp sweep` to the command line's subparsers."""
    sweep = sub.add_parser("sweep", help="train an experiment at every point of a grid of settings")
    sweep.add_argument("name", nargs="?", default=None, help="the experiment (optional with --resume)")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="a swept setting, e.g. --grid model.units=32,64 (repeatable: the grid is their product)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="a setting every point shares (repeatable)")
    sweep.add_argument("--jobs", type=_positive, default=1, help="points trained at once (default 1)")
    sweep.add_argument("--seeds", type=_positive, default=None,
                       help="repeat each point at train.seed 0..N-1 and report mean ± std per point")
    sweep.add_argument("--logdir", default=None, help="root of run folders (default: ./logs)")
    sweep.add_argument("--strategy", default=None, choices=STRATEGIES,
                       help="tf.distribute strategy of each point (default auto)")
    sweep.add_argument("--resume", metavar="SWEEP_DIR", default=None, help="run the points a stopped sweep is missing")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI and returns its exit code.

    Output to a reader that has left (`kexp run NAME | head -2`) is dropped:
    the command goes on and ends as it would have (see `kexp.cli.pipes`).
    """
    from kexp.cli.pipes import dropping_closed_pipes

    with dropping_closed_pipes():
        return _dispatch(argv)


def _check_set_pairs(argv: list[str]) -> None:
    """Refuses `--set KEY VALUE` (a space for the `=`) with the form it takes, before argparse's "unrecognized".

    Raises:
        UsageError: Naming the option and its `key=value` form.
    """
    for flag, value, after in zip(argv, argv[1:], [*argv[2:], None]):
        if flag == "--set" and "=" not in value and after is not None and not after.startswith("-"):
            raise UsageError(f"--set {value} {after}: expected key=value; allowed: --set {value}={after}")


def _dispatch(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    given = sys.argv[1:] if argv is None else list(argv)
    if not given:
        # Bare `kexp`: what it can do, rather than argparse's "arguments are required".
        print(parser.format_help(), end="")
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        print(f"kexp: error: no command given; allowed: {', '.join(commands)} (kexp COMMAND --help)",
              file=sys.stderr)
        return 2
    try:
        _check_set_pairs(given)
        args = parser.parse_args(argv)
        if args.command == "list":
            return _list()
        if args.command == "show":
            return _show(args.name, args.overrides)
        if args.command == "bench":
            return _bench(args)
        if args.command == "runs":
            from kexp.cli.runs_command import runs_command

            return runs_command(args)
        if args.command == "tensorboard":
            from kexp.cli import board

            return board.command(args.logdir, args.port)
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "search":
            from kexp.cli.search_command import command

            return command(args)
        if args.command == "check":
            from kexp.cli import check

            return check.command(args.names, jobs=args.jobs, logdir=args.logdir, seed=args.seed,
                                 as_json=args.json, list_only=args.list)
        from kexp.cli.run_command import run

        return run(args)
    except UsageError as err:
        print(f"kexp: error: {err}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"kexp: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `kexp list | head`: the reader left; nothing more to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as err:
        from kexp.cli.run_command import interrupted_exit

        return interrupted_exit(err)


def _list() -> int:
    from kexp import registry

    found = registry.discover()
    width = max((len(n) for n in found), default=0)
    for name, spec in found.items():
        print(f"{name:<{width}}  {spec.description}")
    return 0


def _show(name: str, overrides: Sequence[str]) -> int:
    from kexp import quality, registry
    from kexp.config import describe
    from kexp.runner import resolve

    config = resolve(name, overrides)
    module = registry.load(name)
    # What the experiment shows and must reach come first, as `# ` lines above the settings.
    print(f"# {name}: {registry.get(name).description}")
    bars = getattr(module, "EXPECTED", None) or {}
    print("# quality bar: " + (", ".join(f"{key} {quality.describe(bar)}" for key, bar in bars.items()) or "none"))
    seconds = getattr(module, "EXPECTED_TIME_S", None)
    print(f"# time at defaults: ~{seconds:g} s (whole command, 2-core CPU; the README's table says which)" if seconds
          else "# time at defaults: not declared")
    for line in describe(config):
        print(line)
    return 0


def _bench_train_settings(overrides: Sequence[str]) -> dict[str, Any]:
    """Returns the `train.*` fields that `bench --set` changes, validated like `run --set`."""
    import dataclasses

    from kexp.cli.bench import BENCH_OWN_KEYS
    from kexp.config import ExperimentConfig, TrainConfig, apply_overrides

    config = apply_overrides(ExperimentConfig(data=None, model=None), overrides)
    default = TrainConfig()
    changed = {f.name: getattr(config.train, f.name) for f in dataclasses.fields(TrainConfig)
               if getattr(config.train, f.name) != getattr(default, f.name)}
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key.split(".")[-1] in BENCH_OWN_KEYS:
            raise UsageError(f"bench --set {item!r}: {key} is fixed by the case for all three methods; "
                             f"settable: train.* except {', '.join(BENCH_OWN_KEYS)}")
    return changed


def _bench(args: argparse.Namespace) -> int:
    import json

    from kexp.cli import bench
    from kexp.engine.quiet import import_tensorflow_quietly
    from kexp.engine.strategy import check_strategy_name

    if args.sweep == bool(args.name):
        raise UsageError(f"bench: give a case ({', '.join(bench.CASES)}) or --sweep, not both or neither")
    if args.name and args.name not in bench.CASES:
        raise UsageError(f"bench: unknown case {args.name!r}; allowed: {', '.join(bench.CASES)}")
    check_strategy_name(args.strategy)
    train_settings = _bench_train_settings(args.overrides)
    if args.sweep and train_settings:
        raise UsageError("bench: --set applies to a case, not to --sweep")
    if args.sweep and args.profile:
        raise UsageError("bench: --profile applies to a case, not to --sweep")
    if args.sweep and not args.limit:
        raise UsageError("bench: --no-limit applies to a case, not to --sweep")
    from kexp.cli.bench_limits import check_fits

    check_fits(args.name, args.examples, args.width, sweep=args.sweep)
    import_tensorflow_quietly()
    if args.sweep:
        from kexp.cli import scaling

        run_dir, sweep = scaling.run_sweep(args.logdir, examples=args.examples or scaling.SWEEP_EXAMPLES)
        lines = [json.dumps({**sweep, "run_dir": str(run_dir)})] if args.json else scaling.format_sweep(sweep, run_dir)
        print("\n".join(lines))
        return 0
    try:
        result = bench.run_bench(args.name, repeats=args.repeats, epochs=args.epochs, strategy=args.strategy,
                                 examples=args.examples, width=args.width, compare=args.compare,
                                 train_settings=train_settings, profile=args.profile, limit=args.limit,
                                 bf16={"auto": None, "on": True, "off": False}[args.bf16])
    except MemoryError:
        raise UsageError(f"bench {args.name}: --examples {args.examples}: the case's data does not fit in this "
                         "machine's memory; allowed: fewer examples") from None
    if args.json:
        print(json.dumps(result))
    else:
        from kexp.cli.bench_report import format_result

        print("\n".join(format_result(result)))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from kexp.cli import sweep as sweeps
    from kexp.store.names import check_name
    from kexp.store.rundir import RunLock
    from kexp.engine.strategy import check_strategy_name as check_strategy

    if args.resume is not None:
        if args.grid or args.overrides or args.logdir is not None or args.strategy is not None or args.seeds:
            raise UsageError("sweep --resume runs the saved grid with its saved settings; received --grid, --set, "
                             "--logdir, --strategy or --seeds; allowed: --resume with --jobs only")
        data = sweeps.load_sweep(args.resume, args.name)
        check_strategy(data["strategy"])  # and KEXP_CPU_DEVICES: checked once here, not by every point
        sweep_dir = os.path.abspath(args.resume)
    else:
        if args.name is None:
            raise UsageError("sweep: give an experiment name (kexp list), or --resume SWEEP_DIR")
        check_name(args.name, "sweep NAME")
        grid = sweeps.parse_grid(args.name, sweeps.with_seeds(args.grid, args.overrides, args.seeds), args.overrides)
        check_strategy(args.strategy or "auto")
        sweep_dir, data = sweeps.new_sweep(args.name, grid, args.overrides, args.logdir or "logs",
                                           args.strategy or "auto", seeds=args.seeds or 0)
    from pathlib import Path

    from kexp.cli.stop_requests import stop_requests, stopped_exit_code

    sweep_dir = Path(sweep_dir)
    lock = RunLock(sweep_dir, f"sweep folder {str(sweep_dir)!r}")
    # From here to the last line a signal is a request the sweep acts on between its steps.
    try:
        with stop_requests() as requests:
            finished = sweeps.run_points(sweep_dir, data, args.jobs, requests,
                                         say=lambda line: print(line, flush=True))
            print("\n".join(sweeps.summarize(sweep_dir, data)))
            if not finished:
                print(f"kexp: sweep interrupted; finished points are kept; continue with: kexp sweep --resume "
                      f"{sweep_dir}", file=sys.stderr)
            print(f"sweep_dir: {sweep_dir}", flush=True)
    finally:
        lock.release()
    if not finished:
        return stopped_exit_code(requests)
    return 0 if all(p["status"] == RunStatus.OK for p in data["points"]) else 1
