"""Contextual calibration (Zhao, Wallace, Feng, Klein and Singh, "Calibrate before use:
improving few-shot performance of language models", ICML 2021).

A prompt biases a language model towards some label words whatever the input: the label
that ends the last demonstration (recency), the most frequent label among them (majority
label), words common in pretraining (common token). Zhao et al. estimate that bias by
feeding the same prompt with a *content-free* input ("N/A", "[MASK]", the empty string):
ideally it would score every class 1/K. With p_cf the mean of those distributions,

    W = diag(p_cf)^(-1),   q(k | x) proportional to p(k | x) / p_cf(k)

so a class the prompt favours for no reason is divided down. (The paper writes
softmax(W p + b) with b = 0; the renormalised ratio used here ranks the classes the same,
which is all a prediction reads, and stays a probability that is 1/K for the
content-free input itself.)
"""

from __future__ import annotations

import torch

CONTENT_FREE = ("N/A", "[MASK]", "")


def calibrate(probs: torch.Tensor, p_cf: torch.Tensor) -> torch.Tensor:
    """q = p / p_cf, renormalised per row; ``p_cf`` is (K,) or one (K,) row per example."""
    if p_cf.shape[-1] != probs.shape[-1]:
        raise ValueError(f"p_cf has {p_cf.shape[-1]} classes but probs has {probs.shape[-1]}")
    q = probs / p_cf.clamp_min(1e-12)
    return q / q.sum(dim=-1, keepdim=True)
