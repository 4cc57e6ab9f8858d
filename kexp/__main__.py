"""`python -m kexp`: same as the `kexp` command."""

import signal
import sys


def entry() -> int:
    """Runs the command line; a SIGINT or SIGTERM while it starts ends it with one line and 130/143.

    The handlers go in before anything else is imported (TensorFlow's import
    takes seconds, numpy's a few hundred milliseconds): SIGTERM's default would
    kill the process with no message, and a SIGINT would print a traceback.
    The command then installs its own (`kexp.engine.interrupt`).
    """
    def interrupted(signum: int, frame: object) -> None:
        stop = KeyboardInterrupt(signum)
        stop.exit_code = 143 if signum == signal.SIGTERM else 130  # type: ignore[attr-defined]
        raise stop

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupted)
    try:
        from kexp.cli import main

        return main()
    except KeyboardInterrupt as err:  # before the command's own handling started, or after it ended
        code = getattr(err, "exit_code", 130)
        name = "SIGTERM" if code == 143 else "SIGINT"
        print(f"kexp: interrupted ({name}) while starting or ending; nothing to resume", file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(entry())
