"""The masked-language-model objective of BERT (Devlin et al. 2019), for the encoder mode.

A causal LM predicts token t+1 from tokens <= t. A masked LM instead hides a random 15%
of the tokens and predicts them from both sides. Of the chosen positions, 80% become
[MASK], 10% a random token and 10% stay unchanged, so the model cannot assume that only
[MASK] positions matter. The loss counts the chosen positions only.
"""

from __future__ import annotations

import torch

from minift.model.gpt import IGNORE_INDEX


def mask_tokens(
    idx: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    prob: float = 0.15,
    generator: torch.Generator | None = None,
    special_ids: tuple[int, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (inputs, targets) for one MLM step; targets are IGNORE_INDEX where unchosen."""
    if not 0.0 < prob < 1.0:
        raise ValueError(f"mask probability must be in (0, 1), got {prob}")
    draw = lambda: torch.rand(idx.shape, generator=generator, device=idx.device)
    chosen = draw() < prob
    for s in special_ids:
        chosen &= idx != s
    targets = torch.where(chosen, idx, torch.full_like(idx, IGNORE_INDEX))
    u = draw()
    inputs = idx.clone()
    inputs[chosen & (u < 0.8)] = mask_id
    rand_pos = chosen & (u >= 0.8) & (u < 0.9)
    random_tokens = torch.randint(vocab_size, idx.shape, generator=generator, device=idx.device)
    inputs[rand_pos] = random_tokens[rand_pos]
    return inputs, targets


def causal_lm_targets(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) for next-token prediction: targets are the inputs shifted by one."""
    return idx[:, :-1], idx[:, 1:]
