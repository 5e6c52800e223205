"""Classification metrics, written out: accuracy, precision / recall / F1, balanced accuracy,
the confusion matrix and Matthews correlation.

Every function takes the true labels and the predicted labels, as Python sequences or 1-D
NumPy arrays or torch tensors of integer class ids (argmax the logits first), and follows
scikit-learn's conventions exactly, so that its tests can compare against it:

- The classes are the sorted union of the labels seen in ``y_true`` and ``y_pred`` unless
  ``labels`` names them.
- A ratio whose denominator is 0 (the precision of a class never predicted, the recall of a
  class absent from ``y_true``) is ``zero_division`` (default 0.0), without a warning:
  scikit-learn's default also gives 0 but warns each time; here the convention is stated
  once, in this docstring.
- The confusion matrix has the true class on the rows and the predicted class on the
  columns.

Reference: Sokolova and Lapalme, "A systematic analysis of performance measures for
classification tasks", Information Processing and Management 45 (2009).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

AVERAGES = ("micro", "macro", "weighted", "binary", None)


def as_labels(values: Any, name: str) -> np.ndarray:
    """``values`` as a 1-D int64 array, or a ValueError naming ``name`` and the problem."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per example), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: a metric needs at least one example")
    if array.dtype.kind == "b":
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must hold integer class labels, got dtype {array.dtype} "
            "(take the argmax of logits or probabilities first)"
        )
    return array.astype(np.int64)


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = as_labels(y_true, "y_true"), as_labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise ValueError(
            f"y_true and y_pred have different lengths ({len(t)} and {len(p)}): "
            "each prediction must pair with one reference"
        )
    return t, p


