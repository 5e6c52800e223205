"""Unsupervised domain adaptation: the target domain, the methods, no job code.

- domains:       the embedded shift (docstrings -> code comments, stdlib-package-comments),
                 reading a user's unlabelled target text
- distance:      the proxy A-distance between two domains' features (Ben-David et al.)
- dann:          domain-adversarial training through gradient reversal (Ganin et al. 2016)
                 on frozen features; dann_finetune: the same through the fine-tuned
                 transformer (the objective; the job is minift.recipes.adapt_backbone)
- self_training: confidence-thresholded pseudo-labels, class-capped (Lee 2013; Zou et al.)
- dapt:          continued pretraining on target text (Gururangan et al. 2020)

The gradient-reversal layer itself is in the trunk (minift.model.grad_reverse). The job
is minift.recipes.adapt (`minift adapt`), the lesson is 21.
"""

from minift.adapt.dann import DANN, DANNConfig, dann_features, dann_predict, train_dann
from minift.adapt.dann_finetune import DomainHead, dann_objective
from minift.adapt.dapt import continue_pretraining
from minift.adapt.distance import proxy_a_distance
from minift.adapt.domains import comment_blocks, read_target_text, stdlib_package_comments_task
from minift.adapt.self_training import confident_rows, pseudo_labels, self_train

__all__ = [
    "DANN", "DANNConfig", "DomainHead", "comment_blocks", "confident_rows",
    "continue_pretraining", "dann_features", "dann_objective",
    "dann_predict", "proxy_a_distance", "pseudo_labels", "read_target_text", "self_train",
    "stdlib_package_comments_task", "train_dann",
]  # fmt: skip
