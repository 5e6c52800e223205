"""Personalization: simulated users with hidden preferences, contextual adaptation and its
shared scoring, and serving many users' LoRA adapters in one batch.

- :mod:`.users`: five simulated users over the same prompts (topics, lengths), their pairs
- :mod:`.context`: the profile or examples in the prompt; the per-user preference score
- :mod:`.serving`: stacked per-user adapters, each row of a batch through its own
  (:func:`minift.kernels.multi_lora.multi_lora`, Punica/S-LoRA's segmented gather matmul)

Training a user's adapter (DPO) or soft prompt is a job: minift.recipes.personalize.
"""

from minift.personal.context import (
    examples_context,
    preference_correct,
    profile_context,
    with_context,
)
from minift.personal.serving import MultiLoRALinear, stack_adapters, users
from minift.personal.users import USERS, User, get_user, user_pairs

__all__ = [
    "USERS",
    "MultiLoRALinear",
    "User",
    "examples_context",
    "get_user",
    "preference_correct",
    "profile_context",
    "stack_adapters",
    "user_pairs",
    "users",
    "with_context",
]
