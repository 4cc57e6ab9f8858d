"""Internal: `kexp search`'s options and its command: check everything, run the trials, report.

Everything a search is given (space, settings, metric, storage, study) is
checked before any trial runs: bad input exits 2 with one line and leaves
no search folder. No TensorFlow is imported here (each trial's `kexp run`
imports it in its own process).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any, Iterator

from kexp.errors import RunError, UsageError
from kexp.store.record import RunStatus

MAX_TRIALS = 10_000
MAX_SEEDS = 100


def add_parser(sub: Any, positive: Any, strategies: Any) -> None:
    """Adds `kexp search` to the command line's subparsers."""
    from kexp.cli.search_study import SAMPLERS
    from kexp.engine.trial_link import PRUNERS

    search = sub.add_parser("search", help="search an experiment's settings with Optuna (ranges, pruning, "
                                           "studies shared by many processes or machines)")
    search.add_argument("name", nargs="?", default=None, help="the experiment (optional with --resume)")
    search.add_argument("--space", action="append", default=[], metavar="KEY=LOW:HIGH[:log]|KEY=A,B",
                        help="a searched setting: a range (log-uniform with :log) or choices (repeatable)")
    search.add_argument("--trials", type=positive, default=None,
                        help="trials this search runs (default 20; the study may get more from other processes)")
    search.add_argument("--jobs", type=positive, default=1, help="trials trained at once (default 1)")
    search.add_argument("--sampler", choices=SAMPLERS, default=None, help="Optuna's sampler (default tpe)")
    search.add_argument("--sampler-seed", type=int, default=None, help="seed of the sampler (default: none)")
    search.add_argument("--prune", choices=PRUNERS, default=None,
                        help="stop trials whose epoch loss trails the median of earlier trials' (default median)")
    search.add_argument("--metric", default=None, metavar="NAME[:min|:max]",
                        help="the objective (default: the experiment's first quality-bar metric, its bar's direction)")
    search.add_argument("--seeds", type=positive, default=None,
                        help="run each trial at train.seed 0..N-1; its objective is their mean (default: once)")
    search.add_argument("--storage", default=None, metavar="URL",
                        help="Optuna storage shared by the processes of one study, e.g. postgresql://USER:PW@HOST/DB "
                             "(default: an SQLite file in the search folder)")
    search.add_argument("--study", default=None, help="the study's name: the same name and storage join one study")
    search.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting every trial shares (repeatable)")
    search.add_argument("--logdir", default=None, help="root of run folders (default: ./logs)")
    search.add_argument("--strategy", default=None, choices=[s for s in strategies if s != "multi_worker"],
                        help="tf.distribute strategy of each trial (default auto)")
    search.add_argument("--resume", metavar="SEARCH_DIR", default=None,
                        help="continue a stopped search's trials and run those it is missing")


def command(args: argparse.Namespace) -> int:
    """Runs `kexp search` and returns its exit code (0 when every trial ended; 130 / 143 when stopped)."""
    from kexp.cli import search as searches
    from kexp.cli.search_study import open_study
    from kexp.store import rundir

    if args.resume is not None:
        given = [args.space, args.overrides, args.logdir, args.strategy, args.sampler, args.prune, args.metric,
                 args.seeds, args.study, args.trials, args.sampler_seed]
        if any(value not in (None, []) for value in given):
            raise UsageError("search --resume continues the saved search with its saved settings; allowed: "
                             "--resume with --jobs, and --storage when its URL holds a password")
        search, storage_url = searches.load_search(args.resume, args.name, args.storage)
        search_dir = Path(args.resume).absolute()
        lock = rundir.RunLock(search_dir, f"search folder {str(args.resume)!r}")
        try:
            study = open_study(search, storage_url, create=False)
            searches.reconcile(search, study, search_dir)
        except BaseException:
            lock.release()
            raise
    else:
        search_dir, search, storage_url, study = _new(args)
        lock = rundir.RunLock(search_dir, f"search folder {str(search_dir)!r}")
    return _run(search_dir, search, study, storage_url, args.jobs, lock)


def _check_storage(url: str | None) -> None:
    """Refuses an empty `--storage`, and an in-memory SQLite one: each trial's process would open its own."""
    import re

    if url is None:
        return
    if not url.strip():
        raise UsageError("--storage '': allowed: an Optuna storage URL, e.g. sqlite:///PATH/study.db, or no --storage "
                         "(an SQLite file in the search folder)")
    if re.fullmatch(r"sqlite(\+\w+)?:///?(:memory:)?", url.strip()) or "mode=memory" in url:
        raise UsageError(f"--storage {url!r}: an in-memory SQLite database is private to one process, and each trial "
                         "runs in its own; allowed: a file (sqlite:///PATH/study.db) or a database server's URL")


