"""GPTConfig: every architectural choice of minift's transformer in one dataclass.

The defaults give GPT-2 (Radford et al. 2019): learned positions, LayerNorm, GELU,
biases, tied embeddings. Options switch on the modern choices (RMSNorm, rotary
positions, SwiGLU), the encoder mode, sparse attention patterns (minift.model.sparse) and
mixture-of-experts MLPs (minift.model.moe) without forking the model code.

Sparse pattern parameters count *blocks* of ``attn_block_size`` tokens, as the layout
builders of minift.kernels.layouts do, so the masked reference, the memory-efficient path
and the block-sparse Triton kernel all compute exactly the same attention.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_inner: int | None = None  # MLP width; None means 4 * n_embd (GPT-2)
    dropout: float = 0.0
    bias: bool = True
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    norm_eps: float = 1e-5
    pos_emb: str = "learned"  # "learned" | "rope"
    rope_theta: float = 10000.0
    mlp: str = "gelu"  # "gelu" (GPT-2's tanh approximation) | "swiglu"
    tie_weights: bool = True
    causal: bool = True  # False: the encoder (BERT-style) mode, bidirectional attention
    # Sparse attention (minift.model.sparse). Counts are in blocks of attn_block_size tokens.
    attn_pattern: str = "dense"  # dense | sliding_window | strided | fixed | global | bigbird
    attn_impl: str = "efficient"  # "masked" (dense reference under the mask) | "efficient"
    attn_block_size: int = 64  # must divide block_size, so the layout tiles the context
    attn_window: int = 2  # sliding_window, bigbird: blocks each side, own block included
    attn_dilation: int = 1  # sliding_window: every attn_dilation-th block (Longformer)
    attn_stride: int = 4  # strided, fixed (Sparse Transformer)
    attn_summary: int = 1  # fixed: summary blocks at the end of every chunk of attn_stride
    attn_global: int = 0  # global blocks, added to any pattern (Longformer, BigBird)
    attn_random: int = 0  # bigbird: random key blocks per query block
    attn_seed: int = 0  # bigbird: seed of the random blocks
    # Mixture of experts (minift.model.moe): 0 experts keeps the dense MLP.
    moe_experts: int = 0
    moe_top_k: int = 2  # experts per token: 1 as in Switch, 2 as in GShard and Mixtral
    moe_every: int = 1  # an MoE MLP in every moe_every-th block (the others stay dense)
    moe_capacity_factor: float | None = None  # None: no capacity limit (dropless)
    moe_aux_weight: float = 0.01  # load-balancing loss weight (Fedus et al. 2021)
    moe_z_weight: float = 0.001  # router z-loss weight (Zoph et al. 2022)
    moe_norm_topk: bool = True  # gates renormalised over the chosen experts (sum to one)

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            problems.append(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if self.norm not in ("layernorm", "rmsnorm"):
            problems.append(f"norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")
        if self.pos_emb not in ("learned", "rope"):
            problems.append(f"pos_emb must be 'learned' or 'rope', got {self.pos_emb!r}")
        if self.mlp not in ("gelu", "swiglu"):
            problems.append(f"mlp must be 'gelu' or 'swiglu', got {self.mlp!r}")
        if self.pos_emb == "rope" and self.head_dim % 2:
            problems.append(f"rotary positions need an even head_dim, got {self.head_dim}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        problems += self._sparse_problems() + self._moe_problems()
        if problems:
            raise ValueError("invalid GPTConfig: " + "; ".join(problems))

    def _sparse_problems(self) -> list[str]:
        patterns = ("dense", "sliding_window", "strided", "fixed", "global", "bigbird")
        if self.attn_pattern not in patterns:
            return [f"unknown attn_pattern {self.attn_pattern!r}; known: {', '.join(patterns)}"]
        problems = []
        if self.attn_impl not in ("masked", "efficient"):
            problems.append(f"attn_impl must be 'masked' or 'efficient', got {self.attn_impl!r}")
        for name in ("attn_block_size", "attn_window", "attn_dilation", "attn_stride"):
            if getattr(self, name) < 1:
                what = "a window of zero blocks sees nothing" if name == "attn_window" else ""
                problems.append(
                    f"{name} must be at least 1, got {getattr(self, name)}"
                    + (f" ({what})" if what else "")
                )
        if self.attn_pattern == "dense" or problems:
            return problems
        bs = self.attn_block_size
        if self.block_size % bs:
            divisors = [d for d in (16, 32, 64, 128) if self.block_size % d == 0]
            problems.append(
                f"attn_block_size {bs} does not divide block_size {self.block_size}: the "
                f"block layout must tile the context; pick a divisor (e.g. {divisors or [1]})"
            )
            return problems
        n_blocks = self.block_size // bs
        if not 0 <= self.attn_global <= n_blocks:
            problems.append(
                f"attn_global must be in [0, {n_blocks}] blocks, got {self.attn_global}"
            )
        if self.attn_random < 0:
            problems.append(f"attn_random must be >= 0, got {self.attn_random}")
        if self.attn_random and self.attn_pattern != "bigbird":
            problems.append(f"attn_random applies to bigbird only, not {self.attn_pattern!r}")
        if self.attn_dilation != 1 and self.attn_pattern != "sliding_window":
            problems.append(
                f"attn_dilation applies to sliding_window only, not {self.attn_pattern!r}"
            )
        if self.attn_pattern == "global" and self.attn_global < 1:
            problems.append("attn_pattern 'global' needs attn_global >= 1 block")
        if self.attn_pattern == "fixed" and not 1 <= self.attn_summary <= self.attn_stride:
            problems.append(
                f"attn_summary must be in [1, attn_stride={self.attn_stride}], got {self.attn_summary}"
            )
        return problems

    def _moe_problems(self) -> list[str]:
        if self.moe_experts == 0:
            return []
        if self.moe_experts < 0:
            return [f"moe_experts must be >= 0 (0: dense MLP), got {self.moe_experts}"]
        problems = []
        if not 1 <= self.moe_top_k <= self.moe_experts:
            problems.append(
                f"moe_top_k {self.moe_top_k} must be between 1 and moe_experts "
                f"{self.moe_experts}: a token cannot pick more experts than exist"
            )
        if self.moe_every < 1 or self.moe_every > self.n_layer:
            problems.append(
                f"moe_every must be in [1, n_layer={self.n_layer}], got {self.moe_every}"
            )
        cf = self.moe_capacity_factor
        if cf is not None and not cf > 0:
            problems.append(f"moe_capacity_factor must be > 0 (or None: no limit), got {cf}")
        if self.moe_aux_weight < 0 or self.moe_z_weight < 0:
            problems.append(
                f"moe_aux_weight and moe_z_weight must be >= 0, got {self.moe_aux_weight}, {self.moe_z_weight}"
            )
        return problems

    @property
    def sparse(self) -> bool:
        return self.attn_pattern != "dense"

    def is_moe_layer(self, layer: int) -> bool:
        """Whether block ``layer`` holds an MoE MLP: every moe_every-th block, counting from
        the last of each group (GShard and Switch alternate dense and MoE blocks)."""
        return self.moe_experts > 0 and layer % self.moe_every == self.moe_every - 1

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        """Build a config from a dict, rejecting keys that are not fields (listing the valid ones)."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"unknown GPTConfig key(s) {unknown}; valid keys are {valid}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GPTConfig:
        return cls.from_dict(json.loads(text))
