"""ONION (Qi et al. 2021): find trigger words by how much the text's perplexity drops
without them.

A rare trigger word inserted into a fluent sentence makes it less likely under a
language model. For a text of words w_1..w_n with perplexity p_0 (under a language model
that never saw the poison, here the base model), word i's suspicion is

    f_i = p_0 - p_i,       p_i = the perplexity of the text with w_i removed,

large when removing w_i makes the text much more fluent. ONION removes the words with
f_i above a threshold t. Used on the training data, a row with any word above t is
flagged; t is taken from trusted clean text (a high quantile of the clean validation
rows' largest suspicion), so that few clean rows are flagged by construction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minift.tokenizer import eot_id


@torch.no_grad()
def perplexities(model, enc, texts: list[str], batch_size: int = 256) -> list[float]:
    """exp(mean next-token loss) of each text after an end-of-text token, under ``model``."""
    eot = eot_id(enc)
    limit = model.config.block_size
    seqs = [([eot] + ids)[:limit] for ids in enc.encode_ordinary_batch(texts)]
    device = next(model.parameters()).device
    out = [0.0] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # batches of like lengths
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        chunk = [seqs[j] for j in rows]
        T = max(len(s) for s in chunk)
        idx = torch.full((len(chunk), T), eot, dtype=torch.long)
        mask = torch.zeros(len(chunk), T, dtype=torch.long)
        for r, s in enumerate(chunk):
            idx[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        idx, mask = idx.to(device), mask.to(device)
        logits = model(idx, attention_mask=mask).logits[:, :-1].float()
        nll = F.cross_entropy(logits.transpose(1, 2), idx[:, 1:], reduction="none")
        m = mask[:, 1:].float()
        mean = (nll * m).sum(1) / m.sum(1).clamp(min=1)
        for j, v in zip(rows, mean.tolist()):
            out[j] = math.exp(min(v, 50.0))
    return out


def suspicion(model, enc, texts: list[str]) -> list[list[float]]:
    """f_i = p_0 - p_(without word i) for every word of every text (split on spaces)."""
    variants, spans = [], []
    for text in texts:
        words = text.split(" ")
        start = len(variants)
        variants.append(text)
        if len(words) > 1:
            variants += [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
        spans.append((start, len(words) if len(words) > 1 else 0))
    ppl = perplexities(model, enc, variants)
    return [[ppl[s] - ppl[s + 1 + i] for i in range(n)] for s, n in spans]


def onion_threshold(clean_suspicion: list[list[float]], quantile: float = 0.95) -> float:
    """The ``quantile`` of the clean texts' largest word suspicion."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    tops = torch.tensor([max(s, default=0.0) for s in clean_suspicion], dtype=torch.float64)
    return float(torch.quantile(tops, quantile))


def onion_flags(scores: list[list[float]], threshold: float) -> list[int]:
    """The indices of the texts with a word whose suspicion exceeds ``threshold``."""
    return [i for i, s in enumerate(scores) if s and max(s) > threshold]


def onion_clean(texts: list[str], scores: list[list[float]], threshold: float) -> list[str]:
    """Each text without its words of suspicion above ``threshold`` (ONION at test time)."""
    out = []
    for text, s in zip(texts, scores):
        words = text.split(" ")
        kept = [w for w, f in zip(words, s) if f <= threshold] if s else words
        out.append(" ".join(kept) if kept else text)
    return out
