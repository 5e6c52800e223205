"""Distillation losses on the inside of the network: hidden states and attention.

Shapes: hidden states (B, T, C); attention maps (B, H, Tq, Tk) as the model returns them
with output_attentions=True (rows are distributions over keys); ``mask`` (B, T) marks
the real tokens (1) against padding (0), and counts only real rows (query positions).

- Hidden states through a learned projection (TinyBERT, Jiao et al. 2020):
      L_hid = MSE(h_s W_h, h_t),  W_h: d_s x d_t, learned with the student,
  because a narrower student's states live in a smaller space.
- Cosine (DistilBERT, Sanh et al. 2019): L_cos = mean_t (1 - cos(h_s W_h, h_t)), which
  aligns the directions of the states and ignores their norms.
- Attention maps, MSE (TinyBERT): L_att = (1/H) sum_h MSE(A_s,h, A_t,h). TinyBERT's A is
  the matrix of attention scores *before* the softmax (masked entries set to zero); here A
  is the attention probabilities the model returns. We keep the probabilities on purpose:
  scores are unbounded and shift-invariant under the softmax (adding a constant to a row
  changes no output, yet is penalised by an MSE on scores), while probabilities are what
  the layer actually uses, lie in [0, 1], and are exactly zero at masked keys in both
  models, so no zeroing is needed. The price is scale: a probability MSE is small (rows
  sum to 1, so entries are ~1/Tk), so its weight must be larger than TinyBERT's 1 to
  matter next to the output loss.
- Attention distributions, KL (MiniLM, Wang et al. 2020): each row of a map is a
  distribution over keys, L_AT = mean over heads and queries of KL(A_t || A_s).
- Value relations (MiniLM): VR = softmax(V V^T / sqrt(d_k)) per head, the scaled dot
  products between the values of every pair of positions, L_VR = mean KL(VR_t || VR_s).
  Student and teacher may differ in width and heads: following MiniLMv2 (Wang et al.
  2021) the concatenated values of every head are re-split into the same number of
  relation heads R on both sides, so the relations always have the same shape.
When the student has fewer heads than the teacher, attention maps are compared through
a head map (student head i imitates teacher head head_map[i], e.g. the heads slicing
kept) or, without one, as maps averaged over heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from minift.distill.losses import masked_mean, upcast


class HiddenProjection(nn.Module):
    """W_h: a linear map from the student's width to the teacher's (no bias)."""

    def __init__(self, d_student: int, d_teacher: int, init: torch.Tensor | None = None):
        super().__init__()
        self.proj = nn.Linear(d_student, d_teacher, bias=False)
        with torch.no_grad():
            if init is not None:  # (d_teacher, d_student), e.g. the slicing basis
                self.proj.weight.copy_(init)
            elif d_student == d_teacher:
                self.proj.weight.copy_(torch.eye(d_teacher))
            else:
                nn.init.normal_(self.proj.weight, std=d_student**-0.5)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(h)


def _project(h: torch.Tensor, projection: nn.Module | None, target: torch.Tensor):
    h = projection(h) if projection is not None else h
    if h.shape != target.shape:
        raise ValueError(
            f"student states {tuple(h.shape)} and teacher states {tuple(target.shape)} "
            "differ: pass a HiddenProjection from the student's width to the teacher's"
        )
    return h


def hidden_mse(
    student_h: torch.Tensor,
    teacher_h: torch.Tensor,
    projection: nn.Module | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """mean over real tokens and channels of (h_s W_h - h_t)^2."""
    h = _project(student_h, projection, teacher_h)
    return masked_mean((upcast(h) - upcast(teacher_h.detach())).pow(2).mean(-1), mask)


def cosine_loss(
    student_h: torch.Tensor,
    teacher_h: torch.Tensor,
    projection: nn.Module | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """mean over real tokens of 1 - cos(h_s W_h, h_t)."""
    h = _project(student_h, projection, teacher_h)
    cos = F.cosine_similarity(upcast(h), upcast(teacher_h.detach()), dim=-1, eps=1e-8)
    return masked_mean(1.0 - cos, mask)


def match_heads(
    student_att: torch.Tensor, teacher_att: torch.Tensor, head_map: list[int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention maps with the same number of heads (see the module docstring)."""
    hs, ht = student_att.size(1), teacher_att.size(1)
    if head_map is not None:
        bad = [h for h in head_map if not 0 <= h < ht]
        if len(head_map) != hs or bad:
            raise ValueError(
                f"head map {head_map} must give one teacher head in 0..{ht - 1} "
                f"for each of the student's {hs} heads"
            )
        return student_att, teacher_att[:, list(head_map)]
    if hs == ht:
        return student_att, teacher_att
    return student_att.mean(1, keepdim=True), teacher_att.mean(1, keepdim=True)


