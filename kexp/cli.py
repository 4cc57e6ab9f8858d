"""The `kexp` command line: parsing, exit codes and printing only.

Exit codes: 0 ok; 2 bad usage, config or input (one line on stderr, no run
folder left); 1 the run failed or diverged. TensorFlow is imported only by
commands that train.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from kexp.errors import UsageError
from kexp.strategy import STRATEGIES


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """Returns the parser of `kexp` and its subcommands."""
    parser = _Parser(prog="kexp", description="Run classic deep-learning experiments on Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list experiments: NAME  description")
    show = sub.add_parser("show", help="print an experiment's resolved config")
    show.add_argument("name")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    run = sub.add_parser("run", help="train an experiment")
    run.add_argument("name")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )
    run.add_argument("--logdir", default="logs", help="root of run folders (default: ./logs)")
    run.add_argument("--strategy", default="auto", choices=STRATEGIES, help="tf.distribute strategy")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI and returns its exit code."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "list":
            return _list()
        if args.command == "show":
            return _show(args.name, args.overrides)
        return _run(args)
    except UsageError as err:
        print(f"kexp: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kexp: interrupted", file=sys.stderr)
        return 130


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow and finds its devices with the C++ start-up log lines hidden.

    TensorFlow 2.21 logs through absl before its log level is read (and a
    CPU-only machine gets a "failed call to cuInit" error line when devices
    are listed), so TF_CPP_MIN_LOG_LEVEL alone cannot hide those lines; the
    CLI's stderr is kept for kexp's own one-line errors. Set
    TF_CPP_MIN_LOG_LEVEL=0 to see them.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow

            # Physical devices only: logical ones may still be configured.
            tensorflow.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _list() -> int:
    from kexp import registry

    found = registry.discover()
    width = max((len(n) for n in found), default=0)
    for name, spec in found.items():
        print(f"{name:<{width}}  {spec.description}")
    return 0


def _show(name: str, overrides: Sequence[str]) -> int:
    from kexp.config import describe
    from kexp.runner import resolve

    for line in describe(resolve(name, overrides)):
        print(line)
    return 0


def _run(args: argparse.Namespace) -> int:
    from kexp.runner import resolve, run_experiment
    from kexp.strategy import check_name

    # Bad input fails here, before TensorFlow loads.
    resolve(args.name, args.overrides)
    check_name(args.strategy)
    _import_tensorflow_quietly()
    results = run_experiment(args.name, args.overrides, logdir=args.logdir, strategy=args.strategy)
    for key, value in results["metrics"].items():
        print(f"{key}: {value:.6g}")
    print(
        f"status: {results['status']}  wall_time_s: {results['wall_time_s']:.1f}  "
        f"train_samples_per_s: {results['train_samples_per_s']:.0f}  "
        f"replicas: {results['num_replicas']}"
    )
    print(f"run_dir: {results['run_dir']}")
    return 0 if results["status"] == "ok" else 1
