"""Rollouts: a batch of prompts, the policy's sampled responses, and their log-probabilities.

Following Huang et al. 2024 ("The N Implementation Details of RLHF with PPO"):
- prompts of different lengths are padded on the *left* with a distinct pad token, so
  every prompt ends in the last column and generation appends in lock-step; the model
  counts positions from each row's first real token, so padding changes nothing;
- responses are sampled with the KV cache at a set temperature with top_k = 0 and
  top_p = 1.0: any filtering would make the sampling distribution differ from the policy
  whose log-probabilities PPO optimises;
- log-probabilities are recomputed afterwards by one forward pass over prompt + response,
  at the *same* temperature (logits / T), rather than taken from the sampling loop;
- a response ends at its first end token: the end token belongs to the response, the
  pad tokens that follow it are masked out of everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minift.data.batching import pad_sequences


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log softmax(logits / T)[token]: (B, T, V) logits and (B, T) tokens -> (B, T)."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / T) at every position: -sum p log p, (B, T, V) -> (B, T)."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def response_logprobs(
    model,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities of the response tokens (B, R), the logits that predicted them
    (B, R, V)) under ``model`` at ``temperature``. Position t predicts token t + 1, so the
    response's logits start one column before it (at the prompt's last token)."""
    logits = model(sequences, attention_mask=attention_mask).logits[:, prompt_len - 1 : -1]
    return token_logprobs(logits, sequences[:, prompt_len:], temperature), logits


@dataclass
class Rollout:
    """Left-padded prompts followed by the sampled responses (pad after the end token)."""

    sequences: torch.Tensor  # (B, P + R)
    attention_mask: torch.Tensor  # (B, P + R): 1 on prompt and response tokens
    prompt_len: int  # P, the padded prompt width
    response_mask: torch.Tensor  # (B, R): 1 up to and including the first end token
    has_eos: torch.Tensor  # (B,) bool: the response ended by itself

    @property
    def responses(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_len :]

    def response_ids(self) -> list[list[int]]:
        return [
            row[: int(n)]
            for row, n in zip(self.responses.tolist(), self.response_mask.sum(1).tolist())
        ]

    def texts(self, enc) -> list[str]:
        """The responses as text, without the end token."""
        return [decode_response(enc, ids) for ids in self.response_ids()]

    def select(self, rows: torch.Tensor) -> Rollout:
        return Rollout(
            self.sequences[rows],
            self.attention_mask[rows],
            self.prompt_len,
            self.response_mask[rows],
            self.has_eos[rows],
        )


def decode_response(enc, ids: Sequence[int]) -> str:
    """Text of a response's ids with the special tokens (end, pad) left out."""
    special = {enc.encode_single_token(t) for t in enc.special_tokens_set}
    return enc.decode([t for t in ids if t not in special])


def check_fits(prompt_len: int, max_new_tokens: int, block_size: int) -> None:
    if prompt_len + max_new_tokens > block_size:
        raise ValueError(
            f"a prompt of {prompt_len} tokens + max_new_tokens {max_new_tokens} = "
            f"{prompt_len + max_new_tokens} tokens exceeds block_size {block_size}; lower "
            "max_new_tokens or shorten the prompts"
        )


@torch.no_grad()
def sample_responses(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Sample one response per prompt with the KV cache (top_k = 0, top_p = 1)."""
    if temperature <= 0:
        raise ValueError(f"sampling temperature must be > 0 for RLHF rollouts, got {temperature}")
    if pad_id == eos_id:
        raise ValueError(
            "the pad token must differ from the end token, or a response's end could not be "
            "told from padding; use minift.tokenizer.pad_id(enc) with minift's tokenizer"
        )
    device = model.lm_head.weight.device
    ids, mask = pad_sequences(prompts, pad_id, side="left")
    check_fits(ids.size(1), max_new_tokens, model.config.block_size)
    ids, mask = ids.to(device), mask.to(device)
    was_training = model.training
    model.eval()
    out = model.generate(
        ids, max_new_tokens, temperature=temperature, top_k=0, top_p=1.0,
        eos_token_id=eos_id, pad_token_id=pad_id, attention_mask=mask, generator=generator,
    )  # fmt: skip
    model.train(was_training)
    P = ids.size(1)
    responses = out[:, P:]
    is_eos = responses == eos_id
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    response_mask = (~after_eos).long()
    return Rollout(
        sequences=out,
        attention_mask=torch.cat([mask, response_mask], dim=1),
        prompt_len=P,
        response_mask=response_mask,
        has_eos=is_eos.any(1),
    )
