"""The student: its shape within a parameter budget, and the weights it starts from.

    shape = student_shape(teacher, budget=0.25)           # the widest MLP within budget
    student, info = make_student(teacher, "slice", shape, calibration)

``slice`` cuts the student out of the teacher (minift.distill.slicing: the width kept in
the teacher's principal directions, the heads and neurons that matter most on calibration
batches); ``scratch`` is a fresh model of the same shape; ``every-k`` keeps the teacher's
width and every k-th block (DistilBERT, Sanh et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minift.distill.loop import count_params
from minift.distill.students import (
    backbone_of,
    every_kth_student,
    narrow_student,
    scratch_student,
    uniform_layer_map,
)
from minift.model import GPT, GPTConfig

INITS = ("slice", "scratch", "every-k")


@dataclass
class StudentShape:
    n_layer: int
    n_embd: int
    n_head: int
    n_inner: int
    layer_map: list[int]  # which teacher layer each student layer imitates (and starts from)

    def config(self, teacher_config: GPTConfig) -> GPTConfig:
        return GPTConfig.from_dict(
            {
                **teacher_config.to_dict(),
                "n_layer": self.n_layer,
                "n_embd": self.n_embd,
                "n_head": self.n_head,
                "n_inner": self.n_inner,
                "norm": "rmsnorm",
            }
        )


def student_shape(
    teacher: torch.nn.Module,
    budget: float = 0.25,
    n_layer: int | None = None,
    n_head: int | None = None,
    layer_map: list[int] | None = None,
) -> StudentShape:
    """Half the teacher's blocks and heads (width = heads x head_dim) and the widest MLP
    (at most 4 x width) that keeps the student within ``budget`` x the teacher's
    parameters, task head included. The student's blocks start from the teacher's first
    ones (layer map 0, 1, ..., M): dropping a block the next one was trained to read
    costs far more than dropping the last blocks (lesson 15 measures both)."""
    gpt = backbone_of(teacher)
    tc = gpt.config
    n_layer = n_layer or max(1, tc.n_layer // 2)
    n_head = n_head or max(1, tc.n_head // 2)
    n_embd = n_head * tc.head_dim
    layer_map = layer_map or list(range(n_layer + 1))
    target = budget * count_params(teacher)
    head = count_params(teacher) - count_params(gpt)  # a task head scales with the width
    head = head * n_embd // tc.n_embd

    def size(inner: int) -> int:
        shape = StudentShape(n_layer, n_embd, n_head, inner, layer_map)
        return GPT(shape.config(tc)).num_params() + head

    best = None
    for inner in range(4 * n_embd, 0, -8 if n_embd >= 8 else -1):
        if size(inner) <= target:
            best = inner
            break
    if best is None:
        raise ValueError(
            f"no {n_layer}-block student of width {n_embd} fits {budget:.0%} of the teacher's "
            f"{count_params(teacher):,} parameters (its embeddings alone take "
            f"{tc.vocab_size * n_embd:,}); use fewer heads or blocks"
        )
    return StudentShape(n_layer, n_embd, n_head, best, layer_map)


def lm_calibration(batch_fn, n_batches: int = 8) -> list:
    """(idx, None) batches from a language-modelling batch_fn."""
    out = []
    for i in range(n_batches):
        b = batch_fn(1_000_000 + i, 0)
        out.append((b["idx"] if isinstance(b, dict) else b[0], None))
    return out


def make_student(
    teacher: torch.nn.Module, init: str, shape: StudentShape, calibration=None, seed: int = 0
):
    """(student, SliceInfo or None): "slice" (narrow_student), "scratch", or "every-k"
    (the teacher's width, the blocks of the layer map: DistilBERT)."""
    if init == "slice":
        if calibration is None:
            raise ValueError("init='slice' needs calibration batches")
        return narrow_student(
            teacher, calibration, shape.n_embd, shape.n_head, shape.n_inner, shape.layer_map
        )
    if init == "scratch":
        return scratch_student(
            teacher, shape.n_layer, shape.n_embd, shape.n_head, shape.n_inner, seed
        ), None
    if init == "every-k":
        n = backbone_of(teacher).config.n_layer
        k = n // shape.n_layer
        blocks = [t - 1 for t in uniform_layer_map(shape.n_layer, n)[1:]]
        return every_kth_student(teacher, k, blocks), None
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


__all__ = ["INITS", "StudentShape", "lm_calibration", "make_student", "student_shape"]
