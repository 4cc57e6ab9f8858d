"""Run folders the fault tests share: a killable experiment, a run killed between its logs and its state,
a full disk, copies of made-once runs (fixtures using them are in `conftest.py`)."""

from __future__ import annotations

import fcntl
import inspect
import os
import shutil
import textwrap
from pathlib import Path

import pytest
from helpers import read_events, run_cli

__all__ = ["FILL_DISK_SOURCE", "KILLABLE", "copy_run", "epochs_logged", "fill_disk", "killed_run", "made_once",
           "snapshot"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make) -> Path:
    """Returns a folder that `make(folder)` fills, made once per test session however many xdist workers ask.

    The runs that fill it cost a TensorFlow import each; the tests that use
    them copy what they change (`copy_run`), so it stays as made. The xdist
    workers share their base temp folder's parent: the first to take the lock
    makes the folder, the other waits for it and reuses it.
    """
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = root / f"shared-{name}", root / f"shared-{name}.done"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


def copy_run(run_dir: Path, logdir: Path) -> Path:
    """Copies a run folder to LOGDIR/EXPERIMENT/RUN_ID, as the run itself would have left it there."""
    copy = logdir / run_dir.parent.name / run_dir.name
    shutil.copytree(run_dir, copy, symlinks=True)
    return copy


def fill_disk(folder):
    """Writes FOLDER/filler until the disk is full."""
    with open(folder / "filler", "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"x" * 4096)
        except OSError:
            pass


# The experiment files below fill their disk with the same function (its source appended to theirs).
FILL_DISK_SOURCE = "\n\n" + inspect.getsource(fill_disk)


# A linear fit that can kill itself at the end of an epoch, after its history
# row and TensorBoard point are written and before its state is saved (user
# callbacks run between the two), or fill its disk there (FILL_DISK_AT) or before it trains
# (FILL_DISK_BEFORE_FIT).
KILLABLE = textwrap.dedent('''
    """A linear fit that kills itself or fills its disk between an epoch's logs and its state."""
    import os
    import signal
    from pathlib import Path

    from kexp.config import ExperimentConfig, TrainConfig

    CONFIG = ExperimentConfig(data=None, model=None, train=TrainConfig(epochs=4, batch_size=16))


    def run(config, harness):
        import keras
        import numpy as np

        x = np.linspace(-1, 1, 64, dtype="float32")[:, None]

        def at_epoch_end(epoch, logs):
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots()
            ax.plot([0, epoch])
            harness.log_figure("per_epoch", fig, step=epoch, filename="per_epoch.png")
            if epoch == int(os.environ.get("KILL_AT", -1)):
                os.kill(os.getpid(), signal.SIGKILL)
            if epoch == int(os.environ.get("FILL_DISK_AT", -1)):
                fill_disk(harness.run_dir.parent)

        if os.environ.get("FILL_DISK_BEFORE_FIT"):
            fill_disk(harness.run_dir.parent)
        model = harness.fit(lambda: keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]), (x, 3 * x),
                            (x, 3 * x), loss="mse", callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=at_epoch_end)])
        return harness.evaluate(model, (x, 3 * x))
''') + FILL_DISK_SOURCE


def killed_run(logdir: Path, env: dict, at: int = 2) -> Path:
    proc = run_cli("run", "killable", "--logdir", str(logdir), env={**env, "KILL_AT": str(at)})
    assert proc.returncode == -9, proc.stderr[-3000:]
    (run_dir,) = (logdir / "killable").iterdir()
    return run_dir


def epochs_logged(run_dir: Path) -> tuple[list[int], list[int], list[int]]:
    rows = (run_dir / "history.csv").read_text().strip().splitlines()[1:]
    return ([int(r.split(",")[0]) for r in rows],
            [s for s, _ in read_events(run_dir / "train")["epoch_loss"]],
            [s for s, _ in read_events(run_dir / "validation")["epoch_loss"]])
