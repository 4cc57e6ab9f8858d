"""Internal: throughput benchmarks: the harness against Keras' defaults and a bare tf.function loop.

`kexp bench CASE` trains the same model on the same data three ways, in one
process, and reports steady-state examples/s (first epoch of every fit, which
includes tracing and compilation, left out; median and spread over repeats):

- harness: `kexp.open_run(...).fit` with its defaults (cached, prefetched
  tf.data, automatic `steps_per_execution`, fused steps, `jit_compile=auto`, and all its
  callbacks: TensorBoard, the per-epoch state file, CSV history, TerminateOnNaN,
  the stop-on-signal check);
- baseline: a plain `model.fit(x, y)` at Keras defaults (steps_per_execution 1,
  no XLA, NumPy arrays passed directly);
- bare: a compiled `tf.function` training step called once per batch from Python
  (for a GAN, its own `train_step`).

It also checks that faster is not different: with shuffling off in both, the
harness's per-epoch losses must match the baseline's to float tolerance. And
it puts each figure against the machine's limit (`kexp.cli.flops`): the model's
training FLOPs per example over a large float32 matmul's rate in the same
process is the most examples/s the machine could train. `profile=True`
traces one harness epoch and names the op types that took the time
(`kexp.cli.profiling`). `kexp.cli.bench_report` writes a result's lines.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import statistics
import tempfile
from typing import Any, Callable

import numpy as np

from kexp.cli import bench_methods

CASES = ("fnn", "heart_mlp", "xor", "lstm", "dcgan")
# Training settings a case fixes for all three methods alike; `--set` may not change them.
BENCH_OWN_KEYS = ("epochs", "batch_size", "learning_rate", "shuffle")


@dataclasses.dataclass
class Case:
    """One benchmark: a model builder, its data and its training settings.

    `build` makes the harness's model; `plain_build`, when given, the model
    the baseline and the bare loop train: the same net in plain Keras' layers
    (`lstm`: `keras.layers.LSTM` where the harness has kexp's).
    """

    name: str
    build: Callable[[], Any]
    x: np.ndarray
    y: np.ndarray | None  # None for a GAN: it trains on `x` alone
    loss: Any
    batch_size: int
    learning_rate: float
    plain_build: Callable[[], Any] | None = None

    def build_plain(self) -> Any:
        """Returns the model of the baseline and the bare loop."""
        return (self.plain_build or self.build)()

    @property
    def data(self) -> tuple[np.ndarray, ...]:
        """What `fit` takes."""
        return (self.x,) if self.y is None else (self.x, self.y)

    def compile(self, model: Any, **options: Any) -> None:
        """Compiles `model` with Adam at the case's learning rate (a GAN: one for each net)."""
        import keras

        if self.y is None:
            model.compile(d_optimizer=keras.optimizers.Adam(self.learning_rate),
                          g_optimizer=keras.optimizers.Adam(self.learning_rate), **options)
        else:
            model.compile(keras.optimizers.Adam(self.learning_rate), self.loss, **options)


def make_case(name: str, *, examples: int | None = None, width: int = 500, batch_size: int | None = None) -> Case:
    """Returns a benchmark case.

    Args:
        name: `fnn` (tutorial 000's 784-500-10 net on Fashion-MNIST-shaped data),
            `heart_mlp` or `xor` (the tiny models of those experiments),
            `lstm` (lstm_sine's forecaster at the tutorial's LSTM(256) and 80
            steps of 32 samples) or `dcgan` (dcgan_digits' GAN on 16x16 images).
        examples: Training examples (defaults: 60,000 / 20,000 / 256 / 1,024 / 1,437).
        width: Hidden width of `fnn`.
        batch_size: Overrides the case's batch size.

    Returns:
        The case.
    """
    case = _make_case(name, examples, width)
    if batch_size:
        case.batch_size = batch_size
    return case


def _make_case(name: str, examples: int | None, width: int) -> Case:
    import keras

    from kexp.data.functions import heart
    from kexp.models import GAN, dcgan_discriminator, dcgan_generator, mlp, rnn

    rng = np.random.default_rng(0)
    if name == "fnn":
        n = examples or 60_000
        x = rng.random((n, 784), dtype=np.float32)
        # Labels from a fixed random linear teacher: learnable, so loss curves move.
        teacher = rng.normal(size=(784, 10)).astype("float32")
        y = np.argmax((x - 0.5) @ teacher, axis=1).astype("int32")
        return Case(name, lambda: mlp((784,), 10, hidden=(width,), name="fnn"), x, y,
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True), 100, 1e-3)
    if name == "heart_mlp":
        n = examples or 20_000
        x = rng.uniform(-1.75, 1.75, size=(n, 2)).astype("float32")
        y = heart(x[:, 0], x[:, 1])[:, None].astype("float32")
        return Case(name, lambda: mlp((2,), 1, hidden=(64, 64, 64), activation="tanh", name="heart"), x, y,
                    "mse", 64, 3e-3)
    if name == "xor":
        n = examples or 256
        points = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype="float32")
        x = np.tile(points, (math.ceil(n / 4), 1))[:n]
        y = (x[:, :1] != x[:, 1:]).astype("float32")
        return Case(name, lambda: mlp((2,), 1, hidden=(8,), activation="tanh", output_activation="sigmoid",
                                      name="xor"), x, y, "binary_crossentropy", 16, 0.05)
    if name == "lstm":
        from kexp.data import functions, windows

        # lstm_sine's windows (interval 0.1, steps overlapping by half) at the tutorial's sizes.
        n, feature_length, seq_length = examples or 1_024, 32, 80
        values = functions.sin(0.1 * np.arange(windows.span(feature_length, seq_length + 1) + n - 1))
        x, y = windows.sequences(values, feature_length, seq_length, 1)
        # The harness trains kexp's LSTM (the builders' `lstm`); the baseline and the bare loop Keras' own.
        return Case(name, lambda: rnn((seq_length, feature_length), feature_length, cell="lstm", units=(256,),
                                      name="lstm_forecaster"), x[:n], y[:n], "mse", 32, 1e-3,
                    lambda: rnn((seq_length, feature_length), feature_length, cell="keras_lstm", units=(256,),
                                name="lstm_forecaster"))
    if name == "dcgan":
        # dcgan_digits' nets and batch; the digits' count, as images in [-1, 1] (the speed does not look at them).
        n = examples or 1_437
        x = rng.uniform(-1, 1, size=(n, 16, 16, 1)).astype("float32")
        return Case(name, lambda: GAN(dcgan_generator(16, 1, noise_dim=32, base_filters=32),
                                      dcgan_discriminator(16, 1, base_filters=32), reuse_fake_batch=True,
                                      name="dcgan"),
                    x, None, None, 32, 2e-4)
    from kexp.errors import UsageError

    raise UsageError(f"unknown benchmark {name!r}; allowed: {', '.join(CASES)}")


