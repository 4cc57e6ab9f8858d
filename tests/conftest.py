"""Test session set-up: two logical CPU devices, quiet TensorFlow, the `logdir` fixture (helpers: `helpers.py`).

The logical devices must be configured before anything touches TensorFlow's
devices, so it happens here, at import, once per session. Tests under
`MirroredStrategy` then get two replicas on a CPU-only machine.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from kexp.engine.strategy import configure_cpu_devices  # noqa: E402

configure_cpu_devices(2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Starts the slow tests first, so that the two workers finish together instead of one waiting on a long test."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    """An empty folder for run folders."""
    path = tmp_path / "logs"
    path.mkdir()
    return path
