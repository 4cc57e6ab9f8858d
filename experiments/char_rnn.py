"""A character-level LSTM writes Python and closes its brackets; the best n-gram cannot (tutorial 003).

What it shows: trained on the standard library's own source (the seed used
Shakespeare and Linux source), a character LSTM predicts the next character
better than the strongest usual n-gram, an interpolated modified
Kneser-Ney model whose order (1-6) is chosen on the validation files
(`val_bpc` vs `ngram_bpc`, bits per character on held-out files). And
because its state can count open brackets, the text it writes closes `(`,
`[` and `{` in order far more often (`lstm_bracket_balance` vs
`ngram_bracket_balance`: the share of 200 samples of 400 characters,
strings and comments ignored, each continuing a prompt from the validation
files that leaves nothing open; a sample that opens no bracket counts as
balanced). `real_bracket_balance` is the same share for the real
continuations. Samples are printed, kept in `samples.txt` (and
`samples/epoch_NNN.txt`) and TensorBoard's Text tab along training;
`final_samples.txt` puts the LSTM's and the n-gram's continuations of the
same prompts side by side.

Command:  python -m kexp run char_rnn
Expected: val_bpc below ngram_bpc (bpc_margin > 0) and lstm_bracket_balance
          above ngram_bracket_balance by more than 0.1 (bracket_margin > 0.1).
          Measured (Python 3.11.7's stdlib, seed 0): val_bpc 2.065 vs the 6-gram's
          2.097; bracket balance 0.405 vs 0.22 (real text 0.805).
Runtime:  about 8.6 minutes on a 2-core CPU (14 epochs of 108 steps, ~33 s each;
          the n-gram's six orders take 2 s, sampling seconds). The corpus is the
          running Python's own standard library, so figures vary a little
          between Python versions.
Precision: train.precision=auto: mixed_bfloat16 on a CPU with avx512_bf16 or amx_bf16, else
          float32. On such a 2-core EPYC: 288 s against 385 s in float32; seeds 0, 1, 2 met
          the bars (bpc_margin 0.012, 0.030, 0.050; bracket_margin 0.20, 0.14, 0.31).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import sys

from kexp import ExperimentConfig, TrainConfig, param
from kexp import ConfigError

if TYPE_CHECKING:
    from kexp import Harness


@dataclasses.dataclass(frozen=True)
class TextData:
    """The corpus and the training windows."""

    corpus_chars: int = param(1_300_000, ge=10_000, le=50_000_000,
                              help="training characters (whole stdlib files, in name order; every 10th to validation)")
    seq_length: int = param(100, ge=2, le=10_000, help="characters per training window (truncated backprop)")


@dataclasses.dataclass(frozen=True)
class CharModel:
    """The LSTM language model and the n-gram baseline."""

    embedding_dim: int = param(64, ge=1, le=4_096, help="symbol embedding width")
    units: tuple[int, ...] = param((256,), ge=1, le=8_192, help="LSTM widths, bottom to top (several: stacked)")
    clipnorm: float = param(1.0, gt=0, le=1e6, help="gradient clipping (global norm)")
    max_ngram_order: int = param(6, ge=1, le=9, help="the n-gram's order is chosen among 1..this on validation")


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """How both models' samples are drawn and judged."""

    num_samples: int = param(200, ge=1, le=100_000, help="samples for the bracket-balance shares")
    sample_length: int = param(400, ge=1, le=100_000, help="characters per sample")
    prompt_length: int = param(100, ge=1, le=10_000, help="validation characters each sample continues")
    temperature: float = param(0.8, gt=0, le=100, help="both models' distributions are raised to 1/temperature")
    show_every: int = param(0, ge=0, le=1_000_000,
                            help="epochs between samples shown along training; 0: about three times")


CONFIG = ExperimentConfig(
    data=TextData(),
    model=CharModel(),
    train=TrainConfig(epochs=14, batch_size=128, learning_rate=3e-3, precision="auto"),
    eval=SampleConfig(),
)

# The quality bar, declared once: the slow tests and the README's table follow it.
EXPECTED = {"bpc_margin": (">", 0.0), "bracket_margin": (">", 0.1)}
EXPECTED_TIME_S = 516  # a default run, whole command, on the README's machine (kexp check)
# Small settings at which the README's test command runs it (its bars need the defaults: kexp check).
SMOKE_SETTINGS = {"data.corpus_chars": 60000, "model.units": 16, "model.embedding_dim": 8, "model.max_ngram_order": 3,
                  "train.epochs": 1, "eval.num_samples": 8, "eval.sample_length": 40}