def peak_rss_mb() -> float:
    """Returns this process's peak resident memory in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_bench(
    name: str, *, repeats: int = 3, epochs: int = 3, strategy: str = "default", examples: int | None = None,
    width: int = 500, batch_size: int | None = None, compare: bool = True, train_settings: dict[str, Any] | None = None,
    profile: bool = False, limit: bool = True, bf16: bool | None = None,
) -> dict[str, Any]:
    """Benchmarks one case and returns the figures.

    Args:
        name: One of `CASES`.
        repeats: Independent fits per method; median and spread are reported.
        epochs: Epochs per fit (the first is excluded from throughput).
        strategy: Harness strategy (`mirrored` with `KEXP_CPU_DEVICES=2` for two replicas).
        examples: Training examples (case default when None).
        width: Hidden width of `fnn`.
        batch_size: Per-replica batch size (case default when None).
        compare: Also run the baseline, the bare loop and the loss-curve check.
        train_settings: `TrainConfig` fields for the harness runs (e.g.
            `{"fuse_steps": False}`), other than those the case sets
            (`BENCH_OWN_KEYS`).
        profile: Also trace one epoch of one more harness fit and report
            its top ops (`top_ops`, see `kexp.cli.profiling.top_ops`).
        limit: Also measure the machine's limit (below).
        bf16: Also time the harness under `mixed_bfloat16` in every repeat;
            None: where the CPU has native bfloat16 (`kexp.engine.precision`).

    Returns:
        `harness_examples_per_s`, `baseline_examples_per_s`, `ratio` (median
        over repeats of harness/baseline measured back to back),
        `ratio_of_medians`, `bare_examples_per_s`, `bare_over_harness`
        (paired, likewise), `repeat_examples_per_s`, `max_loss_rel_diff`,
        `peak_rss_mb`, the settings the harness chose, and the machine's
        limit: `train_flops_per_example`, `matmul_gflop_s` (the better of
        `matmul_gflop_s_measured`, before and after the fits),
        `flop_bound_examples_per_s` (their quotient) and each method's
        `*_fraction_of_bound`; with bf16, `bf16_examples_per_s`,
        `bf16_spread`, `bf16_over_float32` (median over repeats of the
        bfloat16 harness over the float32 one, back to back) and
        `bf16_over_baseline`; `bf16` says why it ran or not. Its losses are
        not compared (bfloat16 rounds otherwise).
    """
    from kexp.cli import flops
    from kexp.engine.strategy import make_strategy

    case = make_case(name, examples=examples, width=width, batch_size=batch_size)
    # The strategy first: it sets up the (logical) devices, which must happen
    # before any TensorFlow op runs; the harness's fits reuse it.
    make_strategy(strategy)
    # Before the fits and after them: the better of the two is the machine's rate (a slow spell only lowers it).
    matmul_rates = [flops.matmul_gflops()] if limit else []
    harness_settings = train_settings or {}
    bf16_why = _bf16_why(bf16, precision_set="precision" in harness_settings)
    with tempfile.TemporaryDirectory(prefix="kexp-bench-") as logdir:
        timed = _timed_repeats(case, repeats, epochs, logdir, strategy, compare, harness_settings,
                               bf16=bf16_why.startswith("run"))
        result = {**_harness_figures(name, case, epochs, repeats, timed), **_bf16_figures(timed, bf16_why)}
        if compare:
            result.update(_comparison(case, logdir, strategy, harness_settings, timed))
        if profile:
            result["top_ops"] = _profiled_top_ops(case, epochs, logdir, strategy, harness_settings)
    if limit:
        matmul_rates.append(flops.matmul_gflops())
        result.update(_flop_bound(case, result, matmul_rates))
    result["peak_rss_mb"] = peak_rss_mb()
    return result


@dataclasses.dataclass
class _Timed:
    """Throughputs of each repeat (examples/s), and the settings the harness chose.

    Attributes:
        harness: The harness's, one per repeat.
        baseline: Plain `model.fit`'s, one per repeat (empty without compare).
        bare: The bare training loop's, one per repeat (empty without compare).
        settings: What the harness chose (`global_batch_size`, ...), from its last fit.
        bf16: The harness's under `mixed_bfloat16`, one per repeat (empty when not asked).
    """

    harness: list[float] = dataclasses.field(default_factory=list)
    baseline: list[float] = dataclasses.field(default_factory=list)
    bare: list[float] = dataclasses.field(default_factory=list)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    bf16: list[float] = dataclasses.field(default_factory=list)


def _timed_repeats(case: Case, repeats: int, epochs: int, logdir: str, strategy: str, compare: bool,
                   train_settings: dict[str, Any], bf16: bool = False) -> _Timed:
    """Fits the case `repeats` times with each method, back to back, and returns their throughputs.

    Args:
        case: The benchmark case.
        repeats: Fits per method.
        epochs: Epochs per fit.
        logdir: Where the harness's run folders go.
        strategy: The harness's strategy.
        compare: Also fit the baseline and the bare loop.
        train_settings: `TrainConfig` fields of the harness fits.
        bf16: Also fit the harness under `mixed_bfloat16`, right after the float32 one.

    Returns:
        The throughputs and the harness's settings.
    """
    timed = _Timed()
    for _ in range(repeats):
        throughput, _, timed.settings = bench_methods.harness_run(case, epochs, logdir, shuffle=True,
                                                                  strategy=strategy, **train_settings)
        timed.harness.append(throughput)
        if bf16:
            bf16_settings = {**train_settings, "precision": "mixed_bfloat16"}
            timed.bf16.append(bench_methods.harness_run(case, epochs, logdir, shuffle=True, strategy=strategy,
                                                        **bf16_settings)[0])
        if compare:
            timed.baseline.append(bench_methods.baseline_run(case, epochs)[0])
            timed.bare.append(bench_methods.bare_run(case, epochs))
    return timed


def _harness_figures(name: str, case: Case, epochs: int, repeats: int, timed: _Timed) -> dict[str, Any]:
    """Returns the case's description and the harness's median throughput, spread and chosen settings."""
    harness, settings = timed.harness, timed.settings
    return {
        "case": name,
        "examples": len(case.x),
        "batch_size": case.batch_size,
        "epochs": epochs,
        "repeats": repeats,
        "harness_examples_per_s": statistics.median(harness),
        "harness_spread": [min(harness), max(harness)],
        "harness_steps_per_s": statistics.median(harness) / settings.get("global_batch_size", case.batch_size),
        **{f"harness_{k}": v for k, v in settings.items()},
    }


def _bf16_why(asked: bool | None, precision_set: bool = False) -> str:
    """Returns why the bfloat16 row runs ("run: ...") or not ("not run: ...").

    Raises:
        UsageError: For `--bf16 on` when `--set train.precision` gives the harness row its own precision.
    """
    from kexp.engine.precision import choose_auto, cpu_flags
    from kexp.errors import UsageError

    if asked is False:
        return "not run: --bf16 off"
    if precision_set:
        if asked:
            raise UsageError("bench: --bf16 on with --set train.precision: the harness row trains under that "
                             "precision already; allowed: one of the two")
        return "not run: --set train.precision gives the harness row its precision"
    # What train.precision=auto would pick here, and why (no GPU: the question is the CPU's).
    policy, reason = choose_auto(cpu_flags(), gpus=0)
    native = policy == "mixed_bfloat16"
    if asked:
        return "run: --bf16 on" + (f" ({reason})" if native else
                                   " (the CPU has no native bfloat16: oneDNN emulates it)")
    if native:
        return f"run: {reason}"
    return (f"not run: {reason} (oneDNN would emulate bfloat16: the lstm case trained 0.8-0.9x as fast as in "
            "float32 on such a CPU); --bf16 on runs it")


def _bf16_figures(timed: _Timed, why: str) -> dict[str, Any]:
    """Returns the bfloat16 harness's median throughput and its paired ratios, or only why it did not run."""
    if not timed.bf16:
        return {"bf16": why}
    figures = {"bf16": why, "bf16_examples_per_s": statistics.median(timed.bf16),
               "bf16_spread": [min(timed.bf16), max(timed.bf16)], "bf16_repeat_examples_per_s": timed.bf16,
               "bf16_over_float32": statistics.median(b / h for b, h in zip(timed.bf16, timed.harness))}
    if timed.baseline:
        figures["bf16_over_baseline"] = statistics.median(b / h for b, h in zip(timed.bf16, timed.baseline))
    return figures


