"""The precision-recall curve of one class, and its average precision.

Sort the rows by the score for class c, highest first. Predicting "c" for the rows whose
score is at least a threshold t gives, at each distinct score t,

    precision(t) = TP(t) / (TP(t) + FP(t)),    recall(t) = TP(t) / P

(P the rows truly of class c). Accuracy and the ROC curve both credit the true negatives,
which a rare class has in abundance; precision does not, so this curve shows what a
classifier does for the minority (Davis and Goadrich 2006, "The relationship between
precision-recall and ROC curves"; Saito and Rehmsmeier 2015). Its summary, the average
precision, is the precision at each recall step weighted by the step:

    AP = sum_n (R_n - R_{n-1}) P_n

(the step-wise sum, not a trapezoid, which overstates a curve between its points). The
conventions match scikit-learn's ``precision_recall_curve`` and
``average_precision_score`` (since 1.1): one point per distinct score, recall
decreasing, ending at (precision 1, recall 0).
"""

from __future__ import annotations

import torch

from minift.errors import UserError


def precision_recall_curve(
    scores: torch.Tensor, positive: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(precision, recall, thresholds), from the highest recall to (1, 0)."""
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    pos = torch.as_tensor(positive, dtype=torch.bool).flatten()
    if len(s) != len(pos) or len(s) == 0:
        raise UserError(f"need as many scores as labels (> 0), got {len(s)} and {len(pos)}")
    if not pos.any():
        raise UserError("no positive row: the recall of the class is undefined")
    order = torch.argsort(s, descending=True, stable=True)
    s, pos = s[order], pos[order].double()
    # one point per distinct score: the last row of each run of equal scores
    last = torch.nonzero(torch.diff(s, append=s[-1:] - 1) != 0).flatten()
    tp = torch.cumsum(pos, 0)[last]
    predicted = (last + 1).double()
    precision, recall = tp / predicted, tp / pos.sum()
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    return (
        torch.cat([precision.flip(0), one]),
        torch.cat([recall.flip(0), zero]),
        s[last].flip(0),
    )


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n over the curve's points."""
    precision, recall, _ = precision_recall_curve(scores, positive)
    return float(-(torch.diff(recall) * precision[:-1]).sum())
