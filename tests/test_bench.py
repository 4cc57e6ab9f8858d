"""`kexp bench`: the figures it reports and the errors it gives (speed targets live in the README, not here).

Each command runs in this process (`run_cli_here`): a bench uses the default strategy, so the two logical
CPU devices this process has do not change it, and no command here needs a fresh process (the sweep starts
its own for its replica rows).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli_here

from kexp.errors import UsageError


def test_bench_json_reports_harness_bf16_baseline_bare_and_loss_agreement_and_no_limit_leaves_the_limit_out():
    """`--no-limit` also skips the limit's two matmul timings here (the dcgan and lstm tests check the limit)."""
    proc = run_cli_here("bench", "xor", "--json", "--repeats", "2", "--epochs", "2", "--no-limit", "--bf16", "on")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    for key in ("harness_examples_per_s", "baseline_examples_per_s", "bare_examples_per_s", "peak_rss_mb"):
        assert result[key] > 0
    runs = result["repeat_examples_per_s"]
    assert len(runs["harness"]) == len(runs["baseline"]) == len(runs["bare"]) == 2
    # The ratio is the median of the per-repeat (back-to-back) ratios.
    assert result["ratio"] == pytest.approx(np.median(np.array(runs["harness"]) / np.array(runs["baseline"])))
    assert result["ratio_of_medians"] == pytest.approx(
        result["harness_examples_per_s"] / result["baseline_examples_per_s"])
    assert sorted(result["harness_spread"]) == sorted(runs["harness"])  # min and max of the two repeats
    # --bf16 on: a harness fit under mixed_bfloat16 after each float32 one, paired with it and the baseline.
    assert result["bf16"].startswith("run: --bf16 on") and result["bf16_examples_per_s"] > 0
    bf16 = np.array(result["bf16_repeat_examples_per_s"])
    assert len(bf16) == 2 and sorted(result["bf16_spread"]) == sorted(bf16)
    assert result["bf16_over_float32"] == pytest.approx(np.median(bf16 / np.array(runs["harness"])))
    assert result["bf16_over_baseline"] == pytest.approx(np.median(bf16 / np.array(runs["baseline"])))
    assert result["examples"] == 256 and result["repeats"] == 2
    # 256 examples / batch 16 = 16 steps: automatic steps_per_execution takes the whole epoch.
    assert result["harness_steps_per_execution"] == 16 and result["harness_jit_compile"] is False
    # 16 full batches: the epoch's steps run fused in one loop.
    assert result["harness_fused_steps"] is True
    # Without shuffling, the harness (fused) trains exactly like plain model.fit.
    assert len(result["harness_losses"]) == len(result["baseline_losses"]) == 2
    assert result["max_loss_rel_diff"] < 1e-5
    # --no-limit: neither the FLOP count nor the matmul rate nor any method's share of the limit.
    assert not [key for key in result if key.startswith(("train_flops", "matmul_", "flop_bound"))
                or key.endswith("_fraction_of_bound")]


def test_bench_runs_the_bf16_row_by_default_only_where_the_cpu_has_native_bfloat16():
    from kexp.cli import bench
    from kexp.engine.precision import native_bf16

    native = native_bf16()
    assert bench._bf16_why(None) == (f"run: the CPU has {' and '.join(native)}" if native else
                                     "not run: the CPU has neither avx512_bf16 nor amx_bf16 (oneDNN would emulate "
                                     "bfloat16: the lstm case trained 0.8-0.9x as fast as in float32 on such a CPU); "
                                     "--bf16 on runs it")
    assert bench._bf16_why(False) == "not run: --bf16 off"
    assert bench._bf16_why(None, precision_set=True) == ("not run: --set train.precision gives the harness row its "
                                                         "precision")
    with pytest.raises(UsageError, match=r"^bench: --bf16 on with --set train.precision: .*allowed: one of the two$"):
        bench._bf16_why(True, precision_set=True)
    proc = run_cli_here("bench", "xor", "--repeats", "1", "--epochs", "2", "--no-limit", "--no-compare",
                        "--bf16", "off")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bf16    : not run: --bf16 off" in proc.stdout.splitlines()


