"""The status words a run folder, a sweep point and `kexp runs` use.

`RunStatus` subclasses `str`: a member compares equal to its plain value
(`RunStatus.OK == "ok"`, also for statuses read back from JSON), prints as
it (`f"status: {RunStatus.OK}"` is `status: ok`), and `json.dumps` writes
it as that value, so `results.json` and `sweep.json` hold the same words
they always did.
"""

from __future__ import annotations

import enum


class RunStatus(str, enum.Enum):
    """A run's status.

    `results.json` holds one of `RECORDED`: `ok` (trained to the end, every
    metric finite), `diverged` (a non-finite loss, weight or metric),
    `interrupted` (SIGINT/SIGTERM; resumable), `failed` (an error) or
    `pruned` (a `kexp search` trial its study stopped early). The
    others name states seen from outside a run: `running` (a process holds
    the folder's lock), `crashed` (killed with no `results.json` written),
    `corrupt` (files `kexp runs` cannot read) and `pending` (a sweep point
    not started yet).
    """

    OK = "ok"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    PRUNED = "pruned"
    RUNNING = "running"
    CRASHED = "crashed"
    CORRUPT = "corrupt"
    PENDING = "pending"

    def __str__(self) -> str:
        # Python 3.11+ formats a mixed-in Enum as `RunStatus.OK`; CLI lines print the word itself.
        return self.value


# The statuses a finished run's `results.json` can hold.
RECORDED = (RunStatus.OK, RunStatus.DIVERGED, RunStatus.INTERRUPTED, RunStatus.FAILED, RunStatus.PRUNED)
