"""The transformer: config, attention, MLP, GPT (decoder) and encoder mode, generation."""

from minift.model.attention import KVCache
from minift.model.config import GPTConfig
from minift.model.gpt import GPT, IGNORE_INDEX, ModelOutput

__all__ = ["GPT", "GPTConfig", "IGNORE_INDEX", "KVCache", "ModelOutput"]
