"""What a distillation run optimises: the output loss, the feature losses and their weights,
and how it trains (``train``, a minift.train.TrainConfig with distillation's defaults).

    DistillConfig(alpha=0.5, temperature=2.0, hidden=0.1, train=train_config(steps=60))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from minift.distill.losses import check_temperature
from minift.train import TrainConfig

FEATURE_LOSSES = ("hidden", "cosine", "attention", "attention_kl", "value_kl")


def train_config(**changes: Any) -> TrainConfig:
    """The TrainConfig of a distillation run: 100 steps at lr 1e-3 with 5 warm-up steps, no
    weight decay, an evaluation every 20 steps and one before the first; ``changes``
    override any of them. (The metric to follow comes from the objective.)"""
    defaults = dict(
        steps=100, lr=1e-3, warmup_steps=5, weight_decay=0.0, eval_every=20, eval_at_start=True,
        desc="distill",
    )  # fmt: skip
    return TrainConfig(**{**defaults, **changes})


@dataclass
class DistillConfig:
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
    train: TrainConfig = field(default_factory=train_config)

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
