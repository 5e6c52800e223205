"""Evaluation metrics, written out and checked against the references (scikit-learn).

- :mod:`minift.metrics.classification`: accuracy, precision / recall / F1 (micro, macro,
  weighted, per class), balanced accuracy, the confusion matrix, Matthews correlation.
- :mod:`minift.metrics.intervals`: standard errors, bootstrap intervals, the paired
  bootstrap and permutation test, and :func:`compare`, the one sentence every comparison
  of two models prints ("within noise" or "a real difference").
"""

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

__all__ = [
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
]
