"""The reward model: a GPT with a scalar head, trained on preferences by Bradley-Terry.

    r(x, y) = w . h_last(x + y) + b

h_last is the final hidden state at the last real token of prompt + response (its end
token): in a causal model the only position that has read all of it. Rows may be padded
on either side; the last real token is found from the attention mask.

Bradley-Terry (Bradley and Terry 1952; for language models Christiano et al. 2017,
Stiennon et al. 2020, Ouyang et al. 2022) models a preference as

    P(y_c > y_r | x) = sigmoid(r(x, y_c) - r(x, y_r)),
    loss = -log sigmoid(r_c - r_r - m)  +  c (r_c + r_r)^2

with an optional margin m that asks for a larger gap when a pair is clearly decided
(Touvron et al. 2023, Llama 2) and an optional centering term that keeps rewards near zero,
which the loss alone leaves free: adding a constant to every reward changes nothing
(Eisenstein et al. 2023). The head starts with std 1 / sqrt(C + 1) (Stiennon et al. 2020).

Normalisation (Ziegler et al. 2019; Huang et al. 2024): after training, a gain and a bias
are set so that responses sampled from the reference policy score mean 0 and std 1; the
KL coefficient of PPO is then on a known scale.
"""

from __future__ import annotations

import copy
import math
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from minift.io import atomic_path
from minift.model import GPT
from minift.rlhf.ppo import last_token_index
from minift.rlhf.preference import encode_pairs, pair_batch
from minift.seeding import sample_rows
from minift.train import TrainConfig, Trainer


class RewardModel(nn.Module):
    def __init__(self, backbone: GPT) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        C = backbone.config.n_embd
        self.head = nn.Linear(C, 1)
        nn.init.normal_(self.head.weight, std=1 / math.sqrt(C + 1))
        nn.init.zeros_(self.head.bias)
        # score = gain * r + bias; (1, 0) until normalize() is called
        self.register_buffer("gain", torch.ones(()))
        self.register_buffer("bias", torch.zeros(()))

    def forward(
        self,
        idx: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        normalized: bool = True,
    ) -> torch.Tensor:
        """(B, T) ids -> (B,) rewards read at each row's last real token."""
        if attention_mask is None:
            attention_mask = torch.ones_like(idx)
        hidden = self.backbone(idx, attention_mask=attention_mask, compute_logits=False).last_hidden
        last = last_token_index(attention_mask)
        reward = self.head(hidden[torch.arange(idx.size(0), device=idx.device), last]).squeeze(-1)
        return reward * self.gain + self.bias if normalized else reward

    @torch.no_grad()
    def normalize(self, idx: torch.Tensor, attention_mask: torch.Tensor, batch: int = 64) -> dict:
        """Set gain and bias so that the given sequences (samples of the reference policy)
        score mean 0 and std 1; return the raw mean and std."""
        raw = torch.cat(
            [
                self(idx[i : i + batch], attention_mask[i : i + batch], normalized=False)
                for i in range(0, idx.size(0), batch)
            ]
        )
        mean, std = raw.mean(), raw.std().clamp(min=1e-6)
        self.gain.fill_(1 / std)
        self.bias.fill_(-mean / std)
        return {"raw_mean": float(mean), "raw_std": float(std)}

    def save(self, path: str | pathlib.Path) -> None:
        """backbone as a minift model folder + reward_head.safetensors (head, gain, bias)."""
        path = pathlib.Path(path)
        self.backbone.save(path)
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        head = {k: v for k, v in tensors.items() if not k.startswith("backbone.")}
        with atomic_path(path / "reward_head.safetensors") as tmp:
            save_file(head, str(tmp))

    @classmethod
    def load(cls, path: str | pathlib.Path) -> RewardModel:
        path = pathlib.Path(path)
        if not (path / "reward_head.safetensors").exists():
            raise FileNotFoundError(f"{path} holds no reward model (no reward_head.safetensors)")
        model = cls(GPT.load(path))
        model.load_state_dict(load_file(str(path / "reward_head.safetensors")), strict=False)
        return model.eval()


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | float | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """-log sigmoid(r_c - r_r - m), averaged, + center_coef * mean((r_c + r_r)^2)."""
    diff = chosen.float() - rejected.float()
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_coef:
        loss = loss + center_coef * ((chosen.float() + rejected.float()) ** 2).mean()
    return loss


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Fraction of pairs where the chosen response scores strictly higher."""
    return float((chosen > rejected).float().mean())


def train_config(**changes: Any) -> TrainConfig:
    """The TrainConfig of a reward model: 200 steps at lr 3e-4 with 10 warm-up steps, no
    weight decay, held-out pairwise accuracy evaluated before the first step and every 50
    (the best is the highest); ``changes`` override any of them."""
    defaults = dict(
        steps=200, lr=3e-4, warmup_steps=10, weight_decay=0.0, eval_every=50, eval_at_start=True,
        monitor="val_accuracy", mode="max", progress=False, desc="reward model",
    )  # fmt: skip
    return TrainConfig(**{**defaults, **changes})


@dataclass
class RewardConfig:
    batch_size: int = 32  # pairs per step
    use_margin: bool = False  # subtract each row's "margin" field from the gap
    center_coef: float = 0.0  # 0.01 is the value Eisenstein et al. suggest
    train: TrainConfig = field(default_factory=train_config)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.train.steps < 1:
            raise ValueError(
                f"a reward model needs batch_size >= 1 and steps >= 1, got {self.batch_size} "
                f"and {self.train.steps}"
            )


@dataclass
class RewardResult:
    model: RewardModel
    accuracy: float  # held-out pairwise accuracy at the end
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def score_pairs(
    model: RewardModel, pairs, enc, batch: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rewards, rejected rewards) of every encoded pair, unnormalised."""
    device = model.head.weight.device
    chosen, rejected = [], []
    for i in range(0, len(pairs), batch):
        idx = range(i, min(i + batch, len(pairs)))
        b = pair_batch(pairs, idx, enc)
        r = model(b["idx"].to(device), b["attention_mask"].to(device), normalized=False)
        chosen.append(r[: len(idx)].cpu())
        rejected.append(r[len(idx) :].cpu())
    return torch.cat(chosen), torch.cat(rejected)


