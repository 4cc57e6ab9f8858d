"""lstm_sine: the seed's windowing, the rollout, and the quality bar end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import bars_tier, read_events, run_cli, run_cli_here

from kexp import quality, registry
from kexp.data import windows
from kexp.study.forecast import rollout


def test_windows_follow_the_seed_construction():
    values = np.arange(100, dtype="float32")
    inputs, targets = windows.sequences(values, feature_length=8, seq_length=5, stride=3)
    assert inputs.shape == targets.shape == (len(range(0, 100 - 28 + 1, 3)), 5, 8)  # 6 steps span 28 samples
    # A step is 8 consecutive samples; steps overlap by half a window.
    np.testing.assert_array_equal(inputs[0, 0], np.arange(8))
    np.testing.assert_array_equal(inputs[0, 1], np.arange(4, 12))
    # The target is the input shifted forward by half a window.
    np.testing.assert_array_equal(targets[0, 0], np.arange(4, 12))
    np.testing.assert_array_equal(targets[0, -1], np.arange(20, 28))
    # Sequences start `stride` samples apart.
    np.testing.assert_array_equal(inputs[1, 0], np.arange(3, 11))


def test_windows_reject_a_series_too_short():
    with pytest.raises(ValueError, match="series of 20 samples is too short"):
        windows.sequences(np.zeros(20), feature_length=8, seq_length=5)


def test_x_values_must_stay_resolved_in_float64_up_to_the_limit_and_no_further():
    from kexp.config import apply_overrides
    from kexp.errors import ConfigError

    module = registry.load("lstm_sine")
    # At interval 0.1 float64 steps fit 1024 times into the spacing below 2**39; the rollout reaches start + horizon.
    limit = 2.0**39
    last_start = limit - module.CONFIG.eval.horizon - 1
    assert apply_overrides(module.CONFIG, [f"eval.start={last_start!r}"]).eval.start == last_start
    with pytest.raises(ConfigError, match=r"^eval\.start: received .*; allowed: sample x values below 5\.498e\+11"):
        apply_overrides(module.CONFIG, [f"eval.start={limit!r}"])
    wide = f"data.val_range={limit - 1000!r},{limit + 1000!r}"
    with pytest.raises(ConfigError, match=r"^data\.val_range: received .*; allowed: sample x values below"):
        apply_overrides(module.CONFIG, [wide])
    # A coarser interval resolves larger x (the test range widened to hold one sequence at that interval).
    coarse = apply_overrides(module.CONFIG, ["data.interval=0.25", "data.test_range=140,240", wide])
    assert coarse.data.val_range[0] == limit - 1000


def test_rollout_feeds_predictions_back():
    # A Dense layer with identity kernel and bias 4 maps a window of a unit
    # ramp to the next half-shifted window exactly. Rolling out a ramp must
    # then continue the ramp: each new half window came from a prediction.
    import keras

    ramp_model = keras.Sequential([
        keras.Input((None, 8)),
        keras.layers.Dense(8, kernel_initializer="identity", bias_initializer=keras.initializers.Constant(4.0)),
    ])
    history = np.arange(40, dtype="float32")
    out = rollout(ramp_model, history, num_points=10, feature_length=8, seq_length=3)
    np.testing.assert_allclose(out, np.arange(40, 50, dtype="float32"))


@bars_tier("lstm_sine")
def test_lstm_sine_default_run_meets_quality_bar(tmp_path: Path):
    proc = run_cli("run", "lstm_sine", "--logdir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bar_line = next(line for line in proc.stdout.splitlines() if line.startswith("quality bar: "))
    assert bar_line == "quality bar: met (rollout_mse ≤ 1e-3, test_mse ≤ 1e-3)"
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("run_dir: ")
    run_dir = Path(last.removeprefix("run_dir: "))
    assert run_dir.parent == tmp_path / "lstm_sine"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert results["experiment"] == "lstm_sine"
    assert quality.failures(registry.load("lstm_sine").EXPECTED, results["metrics"]) == []
    assert "rollout_mse: " in proc.stdout and "test_mse: " in proc.stdout
    assert json.loads((run_dir / "config.json").read_text()) == results["config"]
    assert results["config"]["data"]["feature_length"] == 32
    epochs = results["config"]["train"]["epochs"]
    train = read_events(run_dir / "train")
    validation = read_events(run_dir / "validation")
    assert len(train["epoch_loss"]) == epochs and len(validation["epoch_loss"]) == epochs
    assert train["epoch_loss"][-1][1] < train["epoch_loss"][0][1] / 10
    assert "forecast" in read_events(run_dir)
    assert (run_dir / "forecast.png").stat().st_size > 10_000


def test_sin_x_pow_variant_runs_under_mirrored(tmp_path: Path):
    proc = run_cli_here(
        "run", "lstm_sine", "--logdir", str(tmp_path), "--strategy", "mirrored",
        "--set", "data.function=sin_x_pow", "--set", "train.epochs=2", "--set", "model.units=8",
        env={"KEXP_CPU_DEVICES": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1].removeprefix("run_dir: "))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["num_replicas"] == 2
    assert results["config"]["data"]["function"] == "sin_x_pow"
    assert np.isfinite(results["metrics"]["rollout_mse"])