def _row_mask(mask: torch.Tensor | None, att: torch.Tensor) -> torch.Tensor | None:
    """(B, T) token mask -> (B, H, Tq) mask of the query rows to count."""
    if mask is None:
        return None
    return mask[:, None, -att.size(2) :].expand(att.shape[:3])


def attention_mse(
    student_att: torch.Tensor,
    teacher_att: torch.Tensor,
    mask: torch.Tensor | None = None,
    head_map: list[int] | None = None,
) -> torch.Tensor:
    """TinyBERT's attention loss on probabilities (see the module docstring for why not
    pre-softmax scores): mean over heads, real query rows and keys of (A_s - A_t)^2."""
    s, t = match_heads(student_att, teacher_att, head_map)
    per_row = (upcast(s) - upcast(t.detach())).pow(2).mean(-1)
    return masked_mean(per_row, _row_mask(mask, s))


def distribution_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row for probability rows (..., K), with 0 log 0 = 0.

    q is clamped away from zero only where p is zero too (masked keys), so the gradient
    there is zero rather than 0/0.
    """
    q = upcast(q).clamp_min(1e-30)
    p = upcast(p)
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)


def attention_kl(
    student_att: torch.Tensor,
    teacher_att: torch.Tensor,
    mask: torch.Tensor | None = None,
    head_map: list[int] | None = None,
) -> torch.Tensor:
    """MiniLM: mean over heads and real query rows of KL(A_t,row || A_s,row)."""
    s, t = match_heads(student_att, teacher_att, head_map)
    return masked_mean(distribution_kl(t.detach(), s), _row_mask(mask, s))


def value_relation(
    values: torch.Tensor,
    n_relation_heads: int,
    mask: torch.Tensor | None = None,
    causal: bool = True,
) -> torch.Tensor:
    """softmax(V_r V_r^T / sqrt(d_r)) for R relation heads; values (B, T, C) -> (B, R, T, T).

    Keys that are padding (mask 0), or in the future of a causal model's query, get
    probability zero, as in the attention they stand in for.
    """
    B, T, C = values.shape
    if C % n_relation_heads:
        raise ValueError(f"values of width {C} do not split into {n_relation_heads} relation heads")
    d = C // n_relation_heads
    v = upcast(values).view(B, T, n_relation_heads, d).transpose(1, 2)  # (B, R, T, d)
    scores = v @ v.transpose(-1, -2) / math.sqrt(d)
    allowed = torch.ones(T, T, dtype=torch.bool, device=values.device)
    if causal:
        allowed = allowed.tril()
    allowed = allowed[None, None]
    if mask is not None:
        allowed = allowed & mask.bool()[:, None, None, :]
    # A row with no allowed key (a padded query under left padding) keeps its diagonal.
    allowed = allowed | torch.eye(T, dtype=torch.bool, device=values.device)
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1)


def value_relation_kl(
    student_values: torch.Tensor,
    teacher_values: torch.Tensor,
    n_relation_heads: int,
    mask: torch.Tensor | None = None,
    causal: bool = True,
) -> torch.Tensor:
    """MiniLM's value-relation transfer: mean over relation heads and real rows of
    KL(VR_t || VR_s)."""
    vt = value_relation(teacher_values.detach(), n_relation_heads, mask, causal)
    vs = value_relation(student_values, n_relation_heads, mask, causal)
    return masked_mean(distribution_kl(vt, vs), _row_mask(mask, vs))


def block_values(block: nn.Module, block_input: torch.Tensor) -> torch.Tensor:
    """The values (B, T, C) a block's attention computes from its input (B, T, C).

    hidden_states[l] is the input of block l, so this recomputes ln_1 and the value third
    of c_attn on it; no hook in the model is needed and gradients flow as in the forward.
    """
    attn = block.attn
    width = attn.n_head * attn.head_dim
    return attn.c_attn(block.ln_1(block_input))[..., 2 * width :]
