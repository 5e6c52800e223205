"""**BLEU** (Papineni et al., "BLEU: a method for automatic evaluation of machine
translation", ACL 2002), corpus level: clipped n-gram counts and lengths summed over the
corpus first, then BLEU = BP * exp(sum_n (1/N) log p_n), p_n = matched n-grams /
hypothesis n-grams, BP = exp(1 - r / c) when the hypotheses' total length c is below
the closest references' total length r, else 1. Smoothing for a p_n of 0 (Chen and
Cherry, "A systematic comparison of smoothing techniques for sentence-level BLEU", WMT
2014). Tokenised as mteval-v13a does (sacrebleu's default), or on whitespace. Score in
[0, 100], as papers and sacrebleu report it.

Checked against sacrebleu (tests/test_metrics_text.py).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from minift.metrics.text_inputs import as_reference_sets, as_texts, ngrams

SMOOTHING = ("exp", "floor", "add-k", "none")
TOKENIZERS = ("13a", "none")

# The tokenisation rules of NIST's mteval-v13a.pl (the WMT standard; sacrebleu's "13a"),
# written as regular expressions: split off every ASCII symbol except . , - and ', then
# periods and commas unless between digits, then a dash after a digit.
_13A_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
)
_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))


def tokenize_13a(text: str) -> list[str]:
    """The tokens mteval-v13a (the WMT standard, sacrebleu's default) makes of a line."""
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in _ENTITIES:
        text = text.replace(entity, char)
    text = f" {text} "
    for pattern, replacement in _13A_RULES:
        text = pattern.sub(replacement, text)
    return text.split()


@dataclass(frozen=True)
class BLEUScore:
    """Corpus BLEU and the statistics it is made of."""

    score: float  # 0..100
    precisions: tuple[float, ...]  # p_1..p_N in percent, after smoothing
    brevity_penalty: float
    hyp_len: int
    ref_len: int

    def __str__(self) -> str:
        ps = "/".join(f"{p:.1f}" for p in self.precisions)
        return (
            f"BLEU = {self.score:.2f} {ps} (BP = {self.brevity_penalty:.3f} "
            f"ratio = {self.hyp_len / max(self.ref_len, 1):.3f} hyp_len = {self.hyp_len} "
            f"ref_len = {self.ref_len})"
        )


def bleu_statistics(
    prediction: str, references: Sequence[str], max_order: int = 4, tokenize: str = "13a"
) -> list[int]:
    """One sentence's sufficient statistics: [c, r, matched_1..N, total_1..N].

    c is the hypothesis length, r the length of the closest reference (the shorter one on
    a tie), matched_n the hypothesis n-grams clipped to the most times any one reference
    holds them. Summed over sentences they give corpus BLEU (so a bootstrap over
    sentences resamples these rows).
    """
    split = tokenize_13a if tokenize == "13a" else str.split
    hyp = split(prediction)
    refs = [split(r) for r in references]
    ref_len = min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    matched, total = [], []
    for n in range(1, max_order + 1):
        counts = ngrams(hyp, n)
        most: Counter = Counter()
        for r in refs:
            most |= ngrams(r, n)  # elementwise max over the references
        matched.append(sum(min(c, most[g]) for g, c in counts.items()))
        total.append(max(0, len(hyp) - n + 1))
    return [len(hyp), ref_len, *matched, *total]


def bleu_from_statistics(
    stats: Sequence[int], max_order: int = 4, smooth: str = "exp", smooth_value: float | None = None
) -> BLEUScore:
    """Corpus BLEU from summed :func:`bleu_statistics`.

    Smoothing of an order n whose matched count is 0 (Chen and Cherry 2014):
      - "none": no smoothing, so BLEU is 0 (log 0);
      - "floor": p_n = smooth_value / total_n (default 0.1; their method 1);
      - "add-k": for n >= 2, matched_n and total_n both + smooth_value (default 1; method 2);
      - "exp": the k-th order with no match gets p_n = 1 / (2^k total_n) (method 3, the
        NIST script's; sacrebleu's default).
    With no n-gram matched at any order BLEU is 0 whatever the smoothing. An order with no
    hypothesis n-gram at all (every sentence shorter than n) ends the product there: its
    p_n stays 0, and BLEU is 0.
    """
    if smooth not in SMOOTHING:
        raise ValueError(f"smooth must be one of {SMOOTHING}, got {smooth!r}")
    if smooth_value is None:
        smooth_value = {"floor": 0.1, "add-k": 1.0}.get(smooth, 0.0)
    hyp_len, ref_len = stats[0], stats[1]
    matched = [float(x) for x in stats[2 : 2 + max_order]]
    total = [float(x) for x in stats[2 + max_order : 2 + 2 * max_order]]
    precisions = [0.0] * max_order
    if hyp_len < ref_len:
        bp = math.exp(1.0 - ref_len / hyp_len) if hyp_len > 0 else 0.0
    else:
        bp = 1.0
    if not any(matched):  # smoothing fills gaps; it gives no credit for no match at all
        return BLEUScore(0.0, tuple(precisions), bp, int(hyp_len), int(ref_len))
    unmatched = 0
    for i in range(max_order):
        if smooth == "add-k" and i > 0:
            matched[i] += smooth_value
            total[i] += smooth_value
        if total[i] == 0:
            break
        if matched[i] > 0:
            precisions[i] = 100.0 * matched[i] / total[i]
        elif smooth == "exp":
            unmatched += 1
            precisions[i] = 100.0 / (2**unmatched * total[i])
        elif smooth == "floor":
            precisions[i] = 100.0 * smooth_value / total[i]
    if min(precisions) <= 0.0:
        score = 0.0
    else:
        score = bp * math.exp(sum(math.log(p) for p in precisions) / max_order)
    return BLEUScore(score, tuple(precisions), bp, int(hyp_len), int(ref_len))


def bleu(
    predictions,
    references,
    *,
    max_order: int = 4,
    smooth: str = "exp",
    smooth_value: float | None = None,
    tokenize: str = "13a",
    lowercase: bool = False,
) -> BLEUScore:
    """Corpus-level BLEU of ``predictions`` against ``references`` (see the module doc)."""
    if tokenize not in TOKENIZERS:
        raise ValueError(f"tokenize must be one of {TOKENIZERS}, got {tokenize!r}")
    if smooth not in SMOOTHING:
        raise ValueError(f"smooth must be one of {SMOOTHING}, got {smooth!r}")
    if max_order < 1:
        raise ValueError(f"max_order must be at least 1, got {max_order}")
    preds = as_texts(predictions, "predictions")
    refs = as_reference_sets(references, len(preds))
    if lowercase:
        preds = [p.lower() for p in preds]
        refs = [[r.lower() for r in group] for group in refs]
    summed = [0] * (2 + 2 * max_order)
    for p, group in zip(preds, refs):
        for j, x in enumerate(bleu_statistics(p, group, max_order, tokenize)):
            summed[j] += x
    return bleu_from_statistics(summed, max_order, smooth, smooth_value)


def bleu_interval(
    predictions,
    references,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    **options,
):
    """A percentile bootstrap interval for corpus BLEU (Koehn, "Statistical significance
    tests for machine translation evaluation", EMNLP 2004): resample the *sentences*, sum
    their statistics, recompute BLEU. Corpus BLEU is not a mean of sentence scores, so the
    sentences' sufficient statistics are resampled, not per-sentence BLEUs. ``options`` are
    :func:`bleu`'s (max_order, smooth, smooth_value, tokenize, lowercase)."""
    import numpy as np

    from minift.metrics.intervals import bootstrap_ci

    score = bleu(predictions, references, **options)  # checks every input and option
    max_order = options.get("max_order", 4)
    split = {k: options[k] for k in ("smooth", "smooth_value") if k in options}
    preds, refs = list(predictions), as_reference_sets(references, len(predictions))
    if options.get("lowercase"):
        preds = [p.lower() for p in preds]
        refs = [[r.lower() for r in group] for group in refs]
    tok = options.get("tokenize", "13a")
    rows = np.array([bleu_statistics(p, g, max_order, tok) for p, g in zip(preds, refs)])

    def corpus(idx):
        return bleu_from_statistics(rows[np.asarray(idx, dtype=np.int64)].sum(0), max_order, **split).score  # fmt: skip

    del score  # computed first for its checks; the interval's value is the same BLEU
    return bootstrap_ci(np.arange(len(rows)), corpus, n_resamples=n_resamples, confidence=confidence, seed=seed)  # fmt: skip
