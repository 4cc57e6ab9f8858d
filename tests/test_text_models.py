"""The char-RNN's parts: the stdlib corpus, the Kneser-Ney baseline (checked by hand), bracket balance, state carrying."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kexp.study import ngram
from kexp.data import text


def test_kneser_ney_unigram_by_hand():
    # "aab" over {a, b, c}: counts a=2, b=1; n1 = n2 = 1, so Y = 1/3, D1 = 1 - 2Y = 1/3, D2 = 2 (n3 = 0).
    # gamma = (D1 + D2) / 3 = 7/9; P(a) = (2 - 2)/3 + 7/9 * 1/3 = 7/27, P(b) = (1 - 1/3)/3 + 7/27 = 13/27, P(c) = 7/27.
    model = ngram.KneserNey(np.array([0, 0, 1]), order=1, vocab_size=3)
    np.testing.assert_allclose(model.probabilities(np.zeros((1, 0), dtype=int))[0], [7 / 27, 13 / 27, 7 / 27])
    expected = -(math.log2(7 / 27) + math.log2(13 / 27) + math.log2(7 / 27)) / 3
    assert model.bits_per_char(np.array([0, 1, 2])) == pytest.approx(expected)


def test_kneser_ney_bigram_by_hand():
    # "abab" over {a, b}, order 2. Bigrams: ab x2, ba x1 (raw counts; n1 = 1, n2 = 1 -> Y = 1/3,
    # D1 = 1/3, D2 = 2). Unigrams use continuation counts: a follows b once, b follows a once
    # (the first "a" has no left neighbour): both 1, n1 = 2, n2 = 0 -> Y = 1, D1 = 1;
    # P1(a) = P1(b) = (1 - 1)/2 + (1 + 1)/2 * 1/2 = 1/2.
    # After "a": c(ab) = 2, c(a.) = 2: P(b|a) = (2 - 2)/2 + (2/2) * 1/2 = 1/2; P(a|a) = 0 + 1 * 1/2 = 1/2.
    # After "b": c(ba) = 1: P(a|b) = (1 - 1/3)/1 + (1/3)/1 * 1/2 = 5/6; P(b|b) = 1/6.
    model = ngram.KneserNey(np.array([0, 1, 0, 1]), order=2, vocab_size=2)
    np.testing.assert_allclose(model.probabilities(np.array([[0], [1]])), [[0.5, 0.5], [5 / 6, 1 / 6]])
    np.testing.assert_allclose(model.probabilities_of(np.array([[1], [0]]), np.array([0, 0])), [5 / 6, 0.5])


def test_kneser_ney_distributions_sum_to_one_and_orders_improve():
    corpus = text.stdlib_corpus(60_000)
    models, scores = {}, {}
    for order in (1, 3, 5):
        models[order] = ngram.KneserNey(corpus.train, order, text.VOCAB_SIZE)
        scores[order] = models[order].bits_per_char(corpus.validation, start=4)
        contexts = np.stack([corpus.validation[i: i + order - 1] for i in range(0, 4000, 40)]) if order > 1 \
            else np.zeros((100, 0), dtype=int)
        np.testing.assert_allclose(models[order].probabilities(contexts).sum(axis=1), 1.0, atol=1e-9)
        # Both ways of asking give the same numbers.
        symbols = corpus.validation[order - 1: 4000 + order - 1: 40][: len(contexts)]
        np.testing.assert_allclose(models[order].probabilities_of(contexts, symbols),
                                   models[order].probabilities(contexts)[np.arange(len(contexts)), symbols])
    assert scores[1] > scores[3] > scores[5]
    best, all_scores = ngram.best_order(corpus.train, corpus.validation, text.VOCAB_SIZE, range(1, 4))
    assert best.order == min(all_scores, key=all_scores.get) and set(all_scores) == {1, 2, 3}


def test_ngram_samples_follow_the_model():
    ids = np.array([0, 1, 2] * 200)
    model = ngram.KneserNey(ids, order=3, vocab_size=4)
    out = ngram.sample(model, np.array([[0, 1]] * 5), 30, temperature=0.5, rng=np.random.default_rng(0))
    # A cold temperature on "012012...": the cycle continues.
    assert out.shape == (5, 30)
    assert (out[:, :6] == [2, 0, 1, 2, 0, 1]).mean() > 0.9


def test_corpus_splits_by_file_and_encodes_to_97_symbols():
    corpus = text.stdlib_corpus(200_000)
    assert not set(corpus.train_files) & set(corpus.validation_files)
    files = [p.name for p in text.stdlib_files()]
    taken = len(corpus.train_files) + len(corpus.validation_files)
    assert corpus.validation_files == tuple(files[i] for i in range(9, taken, 10))
    assert len(corpus.train) >= 200_000
    assert text.VOCAB_SIZE == 97
    assert text.encode("a\tb\u00e9\n").tolist() == [text.ALPHABET.index("a"), 96, text.ALPHABET.index("b"), 96, 95]
    assert text.decode(text.encode("def f(x):\n")) == "def f(x):\n"


@pytest.mark.parametrize("source, balanced", [
    ("f(a[1], {2: 3})", True),
    ("f(a]", False),
    ("(", False),
    (")", False),
    ('x = "(" + \'[\' + """{\n(""" # ( [ {\n', True),
    ("s = '\\'(' + (1)", True),
    ('s = "unclosed (\nt = 1', True),  # a one-quote string ends with its line
])
def test_bracket_balance_ignores_strings_and_comments(source, balanced):
    assert text.brackets_balanced(source) is balanced


def test_clean_line_starts():
    source = 'a = (1,\n2)\nb = 3\nc = """\n"""\nd'
    assert text.clean_line_starts(source).tolist() == [11, 17, 29]


def test_stream_scoring_carries_state_and_sampling_is_compiled_and_seeded():
    import keras

    from kexp.study import charlm
    from kexp.models import rnn

    keras.utils.set_random_seed(0)
    model = rnn((None,), 11, cell="lstm", units=(8, 8), vocab_size=11, embedding_dim=4)
    ids = np.random.default_rng(0).integers(0, 11, size=301)
    twin = charlm.stateful_twin(model)
    # From a zero state, the twin is the model.
    logits, *states = twin([keras.ops.convert_to_tensor(ids[None, :50]), *charlm.zero_states(twin, 1)])
    np.testing.assert_allclose(logits.numpy(), model(ids[None, :50]).numpy(), atol=1e-5)
    assert len(states) == 4  # two LSTM layers, (h, c) each
    # Scored in chunks with the state carried = scored at once.
    whole = charlm.stream_bits_per_char(model, ids, streams=1, chunk=300)
    assert charlm.stream_bits_per_char(model, ids, streams=1, chunk=7) == pytest.approx(whole, rel=1e-5)
    probs = keras.ops.softmax(model(ids[None, :300])).numpy()[0]
    manual = -np.mean(np.log2(probs[np.arange(300), ids[1:301]]))
    assert whole == pytest.approx(manual, rel=1e-4)
    first = charlm.sample(model, np.stack([ids[:20], ids[20:40]]), 25, temperature=0.8, seed=3)
    assert first.shape == (2, 25) and first.min() >= 0 and first.max() < 11
    np.testing.assert_array_equal(first, charlm.sample(model, np.stack([ids[:20], ids[20:40]]), 25, 0.8, seed=3))
    x, y = charlm.windows(ids, 100)
    assert x.shape == y.shape == (3, 100) and (y[:, :-1] == x[:, 1:]).all() and y[0, -1] == ids[100]


def test_no_symbol_gets_probability_zero_when_a_discount_estimate_is_not_positive():
    # Level 3 of this text has counts-of-counts n1..n4 = 1, 0, 2, 2: Chen & Goodman's D3+ = 3 - 4 * 1 * 2/2 = -1.
    ids = np.array([1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 0])
    model = ngram.KneserNey(ids, order=3, vocab_size=2)
    contexts = np.array([[a, b] for a in (0, 1) for b in (0, 1)])
    p = model.probabilities(contexts)
    assert (p > 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_ngram_sampling_at_a_cold_temperature_is_greedy_not_nan():
    corpus = text.stdlib_corpus(60_000)
    model = ngram.KneserNey(corpus.train, 4, text.VOCAB_SIZE)
    prompts = np.stack([corpus.validation[i: i + 3] for i in range(0, 600, 30)])
    out = ngram.sample(model, prompts, 1, temperature=0.001, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out[:, 0], model.probabilities(prompts).argmax(axis=1))
    with pytest.raises(ValueError, match="need at least order = 4 ids"):
        ngram.KneserNey(np.array([1, 2]), 4, 5)
    with pytest.raises(ValueError, match=r"prompts must be \(N, >= order - 1 = 3\)"):
        ngram.sample(model, prompts[:, :2], 5, 1.0, np.random.default_rng(0))


def test_char_rnn_settings_that_do_not_fit_the_validation_text_exit_2(logdir):
    from helpers import run_cli_here

    for settings, message in [
        (["eval.sample_length=100000"], "eval.prompt_length=100 and eval.sample_length=100000: no prompt fits the "),
        (["data.seq_length=7000"], "data.seq_length=7000: the validation files of data.corpus_chars=50000 hold "),
    ]:
        args = [item for setting in ["data.corpus_chars=50000", *settings] for item in ("--set", setting)]
        proc = run_cli_here("run", "char_rnn", "--logdir", str(logdir), *args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(f"kexp: error: {message}") and len(proc.stderr.strip().splitlines()) == 1
        assert not any(logdir.iterdir())  # the run folder went again
