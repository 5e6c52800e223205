"""Parameter-efficient fine-tuning: LoRA (with DoRA and rsLoRA), bottleneck adapters, IA3,
prefix and prompt tuning, UniPELT, layer-wise methods, and the shared machinery for named
adapters, freezing, and saving only what was trained."""

from minift.peft.adapters import AdapterConfig, apply_adapters
from minift.peft.core import (
    adapter_names,
    disable_adapters,
    find_gpt,
    print_trainable_parameters,
    set_adapter,
    trainable_report,
)
from minift.peft.ia3 import IA3Config, apply_ia3, merge_ia3, unmerge_ia3
from minift.peft.io import load_adapter, save_adapter
from minift.peft.lora import (
    LoRAConfig,
    LoRALinear,
    apply_lora,
    merge_and_unload,
    merge_lora,
    unmerge_lora,
)
from minift.peft.prefix import PrefixConfig, apply_prefix_tuning, drop_reparameterization
from minift.peft.prompt import PromptConfig, apply_prompt_tuning
from minift.peft.targets import match_targets
from minift.peft.unipelt import UniPELTConfig, apply_unipelt

__all__ = [
    "AdapterConfig", "IA3Config", "LoRAConfig", "LoRALinear", "PrefixConfig", "PromptConfig",
    "UniPELTConfig", "adapter_names", "apply_adapters", "apply_ia3", "apply_lora",
    "apply_prefix_tuning", "apply_prompt_tuning", "apply_unipelt", "disable_adapters",
    "drop_reparameterization", "find_gpt", "load_adapter", "match_targets", "merge_and_unload",
    "merge_ia3", "merge_lora", "print_trainable_parameters", "save_adapter", "set_adapter",
    "trainable_report", "unmerge_ia3", "unmerge_lora",
]  # fmt: skip
