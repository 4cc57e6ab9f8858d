"""The suite's order (`schedule.py`): equal expected seconds per xdist worker, module fixtures set up once each."""

from __future__ import annotations

from types import SimpleNamespace

import schedule
from helpers import REPO


def _item(node_id: str, module_fixture: bool = False) -> SimpleNamespace:
    scope = "module" if module_fixture else "function"
    return SimpleNamespace(nodeid=node_id, _fixtureinfo=SimpleNamespace(
        name2fixturedefs={"f": [SimpleNamespace(scope=scope)]}))


def test_each_workers_share_has_worksteals_count_the_same_seconds_and_ends_with_its_shortest_tests():
    seconds = {"a.py::long": 90, "a.py::mid": 30, "b.py::mid": 30, "c.py::one": 20, "c.py::two": 10}
    items = [_item(n) for n in ("a.py::long", "a.py::mid", "b.py::mid")]
    items += [_item("c.py::one", True), _item("c.py::two", True)]
    items += [_item(f"d.py::quick{i}") for i in range(7)]
    ordered = schedule.order(items, 2, seconds)
    assert sorted(i.nodeid for i in ordered) == sorted(i.nodeid for i in items)
    first, second = ordered[:6], ordered[6:]  # worksteal's first shares: 12 // 2, then the other 6
    loads = [sum(seconds.get(i.nodeid, schedule.UNLISTED_S) for i in share) for share in (first, second)]
    assert abs(loads[0] - loads[1]) <= 1, loads  # 90 s against three tests of 30 (one a fixture's pair)
    for share in (first, second):
        times = [seconds.get(i.nodeid, schedule.UNLISTED_S) for i in share]
        assert times[-1] == min(times)
    # The module-fixture tests stay together, in their order, in one share.
    names = [i.nodeid for i in ordered]
    assert names.index("c.py::two") == names.index("c.py::one") + 1
    assert schedule.order(items, 1, seconds)[0].nodeid == "a.py::long"


def test_the_durations_file_names_tests_that_exist():
    seconds = schedule.load_seconds(REPO / "tests" / "durations.txt")
    assert len(seconds) > 100 and all(value >= 1.0 for value in seconds.values())
    # A renamed test keeps its old line harmlessly, but the file should follow the suite: most names resolve.
    files = {node_id.split("::", 1)[0] for node_id in seconds}
    assert all((REPO / name).is_file() for name in files), files
