"""GPTConfig: every architectural choice of minift's transformer in one dataclass.

The defaults give GPT-2 (Radford et al. 2019): learned positions, LayerNorm, GELU,
biases, tied embeddings. Options switch on the modern choices (RMSNorm, rotary
positions, SwiGLU) and the encoder mode; two nested configs hold the options of sparse
attention (``sparse=SparseConfig(...)``, minift.model.sparse) and of mixture-of-experts
MLPs (``moe=MoEConfig(...)``, minift.model.moe), so the model code is never forked:

    GPTConfig(sparse=SparseConfig(pattern="sliding_window", window=4),
              moe=MoEConfig(experts=4, top_k=2))

Sparse pattern parameters count *blocks* of ``sparse.block_size`` tokens, as the layout
builders of minift.kernels.layouts do, so the masked reference, the memory-efficient path
and the block-sparse Triton kernel all compute exactly the same attention.

Configs are saved as JSON (``to_dict``). ``from_dict`` reads that nested form and the flat
form older minift versions wrote (``attn_window``, ``moe_top_k``, ...), so saved models and
cached bases keep loading.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

PATTERNS = ("dense", "sliding_window", "strided", "fixed", "global", "bigbird")


@dataclass
class SparseConfig:
    """Which keys a query may see (minift.model.sparse). Counts are in blocks of block_size
    tokens."""

    pattern: str = "dense"  # dense | sliding_window | strided | fixed | global | bigbird
    impl: str = "efficient"  # "masked" (dense reference under the mask) | "efficient"
    block_size: int = 64  # must divide GPTConfig.block_size, so the layout tiles the context
    window: int = 2  # sliding_window, bigbird: blocks each side, own block included
    dilation: int = 1  # sliding_window: every dilation-th block (Longformer)
    stride: int = 4  # strided, fixed (Sparse Transformer)
    summary: int = 1  # fixed: summary blocks at the end of every chunk of stride
    n_global: int = 0  # global blocks, added to any pattern (Longformer, BigBird)
    n_random: int = 0  # bigbird: random key blocks per query block
    seed: int = 0  # bigbird: seed of the random blocks

    @property
    def enabled(self) -> bool:
        return self.pattern != "dense"

    def problems(self, context: int) -> list[str]:
        """What is wrong with these options for a model of ``context`` tokens."""
        if self.pattern not in PATTERNS:
            return [f"unknown sparse.pattern {self.pattern!r}; known: {', '.join(PATTERNS)}"]
        problems = []
        if self.impl not in ("masked", "efficient"):
            problems.append(f"sparse.impl must be 'masked' or 'efficient', got {self.impl!r}")
        for name in ("block_size", "window", "dilation", "stride"):
            if getattr(self, name) < 1:
                why = " (a window of zero blocks sees nothing)" if name == "window" else ""
                problems.append(f"sparse.{name} must be at least 1, got {getattr(self, name)}{why}")
        if not self.enabled or problems:
            return problems
        if context % self.block_size:
            divisors = [d for d in (16, 32, 64, 128) if context % d == 0]
            return problems + [
                f"sparse.block_size {self.block_size} does not divide block_size {context}: the "
                f"block layout must tile the context; pick a divisor (e.g. {divisors or [1]})"
            ]
        n_blocks = context // self.block_size
        if not 0 <= self.n_global <= n_blocks:
            problems.append(
                f"sparse.n_global must be in [0, {n_blocks}] blocks, got {self.n_global}"
            )
        if self.n_random < 0:
            problems.append(f"sparse.n_random must be >= 0, got {self.n_random}")
        if self.n_random and self.pattern != "bigbird":
            problems.append(f"sparse.n_random applies to bigbird only, not {self.pattern!r}")
        if self.dilation != 1 and self.pattern != "sliding_window":
            problems.append(f"sparse.dilation applies to sliding_window only, not {self.pattern!r}")
        if self.pattern == "global" and self.n_global < 1:
            problems.append("sparse.pattern 'global' needs sparse.n_global >= 1 block")
        if self.pattern == "fixed" and not 1 <= self.summary <= self.stride:
            problems.append(
                f"sparse.summary must be in [1, sparse.stride={self.stride}], got {self.summary}"
            )
        return problems


@dataclass
class MoEConfig:
    """Mixture-of-experts MLPs (minift.model.moe); 0 experts keeps the dense MLP."""

    experts: int = 0
    top_k: int = 2  # experts per token: 1 as in Switch, 2 as in GShard and Mixtral
    every: int = 1  # an MoE MLP in every every-th block (the others stay dense)
    capacity_factor: float | None = None  # None: no capacity limit (dropless)
    aux_weight: float = 0.01  # load-balancing loss weight (Fedus et al. 2021)
    z_weight: float = 0.001  # router z-loss weight (Zoph et al. 2022)
    # Gates renormalised over the chosen experts (sum to one, Mixtral). None: only when
    # top_k > 1; with top_k = 1 the one gate would be exactly 1 and the router would get
    # no gradient from the task loss (Switch keeps g = p).
    norm_topk: bool | None = None

    @property
    def renormalize(self) -> bool:
        return self.top_k > 1 if self.norm_topk is None else self.norm_topk

    def problems(self, n_layer: int) -> list[str]:
        if self.experts == 0:
            return []
        if self.experts < 0:
            return [f"moe.experts must be >= 0 (0: dense MLP), got {self.experts}"]
        problems = []
        if not 1 <= self.top_k <= self.experts:
            problems.append(
                f"moe.top_k {self.top_k} must be between 1 and moe.experts {self.experts}: "
                "a token cannot pick more experts than exist"
            )
        if not 1 <= self.every <= n_layer:
            problems.append(f"moe.every must be in [1, n_layer={n_layer}], got {self.every}")
        cf = self.capacity_factor
        if cf is not None and not cf > 0:
            problems.append(f"moe.capacity_factor must be > 0 (or None: no limit), got {cf}")
        if self.aux_weight < 0 or self.z_weight < 0:
            problems.append(
                f"moe.aux_weight and moe.z_weight must be >= 0, got {self.aux_weight}, {self.z_weight}"
            )
        if self.top_k == 1 and self.norm_topk and not problems:
            warnings.warn(
                "MoEConfig(top_k=1, norm_topk=True) sets every gate to exactly 1: the router "
                "gets no gradient from the task loss (only from the auxiliary losses); leave "
                "norm_topk=None (or False) to train the router",
                stacklevel=4,
            )
        return problems


# The flat field names of older saved configs -> (sub-config, field).
FLAT_NAMES = {
    **{f"attn_{n}": ("sparse", n) for n in ("pattern", "impl", "block_size", "window")},
    **{f"attn_{n}": ("sparse", n) for n in ("dilation", "stride", "summary", "seed")},
    "attn_global": ("sparse", "n_global"),
    "attn_random": ("sparse", "n_random"),
    **{f"moe_{f.name}": ("moe", f.name) for f in dataclasses.fields(MoEConfig)},
}


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
    sparse: SparseConfig = field(default_factory=SparseConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)

    def __post_init__(self) -> None:
        if isinstance(self.sparse, dict):
            self.sparse = _sub_config(SparseConfig, self.sparse, "sparse")
        if isinstance(self.moe, dict):
            self.moe = _sub_config(MoEConfig, self.moe, "moe")
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
        problems += self.sparse.problems(self.block_size) + self.moe.problems(self.n_layer)
        if problems:
            raise ValueError("invalid GPTConfig: " + "; ".join(problems))

    @property
    def is_sparse(self) -> bool:
        return self.sparse.enabled

    def is_moe_layer(self, layer: int) -> bool:
        """Whether block ``layer`` holds an MoE MLP: every moe.every-th block, counting from
        the last of each group (GShard and Switch alternate dense and MoE blocks)."""
        every = self.moe.every
        return self.moe.experts > 0 and layer % every == every - 1

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
        """Build a config from a dict (nested, or the flat attn_*/moe_* form of older
        minift versions), rejecting keys that are not fields (listing the valid ones)."""
        data = dict(data)
        flat = [k for k in data if k in FLAT_NAMES]
        if flat and ({"sparse", "moe"} & set(data)):
            raise ValueError(f"config mixes flat keys {flat} with nested 'sparse'/'moe' keys")
        nested: dict[str, dict] = {"sparse": {}, "moe": {}}
        for key in flat:
            sub, name = FLAT_NAMES[key]
            nested[sub][name] = data.pop(key)
        for sub in ("sparse", "moe"):
            if sub in data and not isinstance(data[sub], (dict, SparseConfig, MoEConfig)):
                raise ValueError(f"GPTConfig key {sub!r} must be a dict, got {data[sub]!r}")
            data.setdefault(sub, nested[sub])
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


def _sub_config(cls, data: dict, where: str):
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(f"unknown {where} option(s) {unknown}; valid: {valid}")
    return cls(**data)
