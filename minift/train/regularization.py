"""Loss-side regularizers: label smoothing, L2 in the loss, R-Drop; loss functions that
wrap any objective so the trainer needs no new option for them.

Label smoothing (Szegedy et al. 2016): the target distribution puts 1 - eps on the right
class and spreads eps uniformly over all K classes,

    L = (1 - eps) * (-log p_y) + eps * mean_k (-log p_k),

so the model is never pushed toward infinite logit gaps (over-confidence).

L2 in the loss against decoupled decay (Loshchilov and Hutter 2019): adding
(lambda / 2) ||theta||^2 to the loss adds lambda theta to the gradient, which Adam then
divides by sqrt(v) like the rest of the gradient, so weights with large gradients get little
decay. AdamW instead shrinks theta by lr * lambda directly. With SGD the two are the same;
with Adam they differ, and after one step from the same point by exactly

    L2:      theta - lr * (g + lambda theta) / (|g + lambda theta| + eps)
    AdamW:   theta (1 - lr lambda) - lr * g / (|g| + eps)

(the first Adam step is m_hat / sqrt(v_hat) = g / |g|), which the tests check.

R-Drop (Liang et al. 2021): two forward passes with different dropout masks, the task loss
on both, plus alpha times the symmetric KL divergence between their predictions, so the
sub-networks that dropout samples agree:

    L = (CE(p1) + CE(p2)) / 2 + alpha * (KL(p1 || p2) + KL(p2 || p1)) / 2
"""

from __future__ import annotations

import torch

from minift.model import IGNORE_INDEX


def label_smoothed_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, eps: float, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean label-smoothed cross-entropy over the targets that are not ignore_index."""
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"label smoothing eps must be in [0, 1), got {eps}")
    logp = logits.float().reshape(-1, logits.size(-1)).log_softmax(dim=-1)
    targets = targets.reshape(-1)
    keep = targets != ignore_index
    logp, targets = logp[keep], targets[keep]
    nll = -logp.gather(1, targets[:, None]).squeeze(1)
    uniform = -logp.mean(dim=-1)
    return ((1 - eps) * nll + eps * uniform).mean()


def l2_penalty(model: torch.nn.Module, weight_decay: float) -> torch.Tensor:
    """(lambda / 2) * sum of squares of the trainable matrices (the decayed group)."""
    params = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    return 0.5 * weight_decay * sum((p * p).sum() for p in params)


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor, mask=None) -> torch.Tensor:
    """(KL(p_a || p_b) + KL(p_b || p_a)) / 2, averaged over the positions kept by mask."""
    la, lb = logits_a.float().log_softmax(-1), logits_b.float().log_softmax(-1)
    kl = 0.5 * ((la.exp() * (la - lb)).sum(-1) + (lb.exp() * (lb - la)).sum(-1))
    if mask is not None:
        return kl[mask].mean()
    return kl.mean()


def lm_loss_fn(label_smoothing: float = 0.0, l2: float = 0.0, r_drop: float = 0.0):
    """A trainer loss_fn for batches (inputs, targets) with any of the three regularizers.
    (Use it with TrainConfig(weight_decay=0.0) when comparing l2 against decoupled decay.)"""
    if r_drop < 0 or l2 < 0:
        raise ValueError(f"r_drop and l2 must be >= 0, got {r_drop}, {l2}")

    def loss_fn(model, batch):
        x, y = batch[0], batch[1]
        logits = model(x).logits
        loss = label_smoothed_cross_entropy(logits, y, label_smoothing)
        extras = {}
        if r_drop:
            second = model(x).logits  # a second dropout mask
            loss = 0.5 * (loss + label_smoothed_cross_entropy(second, y, label_smoothing))
            kl = symmetric_kl(logits, second, y != IGNORE_INDEX)
            loss = loss + r_drop * kl
            extras["kl"] = float(kl.detach())
        if l2:
            loss = loss + l2_penalty(model, l2)
        return loss, extras

    return loss_fn
