"""Internal: the lines `kexp bench CASE` prints for a result of `kexp.cli.bench.run_bench` (`--json` prints the dict)."""

from __future__ import annotations

from typing import Any


def format_result(result: dict[str, Any]) -> list[str]:
    """Returns the human-readable lines for one benchmark result."""
    lines = [
        f"case: {result['case']}  ({result['examples']} examples, batch {result['batch_size']}, "
        f"{result['epochs']} epochs x {result['repeats']} repeats, first epoch excluded)",
        f"harness : {result['harness_examples_per_s']:>10.0f} examples/s  "
        f"(spread {result['harness_spread'][0]:.0f}-{result['harness_spread'][1]:.0f}; "
        f"{result['harness_steps_per_s']:.0f} steps/s; steps_per_execution={result['harness_steps_per_execution']}, "
        f"jit_compile={result['harness_jit_compile']}, fused_steps={result['harness_fused_steps']}, "
        f"replicas={result['harness_num_replicas']})",
    ]
    lines.append(_bf16_line(result))
    if "baseline_examples_per_s" in result:
        lines += [
            f"baseline: {result['baseline_examples_per_s']:>10.0f} examples/s  (plain model.fit, Keras defaults)",
            f"bare    : {result['bare_examples_per_s']:>10.0f} examples/s  (compiled tf.function step per batch)",
            f"ratio harness/baseline: {result['ratio']:.2f}x (median of back-to-back repeats; "
            f"of the medians: {result['ratio_of_medians']:.2f}x)   bare/harness: {result['bare_over_harness']:.2f}x",
            f"loss curves max relative difference: {result['max_loss_rel_diff']:.1e}",
        ]
    if "flop_bound_examples_per_s" in result:
        lines.append(
            f"limit   : {result['flop_bound_examples_per_s']:>10.0f} examples/s  "
            f"({result['train_flops_per_example'] / 1e6:.3g} MFLOP to train on an example, at this process's "
            f"float32 matmul rate of {result['matmul_gflop_s']:.0f} GFLOP/s)")
        lines.append("of the limit: " + ", ".join(
            f"{method} {_percent(result[f'{method}_fraction_of_bound'])}" for method in ("harness", "baseline", "bare")
            if f"{method}_fraction_of_bound" in result))
    if "top_ops" in result:
        lines.append("top ops of one harness epoch (CPU time of all threads, by op type):")
        lines += [f"  {op['share']:6.1%}  {op['ms']:8.1f} ms  {op['op']}  (longest: {_short(op['longest'])})"
                  for op in result["top_ops"]]
    lines.append(f"peak_rss_mb: {result['peak_rss_mb']:.0f}")
    return lines


def _bf16_line(result: dict[str, Any]) -> str:
    """Returns the bfloat16 row: the harness under mixed_bfloat16 against float32, or why it did not run."""
    if "bf16_examples_per_s" not in result:
        return f"bf16    : {result['bf16']}"
    against_baseline = (f", {result['bf16_over_baseline']:.2f}x the baseline"
                        if "bf16_over_baseline" in result else "")
    low, high = result["bf16_spread"]
    return (f"bf16    : {result['bf16_examples_per_s']:>10.0f} examples/s  (harness, train.precision=mixed_bfloat16, "
            f"spread {low:.0f}-{high:.0f}; {result['bf16_over_float32']:.2f}x the float32 harness{against_baseline}; "
            f"run for {result['bf16'].removeprefix('run: ')}; losses not compared)")


def _percent(fraction: float) -> str:
    """Returns a fraction as a percentage, with two significant digits below 1% (tiny models: 0.0013%)."""
    return f"{100 * fraction:.1f}%" if fraction >= 0.01 else f"{100 * fraction:.2g}%"


def _short(op_path: str) -> str:
    """Returns the last layer-level parts of a traced op's path (inside the fused loop's scopes)."""
    return "/".join(op_path.split("/")[-3:])
