"""Evaluation metrics, written out and checked against the references (scikit-learn,
sacrebleu, rouge-score).

- :mod:`minift.metrics.classification`: accuracy, precision / recall / F1 (micro, macro,
  weighted, per class), balanced accuracy, the confusion matrix, Matthews correlation.
- :mod:`minift.metrics.intervals`: standard errors, bootstrap intervals, the paired
  bootstrap and permutation test, and :func:`compare`, the one sentence every comparison
  of two models prints ("within noise" or "a real difference").
- :mod:`minift.metrics.proportions`: the Wilson score interval of an accuracy.
- :mod:`minift.metrics.text`: the text metrics in one namespace: exact match and token F1
  (:mod:`~minift.metrics.squad`), corpus BLEU (:mod:`~minift.metrics.bleu`), chrF
  (:mod:`~minift.metrics.chrf`), ROUGE (:mod:`~minift.metrics.rouge`).
- :mod:`minift.metrics.lm`: perplexity and bits per byte (tokenizer-independent).
- :mod:`minift.metrics.calibration`: expected calibration error, reliability diagrams,
  the Brier score.
"""

from minift.metrics.calibration import (
    Reliability,
    brier_score,
    calibration_from_probs,
    expected_calibration_error,
    reliability,
)
from minift.metrics.classification import (
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    f1,
    matthews_corrcoef,
    precision,
    precision_recall_f1,
    recall,
)
from minift.metrics.intervals import (
    Comparison,
    Estimate,
    accuracy_se,
    bootstrap_ci,
    compare,
    mean_se,
    paired_bootstrap,
    permutation_test,
)
from minift.metrics.lm import LMStatistics, bits_per_byte, lm_statistics, perplexity
from minift.metrics.proportions import wilson_interval
from minift.metrics.text import (
    BLEUScore,
    bleu,
    bleu_interval,
    chrf,
    exact_match,
    exact_match_scores,
    rouge,
    token_f1,
    token_f1_scores,
)

__all__ = [
    "BLEUScore",
    "LMStatistics",
    "Reliability",
    "bits_per_byte",
    "bleu",
    "bleu_interval",
    "brier_score",
    "calibration_from_probs",
    "chrf",
    "exact_match",
    "exact_match_scores",
    "expected_calibration_error",
    "lm_statistics",
    "perplexity",
    "reliability",
    "rouge",
    "token_f1",
    "token_f1_scores",
    "Comparison",
    "Estimate",
    "accuracy",
    "accuracy_se",
    "balanced_accuracy",
    "bootstrap_ci",
    "compare",
    "confusion_matrix",
    "f1",
    "matthews_corrcoef",
    "mean_se",
    "paired_bootstrap",
    "permutation_test",
    "precision",
    "precision_recall_f1",
    "recall",
    "wilson_interval",
]