def test_bench_dcgan_runs_the_gans_own_step_three_ways_and_names_its_top_ops():
    proc = run_cli_here("bench", "dcgan", "--json", "--repeats", "1", "--epochs", "2", "--examples", "64", "--profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    # 64 images, batch 32: 2 steps an epoch, one fused call.
    assert result["examples"] == 64
    assert result["harness_steps_per_execution"] == 2 and result["harness_fused_steps"] is True
    for method in ("harness", "baseline", "bare"):
        assert result[f"{method}_examples_per_s"] > 0
        assert result[f"{method}_fraction_of_bound"] == pytest.approx(
            result[f"{method}_examples_per_s"] / result["flop_bound_examples_per_s"])
    # d_loss then g_loss per epoch; fused GAN steps train as plain fit's do.
    assert len(result["harness_losses"]) == len(result["baseline_losses"]) == 4
    assert result["max_loss_rel_diff"] < 1e-5
    # dcgan_digits' nets (G 6.50M, D 1.12M forward FLOPs) and update, one D step per G step, the G step on
    # the D step's generated batch: (G + 6D) + (2G + 2D).
    assert result["train_flops_per_example"] == 3 * 6_504_448 + 8 * 1_116_160
    assert result["matmul_gflop_s"] > 1
    assert result["flop_bound_examples_per_s"] == pytest.approx(
        result["matmul_gflop_s"] * 1e9 / result["train_flops_per_example"])
    # A real trace, read back: the convolutions' kernels are among the op types that took the time.
    ops = [op["op"] for op in result["top_ops"]]
    assert len(ops) == 8 and not any(op.strip().startswith("__") for op in ops)
    assert any("Conv2D" in op for op in ops), ops
    assert sum(op["share"] for op in result["top_ops"]) <= 1 + 1e-9


def test_bench_lstm_is_lstm_sines_forecaster_at_the_seeds_size_and_set_changes_the_harness_settings_only():
    """One harness-only bench answers both: `--set` must leave the case (data, batch, model) as it is."""
    proc = run_cli_here("bench", "lstm", "--json", "--repeats", "1", "--epochs", "2", "--examples", "64",
                        "--no-compare", "--set", "train.fuse_steps=false", "--set", "train.steps_per_execution=8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["examples"] == 64 and result["batch_size"] == 32
    # LSTM(256) on 80 steps of 32 samples, Dense(32) per step: 304,160 parameters, all in matmuls.
    assert result["harness_params"] == 304_160
    assert result["train_flops_per_example"] == 3 * 2 * 80 * (4 * 256 * (32 + 256) + 256 * 32)
    assert "baseline_examples_per_s" not in result and result["harness_fraction_of_bound"] > 0
    # --set: not fused, and 8 steps a call where the harness would pick the whole (2-step) epoch.
    assert result["harness_fused_steps"] is False
    assert result["harness_steps_per_execution"] == 8
    assert result["harness_examples_per_s"] > 0


@pytest.mark.parametrize("args, message", [
    (["bench", "resnet152"], "bench: unknown case 'resnet152'; allowed: fnn, heart_mlp, xor, lstm, dcgan"),
    (["bench", "xor", "--set", "train.batch_size=4"],
     "bench --set 'train.batch_size=4': train.batch_size is fixed by the case for all three methods; "
     "settable: train.* except epochs, batch_size, learning_rate, shuffle"),
    (["bench", "xor", "--set", "model.units=4"], "unknown section 'model' in --set 'model.units=4'; valid sections: train"),
    (["bench", "--sweep", "--set", "train.fuse_steps=false"], "bench: --set applies to a case, not to --sweep"),
    (["bench", "--sweep", "--profile"], "bench: --profile applies to a case, not to --sweep"),
    (["bench", "--sweep", "--no-limit"], "bench: --no-limit applies to a case, not to --sweep"),
    (["bench"], "bench: give a case (fnn, heart_mlp, xor, lstm, dcgan) or --sweep, not both or neither"),
    (["bench", "xor", "--repeats", "0"], "kexp bench: argument --repeats: received 0; allowed: an integer >= 1"),
])
def test_bench_bad_input_exits_2(args, message):
    proc = run_cli_here(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"kexp: error: {message}"]


@pytest.mark.slow
def test_sweep_writes_its_report_with_one_and_two_replicas(tmp_path: Path):
    # 1,024 examples: the largest swept batch (1,024) is one full batch; two replicas still take five of 200.
    proc = run_cli_here("bench", "--sweep", "--json", "--examples", "1024", "--logdir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = json.loads(proc.stdout)
    run_dir = Path(sweep["run_dir"])
    assert run_dir.parent == tmp_path / "bench_sweep"
    assert json.loads((run_dir / "sweep.json").read_text())["batch_size"] == sweep["batch_size"]
    assert (run_dir / "sweep.png").stat().st_size > 10_000
    assert [r["batch_size"] for r in sweep["batch_size"]] == [32, 100, 256, 1024]
    assert [r["harness_num_replicas"] for r in sweep["replicas"]] == [1, 2]
    assert sweep["replicas"][1]["harness_global_batch_size"] == 200
    calls = [r["model_calls"] for r in sweep["rollout"]]
    assert calls == sorted(calls) and calls[-1] > 10 * calls[0]


def test_the_rollout_timing_case_is_lstm_sines_default_model():
    from kexp import registry
    from kexp.cli.scaling import RolloutCase

    config = registry.load("lstm_sine").CONFIG
    assert RolloutCase() == RolloutCase(feature_length=config.data.feature_length, interval=config.data.interval,
                                        seq_length=config.data.seq_length, units=config.model.units)
