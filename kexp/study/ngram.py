"""Character n-gram language model with interpolated modified Kneser-Ney smoothing (Chen & Goodman 1998).

The baseline the char-RNN must beat, so the strongest usual n-gram: each
order's discounts D1, D2, D3+ are estimated from its count-of-counts, lower
orders use continuation counts (in how many contexts a string follows), and
every order interpolates with the one below, down to a uniform distribution
over the vocabulary (so no symbol ever gets probability 0: every discount
is positive, so every seen context passes mass down).

Counting is NumPy over integer-coded n-grams (an order-n gram of symbols
from a vocabulary of V is one int64 `sum(s_j * V^(n-1-j))`), so fitting
orders 1-6 on a million characters takes seconds.

    model = KneserNey(train_ids, order=6, vocab_size=97)
    model.bits_per_char(validation_ids)        # mean -log2 P(next | context)
    model.probabilities(contexts)               # (batch, V) next-symbol distributions
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class _Level:
    """One order's counts: k-grams (sorted ids) with their (raw or continuation) counts, and per context."""

    keys: np.ndarray  # sorted unique k-gram ids
    counts: np.ndarray  # their counts
    contexts: np.ndarray  # sorted unique (k-1)-gram context ids
    totals: np.ndarray  # sum of counts per context
    gammas_numerator: np.ndarray  # D1*N1(h.) + D2*N2(h.) + D3*N3+(h.) per context
    discounts: np.ndarray  # [0, D1, D2, D3+]


