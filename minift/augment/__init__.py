"""Data augmentation for text classification: the operations, no job code.

- eda:        synonym replacement (embedding neighbours), random insertion, swap and
              deletion (Wei and Zou 2019)
- paraphrase: rewrites sampled from the base model, the offline stand-in for
              back-translation
- mixup:      convex combinations of pooled features and their labels (Zhang et al. 2018;
              Guo et al. 2019)

Lesson 23 measures them with 10%, 25% and 100% of the training rows.
"""

from minift.augment.eda import (
    OPERATIONS,
    SynonymTable,
    eda,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)
from minift.augment.mixup import mix_batch, train_head
from minift.augment.paraphrase import paraphrase

__all__ = [
    "OPERATIONS", "SynonymTable", "eda", "mix_batch", "paraphrase", "random_deletion",
    "random_insertion", "random_swap", "synonym_replacement", "train_head",
]  # fmt: skip
