"""`kexp.store.fitlogs.truncate`: a resumed fit's logs are cut back to its saved epochs.

Real files throughout: the event files come from `keras.callbacks.TensorBoard`
in a real `model.fit`, the history from `keras.callbacks.CSVLogger`, and they
are read back with TensorBoard's own readers.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from kexp.store import fitlogs

# --- helpers -----------------------------------------------------------------


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")).astype("float32")
    return x, y


def _model():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", metrics=["mae"])
    return model


def _fit(model, sub: Path, epochs: int, initial_epoch: int = 0) -> None:
    import keras

    x, y = _data()
    model.fit(
        x, y, batch_size=16, epochs=epochs, initial_epoch=initial_epoch,
        validation_data=(x[:16], y[:16]), verbose=0, shuffle=False,
        callbacks=[
            keras.callbacks.TensorBoard(log_dir=str(sub)),
            keras.callbacks.CSVLogger(str(sub / "history.csv"), append=True),
        ],
    )


def _accumulator(folder: Path):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def _points(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """`{tag: [(step, value), ...]}` as TensorBoard's EventAccumulator reads `folder`.

    Scalars come back as floats; the model's config (`keras` tag, step 0) as bytes.
    """
    import tensorflow as tf

    def value(ev):
        array = tf.make_ndarray(ev.tensor_proto)
        return float(array) if array.dtype.kind == "f" else array.tolist()  # the model's config: text

    acc = _accumulator(folder)
    return {tag: [(ev.step, value(ev)) for ev in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}


def _steps(folder: Path, tag: str = "epoch_loss") -> list[int]:
    return [step for step, _ in _points(folder)[tag]]


def _epochs(sub: Path) -> list[int]:
    lines = (sub / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,")
    assert not any(line.startswith("epoch,") for line in lines[1:])
    return [int(line.split(",")[0]) for line in lines[1:]]


def _event_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("events.out.tfevents.*"))


def _records(path: Path) -> list[bytes]:
    """Every record of an event file; raises on a torn or corrupt one."""
    import tensorflow as tf

    return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root`: its bytes and inode (a rewritten file gets a new inode)."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_ino)
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A fit folder logged by a real 4-epoch fit (train/, validation/, history.csv)."""
    sub = tmp_path_factory.mktemp("pristine") / "fit"
    sub.mkdir()
    _fit(_model(), sub, epochs=4)
    return sub


