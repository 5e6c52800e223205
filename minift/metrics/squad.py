"""**Exact match and token F1** (Rajpurkar et al., "SQuAD: 100,000+ questions for machine
comprehension of text", EMNLP 2016): both strings normalised (lowercase, punctuation
removed, the articles a / an / the removed, whitespace collapsed), then EM = [pred =
ref] and F1 = 2 P R / (P + R) over the multiset of tokens in common; with several
references the best one counts. Scores in [0, 1].
"""

from __future__ import annotations

import re
import string
from collections import Counter

from minift.metrics.text_inputs import as_reference_sets, as_texts

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation, drop articles, one space."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:  # an empty answer is right only against an empty answer
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


def exact_match_scores(predictions, references) -> list[float]:
    """Per example: 1.0 when the normalised prediction equals a normalised reference."""
    preds = as_texts(predictions, "predictions")
    refs = as_reference_sets(references, len(preds))
    return [
        float(any(normalize_answer(p) == normalize_answer(r) for r in group))
        for p, group in zip(preds, refs)
    ]


def token_f1_scores(predictions, references) -> list[float]:
    """Per example: the best token F1 of the prediction against any of its references."""
    preds = as_texts(predictions, "predictions")
    refs = as_reference_sets(references, len(preds))
    return [max(_token_f1(p, r) for r in group) for p, group in zip(preds, refs)]


def exact_match(predictions, references) -> float:
    """The share of predictions that match a reference after SQuAD normalisation."""
    scores = exact_match_scores(predictions, references)
    return sum(scores) / len(scores)


def token_f1(predictions, references) -> float:
    """The mean over examples of SQuAD's token-level F1 (best reference each)."""
    scores = token_f1_scores(predictions, references)
    return sum(scores) / len(scores)