class KneserNey:
    """An interpolated modified Kneser-Ney character model of one order.

    Args:
        ids: Training symbol ids (int), one stream.
        order: n: the model conditions on the n-1 symbols before.
        vocab_size: V; ids are in [0, V).

    Raises:
        ValueError: For an order < 1, an order whose ids overflow int64, or ids outside the vocabulary.
    """

    def __init__(self, ids: np.ndarray, order: int, vocab_size: int) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if order < 1 or vocab_size ** order >= 2**62:
            raise ValueError(f"order must be >= 1 with vocab_size**order < 2**62; received: order={order}, "
                             f"vocab_size={vocab_size}")
        if ids.size < order:
            raise ValueError(f"need at least order = {order} ids to count; received {ids.size}")
        if ids.min() < 0 or ids.max() >= vocab_size:
            raise ValueError(f"ids must be in [0, {vocab_size}); received ids in [{ids.min()}, {ids.max()}]")
        self.order, self.vocab_size = order, vocab_size
        grams = [None] + [_grams(ids, k, vocab_size) for k in range(1, order + 1)]
        self._levels: list[_Level | None] = [None]
        for k in range(1, order + 1):
            if k == order:
                keys, counts = np.unique(grams[k], return_counts=True)
            else:
                # Continuation count of a k-gram: how many distinct symbols precede it.
                extended = np.unique(grams[k + 1])
                keys, counts = np.unique(extended % vocab_size**k, return_counts=True)
            self._levels.append(_level(keys, counts, vocab_size))

    def probabilities_of(self, contexts: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        """Returns P(symbol | context) for aligned arrays.

        Args:
            contexts: `(N, order - 1)` symbol ids before each symbol (the last
                column is the nearest); unused with order 1.
            symbols: `(N,)` the symbols.
        """
        symbols = np.asarray(symbols, dtype=np.int64)
        p = np.full(symbols.shape, 1.0 / self.vocab_size)
        for k in range(1, self.order + 1):
            context = _context_ids(contexts, k, self.vocab_size, len(symbols))
            p = self._interpolate(k, context, context * self.vocab_size + symbols, p)
        return p

    def probabilities(self, contexts: np.ndarray) -> np.ndarray:
        """Returns the next-symbol distributions `(N, V)` after each row of `contexts` (`(N, order - 1)`)."""
        n, v = len(contexts), self.vocab_size
        p = np.full((n, v), 1.0 / v)
        for k in range(1, self.order + 1):
            level = self._levels[k]
            context = _context_ids(contexts, k, v, n)
            # The k-grams of a context are one contiguous block of the sorted keys.
            start = np.searchsorted(level.keys, context * v)
            end = np.searchsorted(level.keys, context * v + v)
            lengths = end - start
            rows = np.repeat(np.arange(n), lengths)
            positions = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) \
                + np.repeat(start, lengths)
            counts = np.zeros((n, v))
            counts[rows, level.keys[positions] % v] = level.counts[positions]
            total, gamma_numerator = self._context_stats(k, context)
            discount = level.discounts[np.minimum(counts, 3).astype(np.int64)]
            seen = total > 0
            safe = np.where(seen, total, 1.0)[:, None]
            mixed = np.maximum(counts - discount, 0.0) / safe + (gamma_numerator[:, None] / safe) * p
            p = np.where(seen[:, None], mixed, p)
        return p

    def bits_per_char(self, ids: np.ndarray, start: int | None = None) -> float:
        """Returns the mean -log2 P(ids[i] | the order-1 symbols before) over positions `start`.. (default order-1)."""
        ids = np.asarray(ids, dtype=np.int64)
        start = self.order - 1 if start is None else start
        positions = np.arange(start, len(ids))
        contexts = np.stack([ids[positions - j] for j in range(self.order - 1, 0, -1)], axis=1) \
            if self.order > 1 else np.zeros((len(positions), 0), dtype=np.int64)
        return float(-np.mean(np.log2(self.probabilities_of(contexts, ids[positions]))))

    def _context_stats(self, k: int, context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        level = self._levels[k]
        index = np.searchsorted(level.contexts, context)
        index = np.minimum(index, len(level.contexts) - 1)
        found = level.contexts[index] == context
        return np.where(found, level.totals[index], 0.0), np.where(found, level.gammas_numerator[index], 0.0)

    def _interpolate(self, k: int, context: np.ndarray, gram: np.ndarray, lower: np.ndarray) -> np.ndarray:
        level = self._levels[k]
        index = np.minimum(np.searchsorted(level.keys, gram), len(level.keys) - 1)
        count = np.where(level.keys[index] == gram, level.counts[index], 0).astype(np.float64)
        total, gamma_numerator = self._context_stats(k, context)
        seen = total > 0
        safe = np.where(seen, total, 1.0)
        discount = level.discounts[np.minimum(count, 3).astype(np.int64)]
        mixed = np.maximum(count - discount, 0.0) / safe + gamma_numerator / safe * lower
        return np.where(seen, mixed, lower)


def best_order(train: np.ndarray, validation: np.ndarray, vocab_size: int, orders: range) -> tuple[KneserNey, dict[int, float]]:
    """Fits one model per order and returns the one with the lowest validation bits per char, and every order's.

    All orders are scored on the same validation positions (from max(orders) - 1 on).
    """
    scores, models = {}, {}
    for order in orders:
        models[order] = KneserNey(train, order, vocab_size)
        scores[order] = models[order].bits_per_char(validation, start=max(orders) - 1)
    best = min(scores, key=scores.get)
    return models[best], scores


def sample(model: KneserNey, prompts: np.ndarray, length: int, temperature: float,
           rng: np.random.Generator) -> np.ndarray:
    """Returns `(N, length)` symbols sampled after each prompt row, each distribution raised to 1/temperature."""
    history = np.asarray(prompts, dtype=np.int64)
    if history.ndim != 2 or history.shape[1] < model.order - 1:
        raise ValueError(f"prompts must be (N, >= order - 1 = {model.order - 1}) symbol ids; "
                         f"received shape {history.shape}")
    out = np.zeros((len(history), length), dtype=np.int64)
    for step in range(length):
        context = history[:, history.shape[1] - (model.order - 1):] if model.order > 1 else history[:, :0]
        # In log space: p ** (1/T) underflows to 0 for a small T (every row NaN, every draw symbol 0).
        logits = np.log(model.probabilities(context)) / temperature
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        cumulative = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
        draws = (cumulative < rng.random((len(p), 1))).sum(axis=1)
        out[:, step] = np.minimum(draws, model.vocab_size - 1)
        history = np.concatenate([history, out[:, step:step + 1]], axis=1)
    return out


def _grams(ids: np.ndarray, k: int, vocab_size: int) -> np.ndarray:
    """The ids of every k-gram of `ids`, in order."""
    n = len(ids) - k + 1
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    grams = np.zeros(n, dtype=np.int64)
    for j in range(k):
        grams = grams * vocab_size + ids[j:j + n]
    return grams


def _context_ids(contexts: np.ndarray, k: int, vocab_size: int, n: int) -> np.ndarray:
    """The (k-1)-gram id of each row's last k-1 symbols (0 for k = 1)."""
    context = np.zeros(n, dtype=np.int64)
    if k > 1:
        for column in np.asarray(contexts, dtype=np.int64)[:, -(k - 1):].T:
            context = context * vocab_size + column
    return context


def _level(keys: np.ndarray, counts: np.ndarray, vocab_size: int) -> _Level:
    """One order's level: discounts from its count-of-counts, totals and gamma numerators per context."""
    n = [np.sum(counts == c) for c in range(1, 5)]
    y = n[0] / (n[0] + 2 * n[1]) if n[0] + 2 * n[1] > 0 else 0.5
    # Chen & Goodman's estimates can come out <= 0 on odd counts-of-counts; a zero discount for a
    # count class could leave a context no mass to give lower orders (a symbol with P = 0), so
    # such a class falls back to the plain Kneser-Ney discount Y (or 1/2).
    fallback = y if y > 0 else 0.5
    estimates = [c - (c + 1) * y * (n[c] / n[c - 1] if n[c - 1] else 0.0) for c in (1, 2, 3)]
    d = [0.0] + [value if value > 0 else fallback for value in estimates]
    discounts = np.array(d)
    context_of = keys // vocab_size
    contexts, first = np.unique(context_of, return_index=True)
    totals = np.add.reduceat(counts, first).astype(np.float64) if len(keys) else np.zeros(0)
    discounted = discounts[np.minimum(counts, 3)]
    gammas = np.add.reduceat(discounted, first) if len(keys) else np.zeros(0)
    return _Level(keys, counts.astype(np.float64), contexts, totals, gammas, discounts)
