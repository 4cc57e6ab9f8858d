"""The suite's order, so that pytest-xdist's `worksteal` workers finish together.

`worksteal` hands each of its W workers an equal count of the collected tests, in order, then lets an idle
worker take the last half of the longest queue. Ordered as collected, the long kill-and-resume tests fell into
one worker's share, or ran last while the other workers idled. Here each worker's share gets about the same
seconds (`durations.txt`, longest first: the greedy longest-processing-time rule) and ends with its shortest
tests, the ones a steal takes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Seconds assumed for a test not in `durations.txt` (those in it take 1 s or more).
UNLISTED_S = 0.3


def load_seconds(path: Path) -> dict[str, float]:
    """Returns `{node id: seconds}` from a file of `SECONDS NODE_ID` lines (`#` starts a comment line)."""
    seconds = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            value, node_id = line.split(" ", 1)
            seconds[node_id] = float(value)
    return seconds


def order(items: list[pytest.Item], workers: int, seconds: dict[str, float]) -> list[pytest.Item]:
    """Returns `items` ordered so that `worksteal`'s equal-count shares take about equal time.

    Tests sharing a module-scoped fixture stay together, in their order, so that each worker sets it up once.

    Args:
        items: The collected tests.
        workers: The number of xdist workers (1 without xdist).
        seconds: Expected seconds per node id.

    Returns:
        The tests: the first worker's share, then the second's, and so on, each longest first.
    """
    units = _units(items)
    weights = {id(unit): sum(seconds.get(item.nodeid, UNLISTED_S) for item in unit) for unit in units}
    sizes, left = [], len(items)
    for worker in range(workers):  # worksteal's first shares: len(pending) // workers_remaining each
        sizes.append(left // (workers - worker))
        left -= sizes[-1]
    shares: list[list[list[pytest.Item]]] = [[] for _ in range(workers)]
    loads, counts = [0.0] * workers, [0] * workers
    for unit in sorted(units, key=lambda unit: weights[id(unit)], reverse=True):
        room = [w for w in range(workers) if counts[w] + len(unit) <= sizes[w]] or list(range(workers))
        worker = min(room, key=lambda w: loads[w])
        shares[worker].append(unit)
        loads[worker] += weights[id(unit)]
        counts[worker] += len(unit)
    return [item for share in shares for unit in share for item in unit]


def _units(items: list[pytest.Item]) -> list[list[pytest.Item]]:
    """Returns the tests in scheduling units: a module's tests that use a module-scoped fixture form one."""
    units: list[list[pytest.Item]] = []
    by_module: dict[str, list[pytest.Item]] = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        definitions = info.name2fixturedefs.values() if info is not None else []
        if any(defs and defs[-1].scope == "module" for defs in definitions):
            module = item.nodeid.split("::", 1)[0]
            if module not in by_module:
                by_module[module] = []
                units.append(by_module[module])
            by_module[module].append(item)
        else:
            units.append([item])
    return units
