"""DANN through the transformer: the domain classifier reads the fine-tuned pooled feature.

Ganin et al. (2016) train the feature extractor G_f itself against the domain classifier;
here G_f is the whole backbone (its LoRA factors, or all its weights) and the feature is
the classifier's pooled hidden state h = pool(backbone(x)) (minift.model.heads):

    L = CE(G_y(h_s), y_s)  +  BCE(G_d(R_lambda(h_s)), 0) + BCE(G_d(R_lambda(h_t)), 1)

with one labelled source batch and one unlabelled target batch per step, G_d a small MLP
(a "domain head") and R_lambda the gradient-reversal layer (minift.model.grad_reverse):
the domain head learns to tell the domains apart, the backbone receives -lambda times its
gradient and learns to hide the domain. lambda follows DANN's ramp
lambda_p = lambda (2 / (1 + exp(-10 p)) - 1) over the training progress p, so the
adversary first learns something worth unlearning.

The task half is exactly the plain fine-tuning objective (same rows, same loss): with
lambda = 0 the reversed gradient is zero and the backbone and task head take the same
steps as fine-tuning without an adversary (the domain head still trains, apart; with a
global gradient-norm clip its gradient would enter the norm, so that equality holds
without clipping). This module only builds the objective; the job that adds the domain
head and runs the one Trainer is minift.recipes.adapt_backbone.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from minift.data.batching import classification_batch
from minift.errors import UserError
from minift.model.grad_reverse import dann_lambda, grad_reverse
from minift.seeding import sample_rows
from minift.train.objectives import TaskObjective

TARGET_STREAM = 1  # the target rows' sampling stream, apart from the source rows' (0)


class DomainHead(nn.Module):
    """G_d: Linear + ReLU + Linear to one logit (source 0, target 1)."""

    def __init__(self, n_embd: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_embd, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).squeeze(-1)


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Losses in float32 at least (as SequenceClassifier computes them), float64 kept."""
    return logits if logits.dtype == torch.float64 else logits.float()


def dann_objective(
    objective: TaskObjective,
    target_ids: list[list[int]],
    pad: int,
    max_len: int,
    batch_size: int,
    seed: int,
    steps: int,
    lambd: float = 1.0,
) -> TaskObjective:
    """``objective`` (a classification objective) + the domain loss on a target batch.

    The model must be a SequenceClassifier with a ``domain_head`` (DomainHead). Each batch
    carries its ``progress`` p = step / (steps - 1), so lambda_p is a function of the step
    alone and a resumed run computes the same losses.
    """
    if lambd < 0:
        raise UserError(f"the reversal weight lambda must be >= 0, got {lambd}")
    if not target_ids:
        raise UserError("DANN needs unlabelled target texts; none were given")
    if steps < 1:
        raise UserError(f"DANN needs steps >= 1, got {steps}")

    def batch_fn(step: int, micro: int) -> dict:
        rows = sample_rows(len(target_ids), batch_size, seed, step, micro, TARGET_STREAM).tolist()
        target = classification_batch([target_ids[i] for i in rows], None, pad, max_len)
        return {
            "source": objective.batch_fn(step, micro),
            "target_idx": target["idx"],
            "target_mask": target["attention_mask"],
            "progress": step / max(1, steps - 1),
        }

    def loss_fn(model, batch: dict):
        src = batch["source"]
        h_s = model.features(src["idx"], attention_mask=src["attention_mask"])
        task_loss = F.cross_entropy(_upcast(model.head(model.dropout(h_s))), src["labels"])
        h_t = model.features(batch["target_idx"], attention_mask=batch["target_mask"])
        lam = dann_lambda(batch["progress"], lambd)
        d_logits = _upcast(model.domain_head(grad_reverse(torch.cat([h_s, h_t]), lam)))
        d_true = torch.cat([torch.zeros(len(h_s)), torch.ones(len(h_t))]).to(d_logits.device)
        domain_loss = F.binary_cross_entropy_with_logits(d_logits, d_true)
        with torch.no_grad():
            domain_acc = ((d_logits > 0).float() == d_true).float().mean().item()
        extra = {"task_loss": task_loss.item(), "domain_loss": domain_loss.item(),
                 "domain_accuracy": domain_acc, "lambda": lam}  # fmt: skip
        return task_loss + domain_loss, extra

    return objective._replace(batch_fn=batch_fn, loss_fn=loss_fn, train_set=None)
