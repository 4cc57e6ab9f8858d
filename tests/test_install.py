"""A non-editable install into a fresh virtualenv works from any directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.slow
def test_wheel_install_lists_and_runs_from_another_directory(tmp_path: Path):
    # A copy of the source tree, so the build leaves nothing in the checkout.
    source = tmp_path / "src"
    shutil.copytree(
        REPO, source,
        ignore=shutil.ignore_patterns(".git", "logs", "build", "*.egg-info", "__pycache__", ".pytest_cache"),
    )
    venv = tmp_path / "venv"
    # System site-packages provide TensorFlow & co. so the test needs no 600 MB
    # download; kexp itself is installed into the venv, not linked.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    shutil.rmtree(source)  # the installed copy must not need the source tree

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [python, "-c", "import kexp, kexp.experiments as e; print(kexp.__file__); print(e.__path__[0])"],
        cwd=elsewhere, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert all(path.startswith(str(venv)) for path in where), where

    listing = subprocess.run([venv / "bin" / "kexp", "list"], cwd=elsewhere, capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.startswith("lstm_sine  ") or "\nlstm_sine  " in listing.stdout

    run = subprocess.run(
        [python, "-m", "kexp", "run", "lstm_sine", "--set", "train.epochs=1", "--set", "model.units=8"],
        cwd=elsewhere, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = Path(run.stdout.strip().splitlines()[-1].removeprefix("run_dir: "))
    assert run_dir.is_relative_to(elsewhere / "logs" / "lstm_sine")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["versions"]["kexp"] == "0.1.0"
