"""Writes that fail: a full disk (a real small tmpfs) and a read-only folder (a real read-only bind mount) at
each kind of write, and the fsync order that makes a write survive a crash. Nothing mocked but `os.fsync`'s log.

Every failed write ends in one line naming its file, exit 1, and a folder that resumes once space is freed.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest
from helpers import read_events, run_cli_here
from runkit import FILL_DISK_SOURCE, copy_run, epochs_logged, fill_disk

from kexp.store import checkpoint


def _one_error_line(proc) -> str:
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kexp: error: could not write "), proc.stderr
    return lines[0]


def _fill_leaving(disk: Path, kib: int) -> None:
    """Fills DISK, then frees KIB KiB of its filler."""
    fill_disk(disk)
    filler = disk / "filler"
    os.truncate(filler, max(0, filler.stat().st_size - kib * 1024))


def test_full_disk_at_the_state_save_names_the_state_file_and_resume_logs_no_epoch_twice(killable, small_disk):
    logdir = small_disk / "logs"
    proc = run_cli_here("run", "killable", "--logdir", str(logdir), env={**killable, "FILL_DISK_AT": "1"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kexp: error: could not write ") \
        and "backup/model/state.npz (No space left on device)" in lines[0], proc.stderr
    (run_dir,) = [p for p in (logdir / "killable").iterdir() if p.is_dir()]
    (logdir / "killable" / "filler").unlink()
    assert checkpoint.load(checkpoint.state_path(run_dir / "backup" / "model")).epochs_done == 1
    resumed = run_cli_here("run", "killable", "--resume", str(run_dir), env=killable)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert epochs_logged(run_dir) == ([0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3])


def test_full_disk_at_the_start_names_config_json_and_leaves_no_folder(killable, small_disk):
    logdir = small_disk / "logs"
    (logdir / "killable").mkdir(parents=True)
    fill_disk(small_disk)
    proc = run_cli_here("run", "killable", "--logdir", str(logdir), env=killable)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.json (No space left on device)" in lines[0], proc.stderr
    assert not (logdir / "killable").exists() or list((logdir / "killable").iterdir()) == []


FIGURE_ON_FULL_DISK = textwrap.dedent('''
    """Fills its disk, then saves a figure."""
    from kexp.config import ExperimentConfig

    CONFIG = ExperimentConfig(data=None, model=None)


    def run(config, harness):
        import matplotlib.pyplot as plt

        fill_disk(harness.run_dir.parent)
        fig, ax = plt.subplots()
        ax.plot(range(1000))
        harness.log_figure("curve", fig)
        return {}
''') + FILL_DISK_SOURCE


def test_full_disk_at_a_figure_names_the_png(tmp_path, small_disk):
    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "figure_full.py").write_text(FIGURE_ON_FULL_DISK)
    proc = run_cli_here("run", "figure_full", "--logdir", str(small_disk / "logs"),
                        env={"KEXP_EXPERIMENTS_PATH": str(tmp_path / "exps")})
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "curve.png (No space left on device)" in lines[0], proc.stderr


def test_full_disk_at_the_tensorboard_writer_names_its_event_file_and_the_run_resumes(killable, small_disk):
    """TensorFlow says only `Could not initialize events writer` / a failed flush: the error names the file."""
    logdir = small_disk / "logs"
    proc = run_cli_here("run", "killable", "--logdir", str(logdir), env={**killable, "FILL_DISK_BEFORE_FIT": "1"})
    line = _one_error_line(proc)
    (run_dir,) = [p for p in (logdir / "killable").iterdir() if p.is_dir()]
    assert line == f"kexp: error: could not write {run_dir}/train/events.out.tfevents.* (No space left on device)"
    (logdir / "killable" / "filler").unlink()
    resumed = run_cli_here("run", "killable", "--resume", str(run_dir), env=killable)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert epochs_logged(run_dir) == ([0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3])


def test_full_disk_at_the_purge_of_a_resume_names_the_event_file_and_a_later_resume_logs_no_epoch_twice(
        killed_at_2, killable, small_disk):
    """The killed run logged epoch 2 but saved no state for it: resuming rewrites its logs without it."""
    run_dir = copy_run(killed_at_2, small_disk / "logs")
    _fill_leaving(small_disk, 8)
    line = _one_error_line(run_cli_here("run", "killable", "--resume", str(run_dir), env=killable))
    # The first write that failed: the purge of one of the run's logs (which one depends on free space).
    assert re.fullmatch(rf"kexp: error: could not write {re.escape(str(run_dir))}/(train/|validation/)?"
                        r"(history\.csv|events\.out\.tfevents\.\S+) \(No space left on device\)", line), line
    assert not list(run_dir.rglob(".*.tmp"))
    (small_disk / "filler").unlink()
    resumed = run_cli_here("run", "killable", "--resume", str(run_dir), env=killable)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert epochs_logged(run_dir) == ([0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3])
    assert [step for step, _ in read_events(run_dir)["per_epoch"]] == [0, 1, 2, 3]


@pytest.fixture
def read_only(tmp_path):
    """Returns `mount(folder)`, which makes FOLDER read-only by a bind mount (needs root); unmounted at the end."""
    mounted = []

    def mount(folder: Path) -> None:
        for args in (["--bind", str(folder), str(folder)], ["-o", "remount,ro,bind", str(folder)]):
            proc = subprocess.run(["mount", *args], capture_output=True)
            if proc.returncode != 0:
                pytest.skip(f"cannot bind-mount here: {proc.stderr.decode().strip()}")
            mounted.append(folder)

    yield mount
    for folder in mounted[:1]:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_resume_in_a_read_only_folder_names_the_file_and_changes_nothing(killed_at_2, killable, logdir,
                                                                         read_only):
    run_dir = copy_run(killed_at_2, logdir)
    before = sorted(p.name for p in run_dir.rglob("*"))
    read_only(run_dir)
    line = _one_error_line(run_cli_here("run", "killable", "--resume", str(run_dir), env=killable))
    # The first write: the purge of history.csv (the epoch the kill left logged but not saved).
    assert line == f"kexp: error: could not write {run_dir}/history.csv (Read-only file system)"
    subprocess.run(["umount", "-l", str(run_dir)], check=True)
    assert sorted(p.name for p in run_dir.rglob("*")) == before
    resumed = run_cli_here("run", "killable", "--resume", str(run_dir), env=killable)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert epochs_logged(run_dir) == ([0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3])


def test_state_and_json_writes_fsync_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    import keras

    from kexp.store import rundir

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", Path(b).name)), real_replace(a, b))[1])
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    checkpoint.save(tmp_path / "backup", model, 1, 2)
    assert events == [("fsync", False), ("replace", "state.npz"), ("fsync", True)]
    events.clear()
    rundir.write_json(tmp_path / "results.json", {"a": 1})
    assert events == [("fsync", False), ("replace", "results.json"), ("fsync", True)]


def test_a_tensorflow_event_write_failing_inside_keras_fit_is_named_in_one_line(small_disk):
    """Keras' own TensorBoard callback writes inside `fit`, out of kexp's wrappers' reach: the harness reads
    the event file from TensorFlow's many-line error (here a real one, from a real full disk)."""
    import tensorflow as tf

    from kexp.engine.outputs import events_error_in

    logdir = small_disk / "run" / "train"
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        tf.summary.scalar("epoch_loss", 1.0, step=0)
    writer.flush()
    fill_disk(small_disk)
    with pytest.raises(tf.errors.OpError) as raised:
        with writer.as_default():
            for step in range(1, 200):  # past the writer's queue of 10: it flushes, and fails
                tf.summary.scalar("epoch_loss", 1.0, step=step)
        writer.flush()
    assert "events.out.tfevents" in str(raised.value) and "\n" in str(raised.value).strip()
    named = events_error_in(raised.value)
    assert str(named) == f"could not write {logdir}/events.out.tfevents.* (No space left on device)"
    assert events_error_in(tf.errors.InvalidArgumentError(None, None, "a shape mismatch")) is None
