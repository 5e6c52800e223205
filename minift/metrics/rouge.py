"""**ROUGE-N and ROUGE-L** (Lin, "ROUGE: a package for automatic evaluation of summaries",
2004): n-gram overlap, and the longest common subsequence, each as precision, recall
and F1 of one prediction against one reference, averaged over the examples. Scores in
[0, 1]. Tokens: lowercase ASCII letters and digits (no stemming).

Checked against rouge-score (tests/test_metrics_text.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from minift.metrics.text_inputs import as_texts, ngrams

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 of one prediction against one reference."""

    precision: float
    recall: float
    fmeasure: float


def rouge_tokens(text: str) -> list[str]:
    """ROUGE's tokens: lowercase, every run of characters other than a-z and 0-9 a break."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _prf(overlap: int, n_pred: int, n_ref: int) -> PRF:
    p = overlap / n_pred if n_pred else 0.0
    r = overlap / n_ref if n_ref else 0.0
    return PRF(p, r, 2 * p * r / (p + r) if p + r > 0 else 0.0)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """The length of the longest common subsequence, by dynamic programming (O(|a| |b|))."""
    previous = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b):
            row.append(previous[j] + 1 if x == y else max(previous[j + 1], row[j]))
        previous = row
    return previous[-1]


def rouge_pair(prediction: str, reference: str, rouge_type: str = "rougeL") -> PRF:
    """ROUGE-N (``rouge1``, ``rouge2``, ...) or ROUGE-L of one prediction and one reference.

    ROUGE-N: overlap = sum over n-grams of min(count in prediction, count in reference);
    precision = overlap / prediction n-grams, recall = overlap / reference n-grams.
    ROUGE-L: LCS = the longest common subsequence of the two token lists; precision =
    LCS / prediction tokens, recall = LCS / reference tokens. F1 = 2 P R / (P + R).
    """
    pred, ref = rouge_tokens(prediction), rouge_tokens(reference)
    if rouge_type == "rougeL":
        return _prf(lcs_length(pred, ref), len(pred), len(ref))
    match = re.fullmatch(r"rouge([1-9])", rouge_type)
    if not match:
        raise ValueError(f"rouge_type must be one of {ROUGE_TYPES} (or rouge3..rouge9), got {rouge_type!r}")  # fmt: skip
    n = int(match.group(1))
    p, r = ngrams(pred, n), ngrams(ref, n)
    return _prf(sum((p & r).values()), sum(p.values()), sum(r.values()))


def rouge(predictions, references, rouge_types: Sequence[str] = ROUGE_TYPES) -> dict[str, PRF]:
    """Each ROUGE type's precision, recall and F1, averaged over the examples (one
    reference each)."""
    preds = as_texts(predictions, "predictions")
    refs = as_texts(references, "references")
    if len(preds) != len(refs):
        raise ValueError(
            f"predictions and references have different lengths ({len(preds)} and {len(refs)})"
        )
    out = {}
    for t in rouge_types:
        pairs = [rouge_pair(p, r, t) for p, r in zip(preds, refs)]
        out[t] = PRF(*(sum(getattr(x, f) for x in pairs) / len(pairs) for f in PRF.__dataclass_fields__))  # fmt: skip
    return out
