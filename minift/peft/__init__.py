"""Parameter-efficient fine-tuning: LoRA (and DoRA, rsLoRA), with the shared machinery
for named adapters, freezing, and saving only what was trained."""

from .core import (
    adapter_names,
    disable_adapters,
    match_targets,
    print_trainable_parameters,
    set_adapter,
    trainable_report,
)
from .io import load_adapter, save_adapter
from .lora import LoRAConfig, LoRALinear, apply_lora, merge_and_unload, merge_lora, unmerge_lora

__all__ = [
    "LoRAConfig", "LoRALinear", "adapter_names", "apply_lora", "disable_adapters", "load_adapter",
    "match_targets", "merge_and_unload", "merge_lora", "print_trainable_parameters", "save_adapter",
    "set_adapter", "trainable_report", "unmerge_lora",
]  # fmt: skip
