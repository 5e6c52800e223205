"""A discrete attack: swap at most k tokens, each chosen by the gradient (HotFlip).

Ebrahimi et al. (2018) score every one-token swap at once with a first-order estimate:
replacing token v by w at position t changes the embedding by E[w] - E[v], so the loss
changes by about

    (E[w] - E[v]) . grad_{e_t} L            for all (t, w) in one (T, C) x (C, V) product.

Greedy search: take the n_candidates best-scored swaps, measure each one's real loss with a
forward pass, keep the best, and repeat until k swaps are spent or the prediction is wrong.
n_candidates=1 is the pure first-order HotFlip. Only the ``editable`` positions change (the
text, not the task's template or the padding), a position changes at most once, and
tokens in ``banned`` (the end-of-text and padding ids) are never put in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minift.model.params import find_gpt


def _losses(model, idx, mask, labels) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(idx, attention_mask=mask).logits.float()
    return F.cross_entropy(logits, labels, reduction="none"), logits.argmax(-1)


def hotflip_attack(
    model: torch.nn.Module,
    batch: dict,
    editable: torch.Tensor,
    k: int,
    n_candidates: int = 8,
    banned: list[int] | None = None,
) -> torch.Tensor:
    """The token ids (B, T) of ``batch`` after at most k greedy gradient-guided swaps per
    row (rows already misclassified are left as they are). k = 0 returns the input."""
    if k < 0:
        raise ValueError(f"k, the number of token swaps, must be >= 0, got {k}")
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
    idx, mask, labels = batch["idx"].clone(), batch["attention_mask"], batch["labels"]
    wte = find_gpt(model).transformer.wte.weight.detach()  # (V, C)
    B, T = idx.shape
    rows = torch.arange(B, device=idx.device)
    free = editable.bool() & mask.bool()  # positions that may still change
    for _ in range(k):
        with torch.no_grad():
            _, pred = _losses(model, idx, mask, labels)
        active = (pred == labels) & free.any(1)
        if not active.any():
            break
        embeds = wte[idx].requires_grad_(True)
        with torch.enable_grad():
            out = model(idx, attention_mask=mask, inputs_embeds=embeds)
            loss = F.cross_entropy(out.logits.float(), labels, reduction="sum")
            (g,) = torch.autograd.grad(loss, embeds)
        # first-order gain of each swap: g_t . E[w] - g_t . E[idx_t]
        gain = g @ wte.T - (g * wte[idx]).sum(-1, keepdim=True)  # (B, T, V)
        gain[~free] = -torch.inf
        gain.scatter_(2, idx.unsqueeze(-1), -torch.inf)  # a swap must change the token
        if banned:
            gain[..., banned] = -torch.inf
        n = min(n_candidates, T * wte.size(0))
        top = gain.flatten(1).topk(n, dim=1)  # (B, n) over (position, token)
        pos, tok = top.indices // wte.size(0), top.indices % wte.size(0)
        # the real loss of every candidate, one forward pass for all of them
        cand = idx.unsqueeze(1).repeat(1, n, 1)  # (B, n, T)
        cand.scatter_(2, pos.unsqueeze(-1), tok.unsqueeze(-1))
        with torch.no_grad():
            cand_loss, _ = _losses(
                model, cand.flatten(0, 1), mask.repeat_interleave(n, 0), labels.repeat_interleave(n)
            )
        cand_loss = cand_loss.view(B, n).masked_fill(~torch.isfinite(top.values), -torch.inf)
        best = cand_loss.argmax(1)
        ok = active & torch.isfinite(top.values[rows, best])
        p, w = pos[rows, best], tok[rows, best]
        idx[rows[ok], p[ok]] = w[ok]
        free[rows[ok], p[ok]] = False
    return idx