def _comparison(case: Case, logdir: str, strategy: str, train_settings: dict[str, Any],
                timed: _Timed) -> dict[str, Any]:
    """Returns the baseline's and the bare loop's figures against the harness's, and the loss-curve check.

    Runs one more fit of the harness and of the baseline, unshuffled, for
    two epochs: the same order of examples in both, so their loss curves
    must agree (`max_loss_rel_diff`).
    """
    harness, baseline, bare = timed.harness, timed.baseline, timed.bare
    _, harness_losses, _ = bench_methods.harness_run(case, 2, logdir, shuffle=False, strategy=strategy,
                                                     **train_settings)
    _, baseline_losses = bench_methods.baseline_run(case, 2, shuffle=False)
    return {
        "baseline_examples_per_s": statistics.median(baseline),
        "baseline_spread": [min(baseline), max(baseline)],
        # Each repeat measures the three methods back to back; the
        # median of those paired ratios is robust to the slow spells
        # of a shared machine, which hit one repeat of all methods.
        "ratio": statistics.median(h / b for h, b in zip(harness, baseline)),
        "ratio_of_medians": statistics.median(harness) / statistics.median(baseline),
        "bare_examples_per_s": statistics.median(bare),
        "bare_spread": [min(bare), max(bare)],
        "bare_over_harness": statistics.median(b / h for b, h in zip(bare, harness)),
        "repeat_examples_per_s": {"harness": harness, "baseline": baseline, "bare": bare},
        "harness_losses": harness_losses,
        "baseline_losses": baseline_losses,
        "max_loss_rel_diff": max(abs(a - b) / abs(b) for a, b in zip(harness_losses, baseline_losses)),
    }


