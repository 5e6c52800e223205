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
) -> list[str]:
    """One sampled rewrite of each text: its first ``keep`` of tokens, then the model's."""
    if not 0.0 < keep < 1.0:
        raise UserError(f"paraphrase keeps a fraction of each text in (0, 1), got {keep}")
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    out = []
    model.eval()
    for text in texts:
        ids = enc.encode_ordinary(text)[:max_tokens] or [eot_id(enc)]
        n_keep = max(1, int(len(ids) * keep))
        new = max(1, len(ids) - n_keep)
        idx = torch.tensor([ids[:n_keep]], device=device)
        full = model.generate(idx, new, temperature=temperature, top_k=top_k, eos_token_id=eot_id(enc), generator=g)  # fmt: skip
        tail = [t for t in full[0, n_keep:].tolist() if t != eot_id(enc)]
        out.append(enc.decode(ids[:n_keep] + tail))
    return out
