"""**chrF** (Popović, "chrF: character n-gram F-score for automatic MT evaluation", WMT
2015): character n-grams (n = 1..6, whitespace removed), precision and recall averaged
over the orders, then F_beta with beta = 2 (recall weighs more). Score in [0, 100].
``word_order=2`` adds word unigrams and bigrams: chrF++ (Popović 2017).

Checked against sacrebleu (tests/test_metrics_text.py).
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Sequence

from minift.metrics.text_inputs import as_reference_sets, as_texts, ngrams

_PUNCTUATION = set(string.punctuation)


def _char_ngrams(text: str, order: int) -> list[Counter]:
    text = "".join(text.split())  # chrF ignores whitespace
    return [Counter(text[i : i + n] for i in range(len(text) - n + 1)) for n in range(1, order + 1)]


def chrf_words(text: str) -> list[str]:
    """chrF++'s words: split on whitespace, then one ASCII punctuation mark split off the
    end of a word (or, when none ends it, off its start); one-character words stay whole."""
    out = []
    for w in text.split():
        if len(w) > 1 and w[-1] in _PUNCTUATION:
            out += [w[:-1], w[-1]]
        elif len(w) > 1 and w[0] in _PUNCTUATION:
            out += [w[0], w[1:]]
        else:
            out.append(w)
    return out


def _chrf_ngrams(text: str, order: int, word_order: int) -> list[Counter]:
    words = chrf_words(text) if word_order else []
    return _char_ngrams(text, order) + [ngrams(words, n) for n in range(1, word_order + 1)]


def _chrf_from_statistics(stats: Sequence[float], order: int, beta: float) -> float:
    """F_beta of the precision and recall averaged over the orders that have n-grams on
    both sides (an order with none, in a short text, is left out of the average)."""
    precision = recall = 0.0
    orders = 0
    for i in range(order):
        n_hyp, n_ref, n_match = stats[3 * i : 3 * i + 3]
        if n_hyp > 0 and n_ref > 0:
            precision += n_match / n_hyp
            recall += n_match / n_ref
            orders += 1
    if orders == 0:
        return 0.0
    precision, recall = precision / orders, recall / orders
    b2 = beta * beta
    if precision + recall == 0:
        return 0.0
    return 100.0 * (1 + b2) * precision * recall / (b2 * precision + recall)


def chrf(
    predictions, references, *, order: int = 6, beta: float = 2.0, word_order: int = 0
) -> float:
    """Corpus chrF: per sentence, the counts of the reference with the best chrF; counts
    summed over the corpus; then F_beta of the precision and recall averaged over the
    orders (0..100). ``word_order=2`` adds word 1- and 2-grams to the average: chrF++
    (Popović, "chrF++: words helping character n-grams", WMT 2017)."""
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    if word_order < 0:
        raise ValueError(f"word_order must be >= 0, got {word_order}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    preds = as_texts(predictions, "predictions")
    refs = as_reference_sets(references, len(preds))
    orders = order + word_order
    summed = [0.0] * (3 * orders)
    for p, group in zip(preds, refs):
        hyp = _chrf_ngrams(p, order, word_order)
        best, best_f = None, -1.0
        for r in group:
            ref = _chrf_ngrams(r, order, word_order)
            stats = []
            for h, g in zip(hyp, ref):
                # A reference too short for order n leaves the hypothesis's n-grams
                # uncounted (chrF++.py and sacrebleu do the same): no precision at n.
                n_hyp = sum(h.values()) if g else 0
                stats += [n_hyp, sum(g.values()), sum((h & g).values())]
            f = _chrf_from_statistics(stats, orders, beta)
            if f > best_f:
                best, best_f = stats, f
        summed = [a + b for a, b in zip(summed, best)]
    return _chrf_from_statistics(summed, orders, beta)
