"""The models PPO trains and consults: a policy with a value estimate, and a reference.

Value: PPO needs V(s_t), the expected return from each prefix. Two designs:
- a *value head* on the policy's own trunk: a linear layer on the final hidden states,
  initialised to zero so the first values are 0 and the first advantages are the raw
  rewards (no random critic noise); one forward pass gives logits and values;
- a separate *critic*: its own GPT and head, initialised from the reward model (as
  Ouyang et al. 2022 and Huang et al. 2024 do), so it starts out knowing what scores well.

Reference: the KL penalty needs log ref(token). The reference is either a frozen copy of
the starting policy, or, when the policy is trained through LoRA adapters, the very same
model with its adapters switched off (minift.peft.disable_adapters), which gives the base
model's outputs exactly and costs no second copy of the weights.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from minift.model import GPT
from minift.peft import disable_adapters
from minift.peft.core import adapter_layers
from minift.rlhf.reward import RewardModel
from minift.rlhf.rollout import entropy_from_logits, token_logprobs


class Critic(nn.Module):
    """A GPT and a linear head giving one value per position: (B, T) -> (B, T)."""

    def __init__(self, backbone: GPT, head: nn.Linear | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head if head is not None else nn.Linear(backbone.config.n_embd, 1)
        if head is None:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @classmethod
    def from_reward_model(cls, reward_model: RewardModel) -> Critic:
        """A trainable copy of a reward model's backbone and head (the normalisation is
        folded into the head so the critic starts on the normalised reward's scale)."""
        head = copy.deepcopy(reward_model.head)
        with torch.no_grad():
            head.weight.mul_(reward_model.gain)
            head.bias.mul_(reward_model.gain).add_(reward_model.bias)
        critic = cls(copy.deepcopy(reward_model.backbone), head)
        return critic.requires_grad_(True)

    def forward(
        self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self.backbone(idx, attention_mask=attention_mask, compute_logits=False)
        return self.head(out.last_hidden).squeeze(-1)


class PolicyWithValue(nn.Module):
    """A language-model policy and its value function; forward gives (logits, values)."""

    def __init__(self, policy: GPT, critic: Critic | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.critic = critic
        self.value_head: nn.Linear | None = None
        if critic is None:
            self.value_head = nn.Linear(policy.config.n_embd, 1)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)

    def forward(
        self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.policy(idx, attention_mask=attention_mask)
        if self.critic is None:
            values = self.value_head(out.last_hidden).squeeze(-1)
        else:
            values = self.critic(idx, attention_mask)
        return out.logits, values

    def evaluate(
        self,
        sequences: torch.Tensor,
        attention_mask: torch.Tensor,
        prompt_len: int,
        temperature: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-probabilities, values, entropies) of the response tokens, each (B, R).
        The value of token t is read at the state before it (position t - 1), the same
        position whose logits chose it."""
        logits, values = self(sequences, attention_mask)
        logits = logits[:, prompt_len - 1 : -1]
        logp = token_logprobs(logits, sequences[:, prompt_len:], temperature)
        return logp, values[:, prompt_len - 1 : -1], entropy_from_logits(logits, temperature)


class Reference:
    """log ref(response tokens): a frozen model, or the policy with its adapters off."""

    def __init__(self, model: GPT | None = None, policy: GPT | None = None) -> None:
        if (model is None) == (policy is None):
            raise ValueError("give either a frozen reference model or a LoRA policy, not both")
        if policy is not None and not any(True for _ in adapter_layers(policy)):
            raise ValueError(
                "a policy without adapters cannot serve as its own reference: apply LoRA "
                "(minift.peft.apply_lora) or pass a frozen copy as the reference model"
            )
        self.model = model
        self.policy = policy
        if model is not None:
            model.eval().requires_grad_(False)

    @torch.no_grad()
    def logprobs(
        self,
        sequences: torch.Tensor,
        attention_mask: torch.Tensor,
        prompt_len: int,
        temperature: float,
    ) -> torch.Tensor:
        if self.model is not None:
            logits = self.model(sequences, attention_mask=attention_mask).logits
        else:
            with disable_adapters(self.policy):
                logits = self.policy(sequences, attention_mask=attention_mask).logits
        logits = logits[:, prompt_len - 1 : -1]
        return token_logprobs(logits, sequences[:, prompt_len:], temperature)