@pytest.fixture
def sub(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the pristine fit folder."""
    path = tmp_path / "fit"
    shutil.copytree(pristine, path)
    return path


# --- tests -------------------------------------------------------------------


def test_pristine_fit_logs_every_epoch(sub: Path):
    assert _epochs(sub) == [0, 1, 2, 3]
    for run in ("train", "validation"):
        assert len(_event_files(sub / run)) == 1
        assert _steps(sub / run) == [0, 1, 2, 3]


def test_truncate_drops_epochs_and_resume_logs_each_once(sub: Path):
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorflow.core.util import event_pb2

    before = {run: _points(sub / run) for run in ("train", "validation")}
    csv_before = (sub / "history.csv").read_text().splitlines()

    fitlogs.truncate(sub, 2)

    assert _epochs(sub) == [0, 1]
    assert (sub / "history.csv").read_text().splitlines() == csv_before[:3]
    for run in ("train", "validation"):
        files = _event_files(sub / run)
        assert len(files) == 1  # rewritten under its own name, no stray temporary file
        assert sorted(p.name for p in (sub / run).iterdir()) == [files[0].name]
        first = event_pb2.Event.FromString(_records(files[0])[0])
        assert first.file_version.startswith("brain.Event:")  # non-summary events kept
        points = _points(sub / run)
        assert _steps(sub / run) == [0, 1]
        # Every tag is cut to epochs 0 and 1, values unchanged: epoch_* (step =
        # epoch), the model's config (step 0), and evaluation_*_vs_iterations
        # (step = optimizer iterations: 4 and 8 at 4 batches an epoch).
        assert set(points) == set(before[run])
        for tag, rows in points.items():
            assert rows == before[run][tag][:2]
    assert [step for step, _ in _points(sub / "validation")["evaluation_loss_vs_iterations"]] == [4, 8]

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(sub))
    mux.Reload()
    assert set(mux.Runs()) == {"train", "validation"}
    for run in ("train", "validation"):
        assert [ev.step for ev in mux.Tensors(run, "epoch_loss")] == [0, 1]

    # Resume: a new writer's file must sort after the old one (whole seconds in its name).
    stamp = int(_event_files(sub / "train")[0].name.split(".")[3])
    while int(time.time()) <= stamp:
        time.sleep(0.05)
    # The resumed fit starts from the state after epoch 2 (weights and optimizer
    # iterations): the same seeded model, trained 2 epochs without loggers.
    model = _model()
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    _fit(model, sub, epochs=4, initial_epoch=2)

    assert _epochs(sub) == [0, 1, 2, 3]
    for run in ("train", "validation"):
        assert len(_event_files(sub / run)) == 2
        points = _points(sub / run)
        assert [step for step, _ in points["epoch_loss"]] == [0, 1, 2, 3]
        assert points["epoch_loss"][:2] == before[run]["epoch_loss"][:2]
        # The whole curve is the uninterrupted fit's.
        for tag in ("epoch_loss", "epoch_mae"):
            assert [s for s, _ in points[tag]] == [s for s, _ in before[run][tag]]
            np.testing.assert_allclose([v for _, v in points[tag]], [v for _, v in before[run][tag]], rtol=1e-5)
    evaluation = _points(sub / "validation")["evaluation_loss_vs_iterations"]
    assert [step for step, _ in evaluation] == [4, 8, 12, 16]
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(sub))
    mux.Reload()
    assert set(mux.Runs()) == {"train", "validation"}
    for run in ("train", "validation"):
        assert [ev.step for ev in mux.Tensors(run, "epoch_loss")] == [0, 1, 2, 3]


def test_truncate_to_zero_keeps_header_and_file_version(sub: Path):
    fitlogs.truncate(sub, 0)
    assert _epochs(sub) == []
    for run in ("train", "validation"):
        assert _points(sub / run) == {}
        assert len(_records(_event_files(sub / run)[0])) >= 1


def test_torn_history_line(sub: Path):
    path = sub / "history.csv"
    data = path.read_bytes()
    path.write_bytes(data[:-4])  # the kill came mid-row of epoch 3
    fitlogs.truncate(sub, 4)
    assert _epochs(sub) == [0, 1, 2]
    assert path.read_bytes().endswith(b"\n")
    assert data.startswith(path.read_bytes())

    path.write_bytes(data[:-4])
    fitlogs.truncate(sub, 2)
    assert _epochs(sub) == [0, 1]


def test_torn_event_file(sub: Path):
    (path,) = _event_files(sub / "validation")
    records = _records(path)
    path.write_bytes(path.read_bytes()[:-3])  # the kill came mid-record
    with pytest.raises(Exception, match="(?i)truncated|corrupt|data ?loss"):
        _records(path)

    fitlogs.truncate(sub, 4)  # no epoch to drop, but the torn record goes
    assert _records(path) == records[:-1]

    fitlogs.truncate(sub, 2)
    assert _steps(sub / "train") == [0, 1]
    assert _steps(sub / "validation") == [0, 1]


def test_evaluation_points_of_an_unlogged_epoch(sub: Path):
    """Killed between validation's end and the epoch's end: evaluation_*_vs_iterations
    at step 16 was written, epoch 3's epoch_* points were not."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    (path,) = _event_files(sub / "validation")
    records = _records(path)
    tags = [[v.tag for v in event_pb2.Event.FromString(r).summary.value] for r in records]
    assert tags[-4:] == [["evaluation_loss_vs_iterations"], ["evaluation_mae_vs_iterations"],
                         ["epoch_loss"], ["epoch_mae"]]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for raw in records[:-2]:
            writer.write(raw)

    fitlogs.truncate(sub, 3)

    assert _records(path) == records[:-4]
    points = _points(sub / "validation")
    assert [s for s, _ in points["evaluation_loss_vs_iterations"]] == [4, 8, 12]
    assert [s for s, _ in points["epoch_loss"]] == [0, 1, 2]


def test_named_fit_and_other_folders_untouched(sub: Path, pristine: Path):
    shutil.copytree(pristine, sub / "other")  # a named fit: other/history.csv, other/train, ...
    for name in ("backup", "models", "plots"):  # plots/: an older run's figures and text
        (sub / name).mkdir()
        shutil.copy(_event_files(pristine / "train")[0], sub / name)
    kept = {name: _snapshot(sub / name) for name in ("other", "backup", "models", "plots")}

    fitlogs.truncate(sub, 2)

    assert _epochs(sub) == [0, 1]
    assert _steps(sub / "train") == [0, 1]
    assert _steps(sub / "validation") == [0, 1]
    for name, snapshot in kept.items():
        assert _snapshot(sub / name) == snapshot, name
    assert _steps(sub / "other" / "train") == [0, 1, 2, 3]
    assert _epochs(sub / "other") == [0, 1, 2, 3]


@pytest.mark.parametrize("epochs_done", [4, 10])
def test_nothing_to_drop_leaves_files_untouched(sub: Path, epochs_done: int):
    snapshot = _snapshot(sub)
    fitlogs.truncate(sub, epochs_done)
    assert _snapshot(sub) == snapshot


def test_missing_files(tmp_path: Path):
    fitlogs.truncate(tmp_path / "absent", 1)  # no folder at all
    (tmp_path / "empty" / "train").mkdir(parents=True)
    fitlogs.truncate(tmp_path / "empty", 1)  # no history.csv, no event files
    assert list((tmp_path / "empty").rglob("*")) == [tmp_path / "empty" / "train"]


def test_negative_epochs_done(tmp_path: Path):
    with pytest.raises(ValueError):
        fitlogs.truncate(tmp_path, -1)


def test_module_imports_without_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys; import kexp.store.fitlogs; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
