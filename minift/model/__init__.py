"""The transformer: config, attention, MLP, GPT (decoder) and encoder mode, generation."""

from minift.model.config import GPTConfig, MoEConfig, SparseConfig
from minift.model.gpt import GPT, IGNORE_INDEX, ModelOutput
from minift.model.kv_cache import KVCache

__all__ = [
    "GPT",
    "GPTConfig",
    "IGNORE_INDEX",
    "KVCache",
    "MoEConfig",
    "ModelOutput",
    "SparseConfig",
]
