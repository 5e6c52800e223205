"""Metrics of generated text against references: exact match and token F1 (SQuAD), BLEU,
chrF, ROUGE-1/2/L.

Every function takes ``predictions`` (a list of strings, one per example) and
``references``: for the corpus metrics (BLEU, chrF) either a list of strings (one
reference each) or a list of lists (several references each, any number >= 1 per
example); for the others, one string or a list of acceptable strings per example.
Lengths must match, and no reference may be empty text where the metric needs words.

One module per metric: :mod:`~minift.metrics.squad` (exact match, token F1),
:mod:`~minift.metrics.bleu` (corpus BLEU and its bootstrap interval), :mod:`~minift.metrics.chrf`
(chrF, chrF++), :mod:`~minift.metrics.rouge` (ROUGE-N, ROUGE-L); this module gathers them
under one name. The tests check BLEU and chrF against sacrebleu, ROUGE against rouge-score,
and EM/F1 against cases worked out by hand.
"""

from minift.metrics.bleu import (
    SMOOTHING,
    TOKENIZERS,
    BLEUScore,
    bleu,
    bleu_from_statistics,
    bleu_interval,
    bleu_statistics,
    tokenize_13a,
)
from minift.metrics.chrf import chrf, chrf_words
from minift.metrics.rouge import PRF, ROUGE_TYPES, lcs_length, rouge, rouge_pair, rouge_tokens
from minift.metrics.squad import (
    exact_match,
    exact_match_scores,
    normalize_answer,
    token_f1,
    token_f1_scores,
)

__all__ = [
    "PRF",
    "ROUGE_TYPES",
    "SMOOTHING",
    "TOKENIZERS",
    "BLEUScore",
    "bleu",
    "bleu_from_statistics",
    "bleu_interval",
    "bleu_statistics",
    "chrf",
    "chrf_words",
    "exact_match",
    "exact_match_scores",
    "lcs_length",
    "normalize_answer",
    "rouge",
    "rouge_pair",
    "rouge_tokens",
    "token_f1",
    "token_f1_scores",
    "tokenize_13a",
]
