"""The small building blocks of a transformer block: norms, rotary positions, the MLP."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from minift.model.config import GPTConfig


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """RMSNorm (Zhang and Sennrich 2019): x / sqrt(mean(x^2) + eps) * g, no centering, no bias.

    Computed in float32 so that bf16 activations do not lose the tiny mean of squares.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, eps=config.norm_eps)
    return LayerNorm(config.n_embd, bias=config.bias, eps=config.norm_eps)


class Rotary(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021).

    Each pair of channels (x_{2i}, x_{2i+1}) of a query or key at position p is rotated by
    the angle p * theta^(-2i/d). The dot product of a rotated query at p and a rotated key
    at s then depends on p - s alone, so attention sees relative positions.
    """

    def __init__(self, head_dim: int, max_positions: int, theta: float = 10000.0) -> None:
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv_freq)
        # Buffers, not parameters, and not saved: they are a function of the config.
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: (B, H, T, D); positions: (B, T) integer positions."""
        cos = self.cos[positions].unsqueeze(1).to(x.dtype)  # (B, 1, T, D/2)
        sin = self.sin[positions].unsqueeze(1).to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return out.flatten(-2)


class MLP(nn.Module):
    """The position-wise feed-forward network.

    gelu:   c_proj(GELU(c_fc(x)))                          (GPT-2, tanh-approximated GELU)
    swiglu: c_proj(SiLU(gate) * up), [gate, up] = c_fc(x)  (Shazeer 2020; LLaMA)
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.kind = config.mlp
        fc_out = 2 * config.inner_dim if self.kind == "swiglu" else config.inner_dim
        self.c_fc = nn.Linear(config.n_embd, fc_out, bias=config.bias)
        self.c_proj = nn.Linear(config.inner_dim, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            return F.silu(gate) * up
        return F.gelu(h, approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.activation(self.c_fc(x))))


def init_weights(module: nn.Module, config: GPTConfig) -> None:
    """GPT-2's initialisation: N(0, 0.02) for linears and embeddings, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def residual_init_std(config: GPTConfig) -> float:
    """GPT-2 scales the layers that write into the residual stream by 1/sqrt(2 * n_layer),
    so the residual's variance does not grow with depth (two writes per block)."""
    return 0.02 / math.sqrt(2 * config.n_layer)
