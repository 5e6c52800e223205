"""Distillation losses on the outputs: the student matches the teacher's distributions.

Every function takes student and teacher logits of the same shape (..., V), where V is a
vocabulary or a set of labels, and an optional ``mask`` (...) of the rows to count
(1 = count, 0 = skip: padding, prompt tokens); the result is the mean over counted rows.
Teacher logits are treated as constants (computed under no_grad by the loop).

- Soft targets (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural
  Network"): p_t = softmax(z_t / T), p_s = softmax(z_s / T),

      L_soft = T^2 KL(p_t || p_s) = T^2 sum_i p_t,i (log p_t,i - log p_s,i)

  A temperature T > 1 flattens both distributions so that the small probabilities the
  teacher gives wrong answers (its "dark knowledge") carry signal. The gradient with
  respect to z_s is T (p_s - p_t), about 1/T of the hard loss's, hence the T^2 that keeps
  the two on the same scale when T changes. Mixed with the hard labels:

      L = alpha L_soft + (1 - alpha) CE(z_s, y)

- Forward KL(p_t || p_s) (T = 1) is mean-seeking: the student spreads mass over every
  mode of the teacher. Reverse KL(p_s || p_t) is mode-seeking: the student may drop modes
  but must not put mass where the teacher puts none, which suits a small generative
  student that cannot cover all modes (MiniLLM, Gu et al. 2024).
- The generalized Jensen-Shannon divergence (GKD, Agarwal et al. 2024), with the mixture
  m = beta p_t + (1 - beta) p_s,

      JSD(beta) = beta KL(p_t || m) + (1 - beta) KL(p_s || m)

  As beta -> 0, JSD(beta) / beta -> KL(p_t || p_s); as beta -> 1,
  JSD(beta) / (1 - beta) -> KL(p_s || p_t): it interpolates between forward and reverse
  KL. At beta = 0 and beta = 1 this function returns those two limits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minift.model.gpt import IGNORE_INDEX


def upcast(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (bf16/fp16 logits lose the small probabilities KD is about)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def check_temperature(temperature: float) -> float:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if temperature <= 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature}: the logits are divided by it "
            "(1 = the model's own distribution, 2-4 = softer targets as in Hinton et al.)"
        )
    return float(temperature)


def _check_pair(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"student logits {tuple(student.shape)} and teacher logits "
            f"{tuple(teacher.shape)} differ in shape: they need the same vocabulary "
            "(or label set) and the same positions"
        )


def masked_mean(per_row: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of per_row (...) over the rows where mask is nonzero (all rows without one)."""
    if mask is None:
        return per_row.mean()
    mask = mask.to(per_row.dtype)
    return (per_row * mask).sum() / mask.sum().clamp(min=1.0)


def kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probabilities (..., V) -> (...)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def soft_target_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the counted rows."""
    T = check_temperature(temperature)
    _check_pair(student_logits, teacher_logits)
    log_ps = F.log_softmax(upcast(student_logits) / T, dim=-1)
    log_pt = F.log_softmax(upcast(teacher_logits.detach()) / T, dim=-1)
    return T * T * masked_mean(kl_rows(log_pt, log_ps), mask)


def hard_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the true labels (IGNORE_INDEX rows skipped)."""
    return F.cross_entropy(
        upcast(logits).reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 2.0,
    alpha: float = 0.5,
) -> torch.Tensor:
    """Hinton et al.'s mix: alpha * soft-target loss + (1 - alpha) * hard-label loss.

    labels (...) index the last dim of the logits; IGNORE_INDEX rows count in neither
    term. alpha = 1 (or no labels) is pure distillation.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    mask = None if labels is None else labels != IGNORE_INDEX
    loss = alpha * soft_target_loss(student_logits, teacher_logits, temperature, mask)
    if labels is not None and alpha < 1.0:
        loss = loss + (1.0 - alpha) * hard_label_loss(student_logits, labels)
    elif labels is None and alpha < 1.0:
        raise ValueError(f"alpha {alpha} < 1 weights a hard-label loss, but no labels were given")
    return loss


def forward_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """KL(p_teacher || p_student): the student covers every mode of the teacher."""
    log_ps, log_pt = _log_probs(student_logits, teacher_logits, temperature)
    return masked_mean(kl_rows(log_pt, log_ps), mask)


def reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """KL(p_student || p_teacher): the student puts mass only where the teacher does."""
    log_ps, log_pt = _log_probs(student_logits, teacher_logits, temperature)
    return masked_mean(kl_rows(log_ps, log_pt), mask)


def _log_probs(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(z / T) of student and teacher, in float32 at least; no grad to the teacher."""
    T = check_temperature(temperature)
    _check_pair(student_logits, teacher_logits)
    log_ps = F.log_softmax(upcast(student_logits) / T, dim=-1)
    log_pt = F.log_softmax(upcast(teacher_logits.detach()) / T, dim=-1)
    return log_ps, log_pt


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 0.5,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """GKD's JSD(beta) = beta KL(p_t || m) + (1 - beta) KL(p_s || m), m = beta p_t + (1-beta) p_s.

    beta = 0 returns forward KL and beta = 1 reverse KL (the limits of JSD / beta and
    JSD / (1 - beta)); in between, the mixture is formed in log space (logsumexp) so that
    tiny probabilities do not underflow.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return forward_kl(student_logits, teacher_logits, mask, temperature)
    if beta == 1.0:
        return reverse_kl(student_logits, teacher_logits, mask, temperature)
    log_ps, log_pt = _log_probs(student_logits, teacher_logits, temperature)
    log_m = torch.logsumexp(
        torch.stack([log_pt + math.log(beta), log_ps + math.log(1.0 - beta)]), dim=0
    )
    per_row = beta * kl_rows(log_pt, log_m) + (1.0 - beta) * kl_rows(log_ps, log_m)
    return masked_mean(per_row, mask)


def divergence(
    kind: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """T^2 D(p_t, p_s) for D one of "forward" KL (Hinton's soft targets), "reverse" KL or
    the generalized "jsd", each on softmax(z / T).

    Every kind is multiplied by T^2, not only the forward KL: Hinton et al.'s argument (the
    gradient of a divergence between tempered softmaxes shrinks as 1/T^2 for small logit
    gaps) holds for each of them, and the same scale keeps alpha's meaning when one
    switches divergence at a given temperature. At T = 1 (GKD's and MiniLLM's setting)
    the factor is 1 and each is the paper's loss.
    """
    T = check_temperature(temperature)
    if kind == "forward":
        return soft_target_loss(student_logits, teacher_logits, T, mask)
    if kind == "reverse":
        return T * T * reverse_kl(student_logits, teacher_logits, mask, T)
    if kind == "jsd":
        return T * T * generalized_jsd(student_logits, teacher_logits, beta, mask, T)
    raise ValueError(f"divergence must be 'forward', 'reverse' or 'jsd', got {kind!r}")
