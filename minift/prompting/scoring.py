"""Score the classes of prompts by the next-token probabilities of their label words.

For a prompt x and label words with first tokens v_1..v_K, the model's class distribution
is the softmax over the label words alone:

    p(k | x) = exp(z_{v_k}) / sum_j exp(z_{v_j}),   z = the logits after the last token of x

A prompt longer than the context keeps its last ``block_size`` tokens: the earliest
demonstrations are cut first, the query never (the most similar demonstration is placed
last, next to the query, for the same reason). Prompts are batched with right padding and
read at their last real position: a causal model's earlier positions never see the pads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def label_probs(
    model,
    enc,
    prompts: Sequence[str],
    label_ids: Sequence[int],
    block_size: int | None = None,
    batch_size: int = 64,
) -> tuple[torch.Tensor, int]:
    """(the (n, K) float64 class probabilities, how many prompts were cut to fit)."""
    block_size = block_size or (
        model.text_room() if hasattr(model, "text_room") else model.config.block_size
    )
    device = next(model.parameters()).device
    encoded = enc.encode_ordinary_batch(list(prompts))
    truncated = sum(len(ids) > block_size for ids in encoded)
    encoded = [ids[-block_size:] for ids in encoded]
    labels = torch.tensor(list(label_ids), device=device)
    out = []
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i : i + batch_size]
        width = max(len(ids) for ids in chunk)
        idx = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
        for row, ids in enumerate(chunk):
            idx[row, : len(ids)] = torch.tensor(ids)
        last = torch.tensor([len(ids) - 1 for ids in chunk], device=device)
        logits = model(idx).logits[torch.arange(len(chunk), device=device), last]
        out.append(torch.softmax(logits[:, labels].double(), dim=-1).cpu())
    return torch.cat(out), truncated
