"""The README's Python example runs as written, as a user's script: in its own process, with nothing on stderr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

# Appended to the example: what the test checks, printed as JSON on the last line.
_REPORT = """
import json
print(json.dumps({"status": harness.results["status"], "test_loss": harness.results["metrics"]["test_loss"],
                  "run_dir": str(harness.run_dir), "lstm_run_dir": results["run_dir"]}))
"""


@pytest.mark.slow
def test_readme_python_example_runs_and_prints_nothing_on_stderr(tmp_path: Path):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    proc = subprocess.run([sys.executable, "-c", blocks[0] + _REPORT], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""  # no TensorFlow start-up lines, no warnings
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["status"] == "ok"
    assert report["test_loss"] < 0.05  # y = sum(x) is learned
    assert Path(report["run_dir"]).is_relative_to(tmp_path / "logs" / "my_regressor")
    assert (Path(report["lstm_run_dir"]) / "forecast.png").is_file()
