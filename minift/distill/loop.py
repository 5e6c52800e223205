"""The distillation loop: minift.train.Trainer with a teacher in the loss.

    for each batch:
        teacher outputs  <- teacher(batch)      once, frozen, eval mode, no grad
        student outputs  <- student(batch)
        loss = alpha * D(student || teacher logits) + (1 - alpha) * CE(student, labels)
             + the weighted feature losses (hidden states, attention, value relations)

Only the student (and, for the hidden-state losses, the projection W_h) is optimised:
they are wrapped in one module (``Pupil``) that the Trainer trains, with ``config.train``
(the objective names the metric to follow); the teacher is held outside it, so no
optimizer ever sees its parameters. The teacher's requires_grad flags and train/eval mode
are restored afterwards; its weights are never written.

The same loop distils a language model (batches of token windows, logits over the
vocabulary at every position) and a fine-tuned classifier (batches of texts, logits over
the labels), because both go through one ``forward`` that returns logits, labels, the
token mask, hidden states and attention maps. Batches come from
minift.distill.objectives; a batch may mark rows ``unlabeled`` (B,) whose labels are not
ground truth (transfer-set texts, the student's own samples): they get no hard loss.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch.nn as nn

from minift.distill.config import DistillConfig
from minift.distill.features import HiddenProjection
from minift.distill.students import (
    SliceInfo,
    backbone_of,
    check_layer_map,
    check_same_vocabulary,
    uniform_layer_map,
)
from minift.distill.terms import DistillLoss, Outputs, Pupil, forward
from minift.model.params import count_parameters
from minift.train import Trainer

__all__ = [
    "DistillConfig",
    "DistillLoss",
    "DistillResult",
    "Outputs",
    "Pupil",
    "distill",
    "forward",
]


@dataclass
class DistillResult:
    metric_name: str
    metric: float
    val_loss: float
    history: list[dict]
    seconds: float
    student_params: int
    teacher_params: int
    config: dict
    student: nn.Module | None = None

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("student")
        d.pop("history")
        return d


def count_params(model: nn.Module) -> int:
    return count_parameters(model)[1]


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode without gradients for the block, then as it was."""
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)


def distill(
    teacher: nn.Module,
    student: nn.Module,
    objective,
    config: DistillConfig | None = None,
    init: SliceInfo | None = None,
) -> DistillResult:
    """Train ``student`` in place on ``objective`` (minift.distill.objectives.Objective) with
    ``teacher`` frozen. ``init`` (from narrow_student) starts W_h at the slicing basis and
    pairs attention heads with the teacher heads the student kept."""
    config = config or DistillConfig()
    check_same_vocabulary(teacher, student)
    tg, sg = backbone_of(teacher), backbone_of(student)
    n_s, n_t = sg.config.n_layer, tg.config.n_layer
    layer_map = config.layer_map or (init.layer_map if init else uniform_layer_map(n_s, n_t))
    layer_map = check_layer_map(layer_map, n_s, n_t)
    if config.needs_attentions and not sg.config.causal == tg.config.causal:
        raise ValueError("attention transfer needs teacher and student of the same kind")
    head_maps = init.head_maps if init is not None and init.layer_map == layer_map else None
    projection = None
    if config.hidden > 0 or config.cosine > 0:
        basis = init.basis if init is not None else None
        projection = HiddenProjection(sg.config.n_embd, tg.config.n_embd, basis)
        projection.to(sg.lm_head.weight.device)
    with frozen(teacher):
        trainer = Trainer(
            Pupil(student, projection),
            replace(config.train, monitor=objective.monitor, mode=objective.mode),
            objective.batch_fn,
            DistillLoss(teacher, config, layer_map, head_maps),
            eval_fn=lambda p: objective.eval_fn(p.student),
        )
        t0 = time.perf_counter()
        result = trainer.fit()
        seconds = time.perf_counter() - t0
    final = result.history[-1]
    return DistillResult(
        metric_name=objective.monitor,
        metric=final.get(objective.monitor, float("nan")),
        val_loss=final.get("val_loss", float("nan")),
        history=result.history,
        seconds=seconds,
        student_params=count_params(student),
        teacher_params=count_params(teacher),
        config={**asdict(config), "layer_map": layer_map},
        student=student.eval(),
    )
