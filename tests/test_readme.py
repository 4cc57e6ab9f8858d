"""The README's Python example runs as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from helpers import REPO


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path: Path, monkeypatch):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    harness = namespace["harness"]
    assert harness.results["status"] == "ok"
    assert harness.results["metrics"]["test_loss"] < 0.05  # y = sum(x) is learned
    assert Path(harness.run_dir).is_relative_to(tmp_path / "logs" / "my_regressor")
    assert os.path.exists(Path(namespace["results"]["run_dir"]) / "forecast.png")
