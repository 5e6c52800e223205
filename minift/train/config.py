"""TrainConfig: every setting of the training loop, checked when it is made."""

from __future__ import annotations

import math
from dataclasses import dataclass

from minift.train.optimizers import OPTIMIZERS


@dataclass
class TrainConfig:
    steps: int = 100
    lr: float | None = 3e-4  # None only in a recipe's config: the method's default lr
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"  # cosine | linear | constant, after warmup_steps (train.optim)
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    optimizer: str = "adamw"  # adamw | sgd (momentum = betas[0]) | adafactor | lion
    precision: str = "fp32"  # "fp32" | "bf16" (autocast, CPU or GPU) | "fp16" (GPU, loss scaling)
    eval_every: int = 0  # 0: evaluate only at the end (when an eval_fn is given)
    eval_at_start: bool = False  # also evaluate before the first step (logged as step 0)
    monitor: str = "val_loss"  # the eval metric that early stopping and "best" follow
    mode: str = "min"  # "min" or "max": which direction of monitor is better
    patience: int | None = None  # stop after this many evaluations without improvement
    restore_best: bool = False  # load the best evaluated weights back at the end
    ckpt_every: int = 0  # 0: no checkpoints
    out_dir: str | None = None  # metrics.jsonl, loss.png and checkpoints go here
    overwrite: bool = False  # replace another run's files found in out_dir (else: refuse)
    seed: int = 0
    log_every: int = 10
    progress: bool = True
    desc: str = "train"

    def __post_init__(self) -> None:
        if self.steps < 0 or self.grad_accum < 1:
            raise ValueError(
                f"steps must be >= 0 and grad_accum >= 1, got {self.steps}, {self.grad_accum}"
            )
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.warmup_steps < 0 or self.eval_every < 0 or self.ckpt_every < 0:
            raise ValueError(
                "warmup_steps, eval_every and ckpt_every must be >= 0, got "
                f"{self.warmup_steps}, {self.eval_every}, {self.ckpt_every}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(
                f"grad_clip must be > 0 (or None for no clipping), got {self.grad_clip}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(
                f"unknown schedule {self.schedule!r}; choose one of cosine, linear, constant"
            )
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.ckpt_every and not self.out_dir:
            raise ValueError("ckpt_every needs an out_dir to write checkpoints to")
