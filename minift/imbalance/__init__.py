"""Imbalanced classes: a skewed task, and the remedies, no job code.

- skew:     a task's training rows cut to a geometric profile (e.g. 20:1)
- losses:   class-weighted cross-entropy, focal loss (Lin et al. 2017), logit adjustment
            (Menon et al. 2021), the class priors and weights they use
- sampling: random over- and under-sampling, seeded
- smote:    SMOTE on pooled features (Chawla et al. 2002)
- pr_curve: the precision-recall curve of one class and its average precision
- balance:  one name per remedy, and a linear head fitted on frozen features with it

The jobs are minift.recipes.balance (`minift finetune --balance`) and lesson 22.
"""

from minift.imbalance.balance import (
    BALANCES,
    balanced_loss,
    check_balance,
    fit_head,
    resample,
)
from minift.imbalance.losses import (
    adjust_logits,
    class_counts,
    class_priors,
    class_weights,
    focal_loss,
    logit_adjusted_loss,
    weighted_cross_entropy,
)
from minift.imbalance.pr_curve import average_precision, precision_recall_curve
from minift.imbalance.sampling import (
    oversample_indices,
    random_oversample,
    undersample_indices,
)
from minift.imbalance.skew import skew_counts, skew_task
from minift.imbalance.smote import interpolate, nearest_neighbours, smote

__all__ = [
    "BALANCES", "adjust_logits", "average_precision", "precision_recall_curve", "balanced_loss", "check_balance", "class_counts",
    "class_priors", "class_weights", "fit_head", "focal_loss", "interpolate",
    "logit_adjusted_loss", "nearest_neighbours", "oversample_indices", "random_oversample",
    "resample", "skew_counts", "skew_task", "smote", "undersample_indices",
    "weighted_cross_entropy",
]  # fmt: skip
