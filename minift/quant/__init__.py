"""Quantization for fine-tuning: 4-bit NormalFloat weights and QLoRA (Dettmers et al. 2023)."""

from minift.quant.nf4 import NF4Tensor, nf4_code, quantize_nf4
from minift.quant.qlora import NF4Linear, QLoRALinear, apply_qlora, frozen_weight_bits, qlora_layers

__all__ = [
    "NF4Linear",
    "NF4Tensor",
    "QLoRALinear",
    "apply_qlora",
    "frozen_weight_bits",
    "nf4_code",
    "qlora_layers",
    "quantize_nf4",
]