def run(config: ExperimentConfig, harness: Harness) -> dict[str, float]:
    """Fits the n-gram baseline, trains the LSTM, and compares bits per character and bracket balance."""
    import keras
    import numpy as np

    from kexp.study import charlm, ngram
    from kexp.data import text
    from kexp.models import rnn

    d, m, e = config.data, config.model, config.eval
    corpus = text.stdlib_corpus(d.corpus_chars)
    if len(corpus.validation) <= d.seq_length:
        raise ConfigError(f"data.seq_length={d.seq_length}: the validation files of data.corpus_chars="
                          f"{d.corpus_chars} hold {len(corpus.validation)} characters; allowed: a window shorter "
                          "than that, or a larger corpus")
    baseline, scores = ngram.best_order(corpus.train, corpus.validation, text.VOCAB_SIZE,
                                        range(1, m.max_ngram_order + 1))
    print("n-gram bits per char on validation, by order: "
          + ", ".join(f"{order}: {bpc:.3f}" for order, bpc in scores.items()))

    # Prompts: validation text before line starts where nothing is open.
    rng = np.random.default_rng(config.train.seed)
    validation_text = text.decode(corpus.validation)
    starts = text.clean_line_starts(validation_text)
    starts = starts[(starts >= e.prompt_length) & (starts + e.sample_length <= len(validation_text))]
    if not len(starts):
        raise ConfigError(f"eval.prompt_length={e.prompt_length} and eval.sample_length={e.sample_length}: no "
                          f"prompt fits the {len(validation_text)} validation characters of data.corpus_chars="
                          f"{d.corpus_chars}; allowed: shorter prompts and samples, or a larger corpus")
    if len(starts) < e.num_samples:
        print(f"kexp: note: eval.num_samples={e.num_samples}, but the validation text has {len(starts)} prompt "
              f"positions; bracket balance uses {len(starts)} samples (metric bracket_samples)", file=sys.stderr)
    chosen = np.sort(rng.choice(starts, size=min(e.num_samples, len(starts)), replace=False))
    prompts = np.stack([corpus.validation[s - e.prompt_length: s] for s in chosen])
    real = [validation_text[s: s + e.sample_length] for s in chosen]

    def show(model, epoch):
        samples = charlm.sample(model, prompts[:3], e.sample_length, e.temperature, seed=epoch)
        shown = "\n\n".join(f"--- LSTM after epoch {epoch}, continuing ...{text.decode(p[-40:])!r}\n"
                              f"{text.decode(s)}" for p, s in zip(prompts, samples))
        print(shown, flush=True)
        harness.log_text("samples", shown, step=epoch, filename=f"samples/epoch_{epoch:03d}.txt")
        # samples.txt: every epoch's samples so far (a resumed run rewrites, never repeats, an epoch).
        parts = sorted((harness.run_dir / "samples").glob("epoch_*.txt"))
        harness.save_text("samples.txt", "\n\n".join(p.read_text() for p in parts) + "\n")

    every = e.show_every or max(1, config.train.epochs // 3)
    sampler = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: show(sampler.model, epoch + 1) if (epoch + 1) % every == 0 else None)
    x, y = charlm.windows(corpus.train, d.seq_length)
    model = harness.fit(
        lambda: rnn((None,), text.VOCAB_SIZE, cell="lstm", units=m.units, vocab_size=text.VOCAB_SIZE,
                    embedding_dim=m.embedding_dim, name="char_lstm"),
        (x, y), charlm.windows(corpus.validation, d.seq_length),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer_options={"clipnorm": m.clipnorm}, callbacks=[sampler])
    if config.train.epochs % every:
        show(model, config.train.epochs)

    lstm_samples = charlm.sample(model, prompts, e.sample_length, e.temperature, seed=config.train.seed)
    ngram_samples = ngram.sample(baseline, prompts, e.sample_length, e.temperature, rng)
    metrics = {
        "val_bpc": charlm.stream_bits_per_char(model, corpus.validation),
        "ngram_bpc": scores[baseline.order],
        "ngram_order": float(baseline.order),
        "lstm_bracket_balance": float(np.mean([text.brackets_balanced(text.decode(s)) for s in lstm_samples])),
        "ngram_bracket_balance": float(np.mean([text.brackets_balanced(text.decode(s)) for s in ngram_samples])),
        "real_bracket_balance": float(np.mean([text.brackets_balanced(s) for s in real])),
        "bracket_samples": float(len(chosen)),
    }
    metrics["bpc_margin"] = metrics["ngram_bpc"] - metrics["val_bpc"]
    metrics["bracket_margin"] = metrics["lstm_bracket_balance"] - metrics["ngram_bracket_balance"]
    harness.log_text("final_samples", "\n\n".join(
        f"--- {who}, continuing ...{text.decode(p[-40:])!r}\n{text.decode(s)}"
        for p, lstm, gram in zip(prompts[:3], lstm_samples, ngram_samples)
        for who, s in (("LSTM", lstm), (f"{baseline.order}-gram", gram))))
    return metrics
