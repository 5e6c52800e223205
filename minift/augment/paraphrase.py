"""Paraphrase by sampling from the base model: the offline stand-in for back-translation.

Back-translation (Sennrich, Haddow and Birch 2016; for classification, Xie et al. 2020,
UDA) rewrites a text by translating it to another language and back: the meaning stays,
the wording changes. With no translation model offline, the base language model does a
cruder version: keep the first ``keep`` fraction of a text's tokens and let the model
write the rest, sampled at a temperature, to about the original length. The label is
assumed to survive because the kept prefix carries most of the topic; the sampled tail
adds the model's own phrasing of it. A weak base writes weak tails, which is what the
lesson measures.
"""

from __future__ import annotations

import torch

from minift.errors import UserError
from minift.tokenizer import eot_id


@torch.no_grad()
def paraphrase(
    model,
    enc,
    texts: list[str],
    keep: float = 0.5,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int = 0,
    max_tokens: int = 32,
    batch_size: int = 64,
) -> list[str]:
    """One sampled rewrite of each text: its first ``keep`` of tokens, then the model's.
    Texts are generated in batches (prompts left-padded); each keeps as many new tokens as
    it had tokens cut."""
    if not 0.0 < keep < 1.0:
        raise UserError(f"paraphrase keeps a fraction of each text in (0, 1), got {keep}")
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    eot = eot_id(enc)
    model.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        ids = [enc.encode_ordinary(t)[:max_tokens] or [eot] for t in texts[start : start + batch_size]]  # fmt: skip
        heads = [x[: max(1, int(len(x) * keep))] for x in ids]
        new = [max(1, len(x) - len(h)) for x, h in zip(ids, heads)]
        width = max(len(h) for h in heads)
        idx = torch.tensor([[eot] * (width - len(h)) + h for h in heads], device=device)
        mask = torch.tensor([[0] * (width - len(h)) + [1] * len(h) for h in heads], device=device)
        full = model.generate(
            idx, max(new), temperature=temperature, top_k=top_k, eos_token_id=eot,
            attention_mask=mask, generator=g,
        )  # fmt: skip
        for row, head, n in zip(full[:, width:].tolist(), heads, new):
            tail = row[:n]
            tail = tail[: tail.index(eot)] if eot in tail else tail
            out.append(enc.decode(head + tail))
    return out