def _new(args: argparse.Namespace) -> tuple[Path, dict[str, Any], str, Any]:
    """Checks a new search's input, makes its folder and opens its study (the folder goes again if that fails)."""
    from kexp.cli import search as searches
    from kexp.cli.search_space import parse_space
    from kexp.cli.search_study import objective, open_study
    from kexp.engine.strategy import check_strategy_name
    from kexp.store import rundir
    from kexp.store.names import check_name

    if args.name is None:
        raise UsageError("search: give an experiment name (kexp list), or --resume SEARCH_DIR")
    check_name(args.name, "search NAME")
    trials = 20 if args.trials is None else args.trials
    if trials > MAX_TRIALS or (args.seeds or 0) > MAX_SEEDS:
        raise UsageError(f"search: --trials {trials} --seeds {args.seeds}; allowed: at most {MAX_TRIALS} trials and "
                         f"{MAX_SEEDS} seeds")
    dimensions = parse_space(args.name, args.space, args.overrides)
    if args.seeds and any(d.key == "train.seed" for d in dimensions) or \
            args.seeds and any(o.split("=", 1)[0].strip() == "train.seed" for o in args.overrides):
        raise UsageError("search: --seeds sets train.seed itself; allowed: --seeds or a train.seed setting")
    goal = objective(args.name, args.metric)
    check_strategy_name(args.strategy or "auto")
    rundir.check_logdir(args.logdir or "logs")
    _check_storage(args.storage)
    if args.study is not None and (not args.study.strip() or len(args.study) > 200):
        raise UsageError(f"--study {args.study[:200]!r}: allowed: a name of 1 to 200 characters")
    options = {"trials": trials, "sampler": args.sampler or "tpe", "sampler_seed": args.sampler_seed,
               "prune": args.prune or "median", "seeds": args.seeds or 0, "strategy": args.strategy or "auto",
               "logdir": args.logdir or "logs", "storage": args.storage, "study": args.study}
    search_dir, search, storage_url = searches.new_search(args.name, dimensions, args.overrides, goal, options)
    try:
        study = open_study(search, storage_url, create=True)
    except BaseException:
        rundir.remove_run_dir(search_dir)
        raise
    return search_dir, search, storage_url, study


@contextlib.contextmanager
def _released(lock: Any) -> Iterator[None]:
    """Releases the search folder's lock when the block ends, however it ends."""
    try:
        yield
    finally:
        lock.release()


def _run(search_dir: Path, search: dict[str, Any], study: Any, storage_url: str, jobs: int, lock: Any) -> int:
    """Runs the trials with Ctrl-C / SIGTERM as requests, prints the report, and returns the exit code."""
    from kexp.cli import search as searches
    from kexp.cli import search_report
    from kexp.cli.search_trials import ENDED
    from kexp.study import plots

    print(f"kexp: search folder {search_dir}\nkexp: study {search['study']!r} in {search['storage']}", flush=True)
    if search["status"] == "complete":
        print(f"kexp: this search has run its {search['trials_wanted']} trials; nothing to run. More trials for its "
              f"study: the same kexp search command with --storage {search['storage']} --study {search['study']}",
              flush=True)
    from kexp.cli.stop_requests import stop_requests, stopped_exit_code

    with stop_requests() as requests, _released(lock):
        try:
            finished = searches.run_trials(search_dir, search, study, storage_url, jobs, requests,
                                           say=lambda line: print(line, flush=True))
        except (UsageError, RunError, KeyboardInterrupt):
            raise
        except Exception as err:  # the study's storage (a database gone, a locked file): one line, resumable
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise RunError(f"search: the study's storage failed ({reason[:300]}); finished trials are kept; "
                           f"continue with: kexp search --resume {search_dir}") from None
        print("\n".join(search_report.table(search, study)))
        print("\n".join(search_report.best_lines(search, study)))
        if any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
            png = plots.save(search_report.figure(search, study), search_dir / "search.png")
            search_report.write_image_event(search_dir, png, step=len(study.trials))
            print(f"figures: search.png (in {search_dir})")
        if not finished:
            print(f"kexp: search interrupted; finished trials are kept; continue with: kexp search --resume "
                  f"{search_dir}", file=sys.stderr)
        elif search["status"] == "incomplete":
            print(f"kexp: a trial's process was killed before it ended; continue it with: kexp search --resume "
                  f"{search_dir}", file=sys.stderr)
        print(f"search_dir: {search_dir}", flush=True)
    if search.get("metric_missing"):
        raise RunError(search["metric_missing"])
    if not finished:
        return stopped_exit_code(requests)
    ended = [t for t in search["trials"] if t["status"] in ENDED]
    # Pruned and failed trials are a search's normal outcomes; a search none of whose trials ended ok is not.
    return 0 if len(ended) == len(search["trials"]) and any(t["status"] == RunStatus.OK for t in ended) else 1