def _labels(labels: Any, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    if labels is None:
        return np.unique(np.concatenate([t, p]))
    array = as_labels(labels, "labels")
    if len(np.unique(array)) != len(array):
        raise ValueError(f"labels has duplicates: {array.tolist()}")
    return array


def _full_matrix(t: np.ndarray, p: np.ndarray, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The confusion matrix over every label seen (in t, p or extra), and those labels."""
    universe = np.unique(np.concatenate([t, p, extra]))
    k = len(universe)
    ti, pi = np.searchsorted(universe, t), np.searchsorted(universe, p)
    counts = np.bincount(ti * k + pi, minlength=k * k).reshape(k, k)
    return counts, universe


def confusion_matrix(y_true: Any, y_pred: Any, labels: Any = None) -> np.ndarray:
    """C[i, j] = the number of examples of true class labels[i] predicted as labels[j].

    Rows are true classes, columns predicted classes (scikit-learn's layout). ``labels``
    (default: the sorted union of the labels seen) fixes the order and the set; an example
    whose true or predicted label is not in ``labels`` is left out, as scikit-learn does.
    """
    t, p = _pair(y_true, y_pred)
    chosen = _labels(labels, t, p)
    if labels is not None and not np.isin(t, chosen).any():
        raise ValueError("none of the given labels occurs in y_true")
    full, universe = _full_matrix(t, p, chosen)
    index = np.searchsorted(universe, chosen)
    return full[np.ix_(index, index)]


def accuracy(y_true: Any, y_pred: Any) -> float:
    """The fraction of examples predicted right: (1/n) sum_i [y_pred_i = y_true_i]."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def _divide(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, float(zero_division))
    np.divide(num, den, out=out, where=den != 0)
    return out


def precision_recall_f1(
    y_true: Any,
    y_pred: Any,
    *,
    average: str | None = "macro",
    labels: Any = None,
    pos_label: int = 1,
    zero_division: float = 0.0,
) -> tuple[Any, Any, Any]:
    """Precision, recall and F1, per class or averaged.

    For class k, with TP_k predicted k and truly k, P_k = #predicted k, T_k = #truly k:

        precision_k = TP_k / P_k     recall_k = TP_k / T_k
        F1_k = 2 precision_k recall_k / (precision_k + recall_k) = 2 TP_k / (P_k + T_k)

    (the last form is the one computed, as scikit-learn does; a 0 denominator gives
    ``zero_division``). ``average``:

    - None: the per-class arrays, in the order of ``labels`` (default: sorted union seen).
    - "macro": the unweighted mean over classes; every class counts the same.
    - "weighted": the mean weighted by support T_k (zero_division if every T_k is 0).
    - "micro": pool the counts first: sum TP_k / sum P_k and sum TP_k / sum T_k, and F1
      from those sums. Over all classes of a single-label problem, all three equal the
      accuracy.
    - "binary": the per-class scores of ``pos_label`` alone; at most two classes allowed.
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    t, p = _pair(y_true, y_pred)
    chosen = _labels(labels, t, p)
    if average == "binary":
        present = np.unique(np.concatenate([t, p]))
        if len(present) > 2:
            raise ValueError(
                f"average='binary' needs at most 2 classes, got {len(present)} "
                f"({present.tolist()}); choose micro, macro or weighted"
            )
        if pos_label not in present and len(present) == 2:
            raise ValueError(f"pos_label={pos_label} is not one of the labels {present.tolist()}")
        chosen = np.array([pos_label], dtype=np.int64)
    full, universe = _full_matrix(t, p, chosen)
    index = np.searchsorted(universe, chosen)
    tp = np.diag(full)[index]
    pred_sum = full.sum(axis=0)[index]
    true_sum = full.sum(axis=1)[index]
    if average == "micro":
        tp, pred_sum, true_sum = tp.sum(), pred_sum.sum(), true_sum.sum()
    precision = _divide(tp, pred_sum, zero_division)
    recall = _divide(tp, true_sum, zero_division)
    f1 = _divide(2 * tp, pred_sum + true_sum, zero_division)
    if average is None:
        return precision, recall, f1
    if average == "weighted":
        if true_sum.sum() == 0:
            return (float(zero_division),) * 3
        return tuple(float(np.average(x, weights=true_sum)) for x in (precision, recall, f1))
    return tuple(float(np.mean(x)) for x in (precision, recall, f1))


def precision(y_true: Any, y_pred: Any, **kwargs: Any) -> Any:
    """Precision TP / (TP + FP); see :func:`precision_recall_f1` for the options."""
    return precision_recall_f1(y_true, y_pred, **kwargs)[0]


def recall(y_true: Any, y_pred: Any, **kwargs: Any) -> Any:
    """Recall TP / (TP + FN); see :func:`precision_recall_f1` for the options."""
    return precision_recall_f1(y_true, y_pred, **kwargs)[1]


def f1(y_true: Any, y_pred: Any, **kwargs: Any) -> Any:
    """F1 = 2 TP / (2 TP + FP + FN); see :func:`precision_recall_f1` for the options."""
    return precision_recall_f1(y_true, y_pred, **kwargs)[2]


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """The mean of the per-class recalls, over the classes present in y_true.

        balanced accuracy = (1/K) sum_k TP_k / T_k

    A classifier that always predicts the majority class scores 1/K here, however
    imbalanced the data, where its accuracy is the majority's share (Brodersen et al.,
    "The balanced accuracy and its posterior distribution", ICPR 2010). A class that only
    appears in y_pred has no recall and is left out (scikit-learn warns there; this does
    not).
    """
    cm = confusion_matrix(y_true, y_pred)
    true_sum = cm.sum(axis=1)
    present = true_sum > 0
    return float(np.mean(np.diag(cm)[present] / true_sum[present]))


def matthews_corrcoef(y_true: Any, y_pred: Any) -> float:
    """Matthews correlation coefficient, multiclass (Gorodkin 2004, the R_K statistic).

    With C the confusion matrix, n = sum C, c = trace C (correct predictions),
    t_k = sum_j C[k, j] (truly k) and p_k = sum_i C[i, k] (predicted k):

        MCC = (c n - sum_k t_k p_k) / sqrt((n^2 - sum_k p_k^2) (n^2 - sum_k t_k^2))

    1 is perfect, 0 no better than chance, -1 (binary) always wrong. For two classes it
    is the Pearson correlation of the 0/1 labels (Matthews 1975). When a factor under the
    root is 0 (every true, or every predicted, label the same class) it is undefined and
    returned as 0, as scikit-learn does.

    Gorodkin, "Comparing two K-category assignments by a K-category correlation
    coefficient", Computational Biology and Chemistry 28 (2004).
    """
    cm = confusion_matrix(y_true, y_pred)
    t_sum = cm.sum(axis=1, dtype=np.float64)
    p_sum = cm.sum(axis=0, dtype=np.float64)
    n = t_sum.sum()
    correct = np.trace(cm, dtype=np.float64)
    cov_tp = correct * n - np.dot(t_sum, p_sum)
    cov_pp = n * n - np.dot(p_sum, p_sum)
    cov_tt = n * n - np.dot(t_sum, t_sum)
    if cov_pp * cov_tt == 0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_pp * cov_tt))
