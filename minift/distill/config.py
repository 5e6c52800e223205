"""What a distillation run optimises: the output loss, the feature losses and their weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from minift.distill.losses import check_temperature

FEATURE_LOSSES = ("hidden", "cosine", "attention", "attention_kl", "value_kl")


@dataclass
class DistillConfig:
    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 32
    seq_len: int = 64  # language modelling: tokens per window
    max_len: int = 24  # classification: tokens per text (with the task's template)
    warmup_steps: int = 5
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    eval_every: int = 20
    eval_at_start: bool = True
    # The output loss: alpha * divergence + (1 - alpha) * hard-label cross-entropy.
    alpha: float = 0.5
    temperature: float = 2.0
    divergence: str = "forward"  # "forward" (soft targets, T^2) | "reverse" | "jsd"
    beta: float = 0.5  # the JSD's mixture weight
    # Feature losses, each with its weight (0 = off).
    hidden: float = 0.0  # TinyBERT: MSE of every mapped layer's states, through W_h
    cosine: float = 0.0  # DistilBERT: cosine of the last layer's states
    attention: float = 0.0  # TinyBERT: MSE of every mapped block's attention maps
    attention_kl: float = 0.0  # MiniLM: KL of the last block's attention distributions
    value_kl: float = 0.0  # MiniLM: KL of the last block's value relations
    relation_heads: int | None = None  # value relations: default the student's n_head
    layer_map: list[int] | None = None  # default: the slicing's map, else uniform
    seed: int = 0
    precision: str = "fp32"
    progress: bool = True
    out_dir: str | None = None
    desc: str = "distill"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.divergence not in ("forward", "reverse", "jsd"):
            raise ValueError(
                f"divergence must be 'forward', 'reverse' or 'jsd', got {self.divergence!r}"
            )
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        negative = [k for k in FEATURE_LOSSES if getattr(self, k) < 0]
        if negative:
            raise ValueError(f"loss weights must be >= 0: {negative}")

    @property
    def uses_teacher(self) -> bool:
        return self.alpha > 0 or any(getattr(self, k) > 0 for k in FEATURE_LOSSES)

    @property
    def needs_hidden(self) -> bool:
        return self.hidden > 0 or self.cosine > 0 or self.value_kl > 0

    @property
    def needs_attentions(self) -> bool:
        return self.attention > 0 or self.attention_kl > 0
