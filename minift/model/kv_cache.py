"""The KV cache: every layer's keys and values so far, for incremental decoding.

Decoding one token needs the keys and values of every earlier position; recomputing them
costs the whole prefix again each step. The cache keeps them (preallocated to the maximum
length) plus the padding mask and the next position of each row, so a left-padded batch
decodes exactly as each prompt would alone.
"""

from __future__ import annotations

import torch

from minift.model.config import GPTConfig


class LayerKV:
    """One layer's cached keys and values, preallocated to the maximum length."""

    def __init__(self, batch: int, n_head: int, max_len: int, head_dim: int, like: torch.Tensor):
        shape = (batch, n_head, max_len, head_dim)
        self.k = torch.empty(shape, dtype=like.dtype, device=like.device)
        self.v = torch.empty(shape, dtype=like.dtype, device=like.device)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.size(2)
        if end > self.k.size(2):
            raise ValueError(f"KV cache holds {self.k.size(2)} positions; {end} requested")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def truncate(self, length: int) -> None:
        self.length = length


class KVCache:
    """Keys and values of every layer for incremental decoding, plus the padding mask of
    everything seen so far (needed for left-padded batches)."""

    def __init__(self, config: GPTConfig, batch: int, max_len: int, like: torch.Tensor) -> None:
        self.max_len = max_len
        self.layers = [
            LayerKV(batch, config.n_head, max_len, config.head_dim, like)
            for _ in range(config.n_layer)
        ]
        self.key_padding: torch.Tensor | None = None  # (B, length)
        self.next_position: torch.Tensor | None = None  # (B,) position of the next token

    @property
    def length(self) -> int:
        return self.layers[0].length

    def advance(self, key_padding: torch.Tensor | None, positions: torch.Tensor) -> None:
        """Record the padding of every key so far and where the next token's position is."""
        self.key_padding = key_padding
        self.next_position = positions[:, -1] + 1
