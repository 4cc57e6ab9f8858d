"""Image data: bundled digits split, tensorflow-datasets through mock_data, and absent data."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli_here

import kexp
from kexp.data import images
from kexp.errors import UsageError


def test_digits_split_is_seeded_stratified_and_scaled():
    a = images.load("digits", test_fraction=0.2, seed=0)
    b = images.load("digits", test_fraction=0.2, seed=0)
    assert a.x_train.shape == (1437, 8, 8, 1) and a.x_test.shape == (360, 8, 8, 1)
    assert a.x_train.dtype == np.float32 and 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert np.bincount(a.y_test).min() >= 35  # stratified: every digit ~36 times
    assert images.resize(a.x_test[:3], 32).shape == (3, 32, 32, 1)


# scikit-learn 1.9.1's `train_test_split(range(1797), labels, test_size=0.2, random_state=SEED, stratify=labels)`
# on its digits: the first six train and test indices, and sum(i * train[i]) over the whole train split. kexp's
# own split (no scikit-learn) must give the same examples in the same order, or every digits figure would move.
SKLEARN_SPLITS = {
    0: ([1346, 295, 257, 385, 1640, 849], [1496, 188, 705, 820, 413, 744], 916564313),
    1: ([928, 1514, 1670, 1192, 293, 1331], [1403, 1354, 1702, 274, 1656, 548], 917711010),
    2: ([1374, 550, 1607, 1648, 1434, 1544], [1631, 208, 517, 758, 741, 570], 908516988),
}


@pytest.mark.parametrize("seed", sorted(SKLEARN_SPLITS))
def test_digits_split_is_scikit_learns_index_for_index(seed):
    from kexp.data.digits import load_digits, stratified_split

    pixels, labels = load_digits()
    assert pixels.shape == (1797, 8, 8) and pixels.max() == 16 and np.bincount(labels).tolist()[:3] == [178, 182, 177]
    train, test = stratified_split(labels, 0.2, seed)
    first_train, first_test, weighted_sum = SKLEARN_SPLITS[seed]
    assert train[:6].tolist() == first_train and test[:6].tolist() == first_test
    assert int((train * np.arange(len(train))).sum()) == weighted_sum
    assert sorted([*train, *test]) == list(range(1797))


@pytest.mark.parametrize("fraction", [0.005, 0.0050083, 0.9945, float("nan"), float("inf")])
def test_a_digits_test_fraction_that_leaves_a_class_out_of_a_split_is_refused(fraction):
    with pytest.raises(UsageError, match=rf"data.test_fraction: received {fraction}; allowed: .*0.005008347245 < "
                                         r"share <= 0.9944351697"):
        images.load("digits", test_fraction=fraction, seed=0)


def _prepare_metadata(name: str, data_dir: Path) -> None:
    """Writes the data set's real metadata, as a prepared folder has it; records stay mocked."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=str(data_dir))
    Path(builder.data_dir).mkdir(parents=True)
    builder.info.write_to_directory(builder.data_dir)


def test_tfds_path_loads_fashion_mnist_with_mock_data(tmp_path: Path, logdir):
    import tensorflow_datasets as tfds

    _prepare_metadata("fashion_mnist", tmp_path)
    with tfds.testing.mock_data(num_examples=64, data_dir=str(tmp_path)):
        data = images.load("fashion_mnist", data_dir=str(tmp_path))
        assert data.x_train.shape == (64, 28, 28, 1) and data.x_test.shape == (64, 28, 28, 1)
        assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
        assert data.class_names[0] == "T-shirt/top" and data.num_classes == 10
        results = kexp.run("softmax", ["data.name=fashion_mnist", f"data.data_dir={tmp_path}", "train.epochs=1"],
                           logdir=logdir, verbose=0)
    assert results["status"] == "ok"
    assert results["config"]["data"]["name"] == "fashion_mnist"
    # Trained on all 64 mock images, and every one of the 64 test images was scored.
    assert results["fits"]["model"]["train_examples"] == 64
    correct = results["metrics"]["test_accuracy"] * 64
    assert correct == pytest.approx(round(correct), abs=1e-4)


def test_absent_tfds_data_is_a_usage_error_naming_the_fix(tmp_path: Path):
    with pytest.raises(UsageError) as info:
        images.load("mnist", data_dir=str(tmp_path))
    text = str(info.value)
    assert text.startswith(f"data.name=mnist: not prepared under {tmp_path}")
    assert "--set data.data_dir=DIR" in text and "tfds.load('mnist'" in text


def test_cli_exits_2_fast_when_dataset_is_unavailable(tmp_path: Path, logdir):
    started = time.monotonic()
    proc = run_cli_here("run", "lenet", "--set", "data.name=cifar10", "--set", f"data.data_dir={tmp_path}",
                   "--logdir", str(logdir))
    assert proc.returncode == 2, proc.stderr
    assert time.monotonic() - started < 60  # no hang on the network
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("kexp: error: data.name=cifar10: not prepared under")
    assert [p for p in logdir.rglob("*") if p.is_file()] == []


def test_a_sweep_point_whose_test_fraction_leaves_a_digit_out_is_refused_before_anything_runs(logdir):
    proc = run_cli_here("sweep", "softmax", "--grid", "data.test_fraction=0.2,0.001", "--set", "train.epochs=1",
                        "--logdir", str(logdir))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("kexp: error: data.test_fraction: received 0.001; allowed: a value "
                                                    ">= 0.0051 and <= 0.9944")
    assert not any(logdir.iterdir())
