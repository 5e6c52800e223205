"""Language-model metrics: cross-entropy, perplexity and bits per byte.

A model's loss on held-out text is a mean negative log-likelihood per *token*, so it
depends on the tokenizer: a tokenizer with longer tokens has fewer, harder predictions.
Two models with different vocabularies are compared on a per-*byte* footing instead:

    NLL       = - sum_t ln p(x_t | x_<t)                 (nats, over every token scored)
    perplexity = exp(NLL / n_tokens)                     (per token; tokenizer-dependent)
    bits per byte = NLL / (ln 2 * n_bytes)               (n_bytes: the UTF-8 bytes scored)

Bits per byte is the code length an arithmetic coder driven by the model would spend per
byte of text, whatever the tokenizer (Gao et al., "The Pile", 2020, section 4; Shannon's
source coding theorem). A uniform guess over 256 byte values is 8 bits per byte.

:func:`lm_statistics` scores texts with any model called as ``model(idx, targets)`` that
returns ``.logits`` (minift's GPT): each text is prefixed by the end-of-text token, so its
first token is predicted too, and a text longer than the context is scored in windows, each
token with the preceding tokens of its window as context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minift.tokenizer import eot_id


@dataclass(frozen=True)
class LMStatistics:
    """Summed negative log-likelihood (nats) and the tokens and bytes it covers."""

    nll: float
    n_tokens: int
    n_bytes: int

    @property
    def loss(self) -> float:
        """Mean NLL per token (nats): the cross-entropy a training loop reports."""
        return self.nll / self.n_tokens

    @property
    def perplexity(self) -> float:
        return perplexity(self.nll, self.n_tokens)

    @property
    def bits_per_byte(self) -> float:
        return bits_per_byte(self.nll, self.n_bytes)


def _check_counts(nll: float, count: int, what: str) -> None:
    if count <= 0:
        raise ValueError(f"{what} must be positive, got {count}: nothing was scored")
    if not math.isfinite(nll) or nll < 0:
        raise ValueError(f"the summed negative log-likelihood must be finite and >= 0, got {nll}")


def perplexity(nll: float, n_tokens: int) -> float:
    """exp(NLL / n_tokens): the number of equally likely tokens the model hesitates among."""
    _check_counts(nll, n_tokens, "n_tokens")
    return math.exp(nll / n_tokens)


def bits_per_byte(nll: float, n_bytes: int) -> float:
    """NLL (nats) / (ln 2 * n_bytes): the bits per UTF-8 byte of the text scored."""
    _check_counts(nll, n_bytes, "n_bytes")
    return nll / (math.log(2) * n_bytes)


@torch.no_grad()
def lm_statistics(model, enc, texts: list[str], block_size: int | None = None) -> LMStatistics:
    """Score every token of every text (see the module doc); NLL summed in float64."""
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings")
    if block_size is None:  # a soft prompt (prompt tuning) takes room in front of the text
        block_size = model.text_room() if hasattr(model, "text_room") else model.config.block_size
    device = next(model.parameters()).device
    eot = eot_id(enc)
    nll, n_tokens, n_bytes = 0.0, 0, 0
    for i, text in enumerate(texts):
        ids = enc.encode_ordinary(text)
        if not ids:
            raise ValueError(f"texts[{i}] is empty: it has no token to score")
        n_bytes += len(text.encode("utf-8"))
        seq = [eot, *ids]
        # windows of block_size inputs; window w predicts seq[w*B+1 : (w+1)*B+1]
        for start in range(0, len(seq) - 1, block_size):
            chunk = torch.tensor(seq[start : start + block_size + 1], device=device)
            logits = model(chunk[None, :-1]).logits[0].double()
            nll += F.cross_entropy(logits, chunk[1:], reduction="sum").item()
            n_tokens += len(chunk) - 1
    return LMStatistics(nll, n_tokens, n_bytes)