def _profiled_top_ops(case: Case, epochs: int, logdir: str, strategy: str,
                      train_settings: dict[str, Any]) -> list[Any]:
    """Traces one more harness fit with the TensorFlow profiler and returns its top ops (`profiling.top_ops`)."""
    from kexp.cli.profiling import top_ops

    trace = f"{logdir}/profile"
    bench_methods.harness_run(case, max(epochs, 2), logdir, shuffle=True, strategy=strategy, profile=trace,
                              **train_settings)
    return top_ops(trace)


def _flop_bound(case: Case, result: dict[str, Any], matmul_rates: list[float]) -> dict[str, Any]:
    """Returns the case's training FLOPs per example, this machine's matmul rate and each method's share of it."""
    from kexp.cli import flops

    per_example = flops.training_flops(case.build())
    rate = max(matmul_rates)
    bound = rate * 1e9 / per_example if per_example else math.nan
    return {
        "train_flops_per_example": per_example,
        "matmul_gflop_s": rate,
        "matmul_gflop_s_measured": matmul_rates,
        "flop_bound_examples_per_s": bound,
        **{f"{method}_fraction_of_bound": result[f"{method}_examples_per_s"] / bound
           for method in ("harness", "baseline", "bare") if f"{method}_examples_per_s" in result},
    }
