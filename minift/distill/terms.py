"""One batch's distillation loss: run the student, run the frozen teacher once, add the
weighted terms (minift.distill.losses and minift.distill.features).

``forward`` runs a GPT or a SequenceClassifier on any batch kind of the loop and returns
logits, labels, the token mask, hidden states and attention maps, so one loss serves
language models and classifiers alike. ``Pupil`` is what the Trainer optimises: the
student and the projection W_h; the teacher is held outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from minift.distill.features import (
    attention_kl,
    attention_mse,
    block_values,
    cosine_loss,
    hidden_mse,
    value_relation_kl,
)
from minift.distill.losses import divergence, hard_label_loss
from minift.distill.students import backbone_of
from minift.model.gpt import IGNORE_INDEX
from minift.model.heads import SequenceClassifier, pool_hidden

if TYPE_CHECKING:
    from minift.distill.config import DistillConfig


@dataclass
class Outputs:
    logits: torch.Tensor  # (B, T, V) for a language model, (B, labels) for a classifier
    labels: torch.Tensor | None  # logits.shape[:-1]; IGNORE_INDEX = not counted
    token_mask: torch.Tensor | None  # (B, T) real tokens, for the feature losses
    hidden_states: tuple[torch.Tensor, ...] | None
    attentions: tuple[torch.Tensor, ...] | None


def forward(model: nn.Module, batch, hidden: bool = False, attentions: bool = False) -> Outputs:
    """Run a GPT or SequenceClassifier on a batch of any of the loop's kinds:
    (x, y) windows, {"idx", "targets"[, "attention_mask"]} or {"idx", "attention_mask",
    "labels"} (classification)."""
    if isinstance(batch, (tuple, list)):
        batch = {"idx": batch[0], "targets": batch[1]}
    mask = batch.get("attention_mask")
    if isinstance(model, SequenceClassifier):
        out = model.backbone(
            batch["idx"],
            attention_mask=mask,
            output_hidden_states=hidden,
            output_attentions=attentions,
            compute_logits=False,
        )
        logits = model.head(model.dropout(pool_hidden(out.last_hidden, mask, model.pooling)))
        labels = batch.get("labels")
    else:
        out = model(
            batch["idx"],
            attention_mask=mask,
            output_hidden_states=hidden,
            output_attentions=attentions,
        )
        logits, labels = out.logits, batch.get("targets")
    return Outputs(logits, labels, mask, out.hidden_states, out.attentions)


class Pupil(nn.Module):
    """What the Trainer optimises: the student and the hidden-state projection W_h."""

    def __init__(self, student: nn.Module, projection: nn.Module | None = None) -> None:
        super().__init__()
        self.student = student
        self.projection = projection


def _centred(h: torch.Tensor, layernorm: bool) -> torch.Tensor:
    # A LayerNorm teacher's next block ignores each state's mean, and a sliced student
    # cannot represent it: match what the teacher's LayerNorms actually read.
    return h - h.mean(-1, keepdim=True) if layernorm else h


class DistillLoss:
    """loss_fn(pupil, batch) for the Trainer; see the module docstring."""

    def __init__(self, teacher, config: DistillConfig, layer_map, head_maps=None) -> None:
        self.teacher, self.config = teacher, config
        self.layer_map, self.head_maps = layer_map, head_maps
        self.teacher_layernorm = backbone_of(teacher).config.norm == "layernorm"

    def __call__(self, pupil: Pupil, batch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        hid, att = cfg.needs_hidden, cfg.needs_attentions
        s = forward(pupil.student, batch, hid, att)
        labels = s.labels
        unlabeled = batch.get("unlabeled") if isinstance(batch, dict) else None
        if labels is not None and unlabeled is not None and bool(unlabeled.any()):
            # Rows without a true label (transfer-set texts, the student's own samples)
            # count in the teacher's terms only.
            labels = labels.masked_fill(unlabeled.view(-1, *[1] * (labels.dim() - 1)), IGNORE_INDEX)
        parts: dict[str, torch.Tensor] = {}
        if cfg.alpha < 1.0 and labels is not None and bool((labels != IGNORE_INDEX).any()):
            parts["hard"] = (1.0 - cfg.alpha, hard_label_loss(s.logits, labels))
        if cfg.uses_teacher:
            with torch.no_grad():  # the teacher's outputs, once per batch
                t = forward(self.teacher, batch, hid, att)
            parts.update(self.teacher_terms(pupil, s, t))
        if not parts:
            raise ValueError("nothing to learn from: alpha < 1 needs labels, alpha > 0 a teacher")
        loss = sum(w * value for w, value in parts.values())
        return loss, {k: float(v.detach()) for k, (_, v) in parts.items()}

    def teacher_terms(self, pupil: Pupil, s: Outputs, t: Outputs) -> dict[str, tuple]:
        cfg, lm = self.config, self.layer_map
        mask = t.token_mask
        parts = {}
        if cfg.alpha > 0:
            rows = None if s.labels is None else s.labels != IGNORE_INDEX
            soft = divergence(cfg.divergence, s.logits, t.logits, rows, cfg.temperature, cfg.beta)
            parts["soft"] = (cfg.alpha, soft)
        M = len(lm) - 1
        if cfg.hidden > 0:
            losses = [
                hidden_mse(
                    s.hidden_states[m],
                    _centred(t.hidden_states[lm[m]], self.teacher_layernorm),
                    pupil.projection,
                    mask,
                )
                for m in range(M + 1)
            ]
            parts["hidden"] = (cfg.hidden, sum(losses) / len(losses))
        if cfg.cosine > 0:
            target = _centred(t.hidden_states[lm[M]], self.teacher_layernorm)
            parts["cosine"] = (
                cfg.cosine,
                cosine_loss(s.hidden_states[M], target, pupil.projection, mask),
            )
        heads = self.head_maps or [None] * M
        if cfg.attention > 0:
            losses = [
                attention_mse(s.attentions[m - 1], t.attentions[lm[m] - 1], mask, heads[m - 1])
                for m in range(1, M + 1)
            ]
            parts["attention"] = (cfg.attention, sum(losses) / len(losses))
        if cfg.attention_kl > 0:
            parts["attention_kl"] = (
                cfg.attention_kl,
                attention_kl(s.attentions[M - 1], t.attentions[lm[M] - 1], mask, heads[M - 1]),
            )
        if cfg.value_kl > 0:
            sg, tg = backbone_of(pupil.student), backbone_of(self.teacher)
            vs = block_values(sg.transformer.h[M - 1], s.hidden_states[M - 1])
            with torch.no_grad():
                vt = block_values(tg.transformer.h[lm[M] - 1], t.hidden_states[lm[M] - 1])
            R = cfg.relation_heads or sg.config.n_head
            parts["value_kl"] = (
                cfg.value_kl,
                value_relation_kl(vs, vt, R, mask, causal=sg.config.causal),
            )
        return parts