def train_reward_model(
    backbone: GPT,
    enc,
    train_rows: Sequence[dict],
    val_rows: Sequence[dict],
    config: RewardConfig | None = None,
    device: str | torch.device = "cpu",
) -> RewardResult:
    """Train a reward model on a copy of ``backbone`` (unchanged) with Bradley-Terry."""
    config = config or RewardConfig()
    block = backbone.config.block_size
    train = encode_pairs(train_rows, enc, block, "train")
    val = encode_pairs(val_rows, enc, block, "validation")
    torch.manual_seed(config.train.seed)
    model = RewardModel(copy.deepcopy(backbone)).to(device)
    model.requires_grad_(True)

    def batch_fn(step: int, micro: int):
        rows = sample_rows(len(train), config.batch_size, config.train.seed, step, micro).tolist()
        return pair_batch(train, rows, enc)

    def loss_fn(m, batch):
        r = m(batch["idx"], batch["attention_mask"], normalized=False)
        n = r.size(0) // 2
        margin = batch["margin"] if config.use_margin else None
        loss = bradley_terry_loss(r[:n], r[n:], margin, config.center_coef)
        return loss, {"accuracy": pairwise_accuracy(r[:n], r[n:])}

    def eval_fn(m) -> dict[str, float]:
        c, r = score_pairs(m, val, enc)
        return {
            "val_loss": float(bradley_terry_loss(c, r)),
            "val_accuracy": pairwise_accuracy(c, r),
        }

    trainer = Trainer(model, config.train, batch_fn, loss_fn, eval_fn)
    result = trainer.fit()
    model.eval()
    final = [h for h in result.history if "val_accuracy" in h][-1]
    return RewardResult(model, final["val_accuracy"], result.history, result.seconds)
