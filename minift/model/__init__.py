"""The transformer: config, attention, MLP, GPT (decoder) and encoder mode, generation."""

from .attention import KVCache
from .config import GPTConfig
from .gpt import GPT, IGNORE_INDEX, ModelOutput

__all__ = ["GPT", "GPTConfig", "IGNORE_INDEX", "KVCache", "ModelOutput"]
