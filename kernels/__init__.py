"""minift.kernels: hand-written Triton kernels with their PyTorch references.

Each kernel has a readable PyTorch reference (the definition), a torch.autograd.Function
tying its forward and backward, and the one dispatch rule of :mod:`.dispatch`: CUDA
tensors with Triton present take Triton, everything else the reference, and
``MINIFT_KERNELS=reference|triton`` forces one. Nothing here imports Triton eagerly.

- :func:`lora_linear`: y = x W^T + b + s (x A^T) B^T fused (:mod:`.lora`)
- :func:`attention`: flash attention, causal mask aligned to the end (:mod:`.attention`)
- :func:`block_sparse_attention`: flash attention over a block layout (:mod:`.block_sparse`)
- :func:`.multi_lora.multi_lora`: each row of a batch through its own LoRA adapter, rows grouped by
  adapter in one launch (Punica / S-LoRA's segmented gather matmul; :mod:`.multi_lora`)
- :func:`nf4_linear`: x W^T + b with W stored as 4-bit NormalFloat, dequantized inside
  the matmul (QLoRA's frozen base; :mod:`.nf4`)
- layout builders for sparse attention (:mod:`.layouts`)
"""

from .attention import FlashAttentionFunction, attention, attention_reference, causal_mask
from .block_sparse import block_sparse_attention, block_sparse_attention_reference
from .dispatch import interpreting, kernel_mode, triton_available, use_triton
from .layouts import (
    PATTERNS,
    bigbird_layout,
    dense_layout,
    fixed_layout,
    global_layout,
    layout_to_mask,
    make_layout,
    sliding_window_layout,
    strided_layout,
)
from .lora import LoRALinearFunction, lora_linear, lora_linear_reference

# the function multi_lora keeps its module's name, so it is not re-exported here (it would
# hide the submodule minift.kernels.multi_lora)
from .multi_lora import MultiLoRAFunction, multi_lora_loop, multi_lora_reference
from .nf4 import NF4LinearFunction, nf4_linear, nf4_linear_reference

__all__ = [
    "PATTERNS",
    "FlashAttentionFunction",
    "LoRALinearFunction",
    "MultiLoRAFunction",
    "NF4LinearFunction",
    "attention",
    "attention_reference",
    "bigbird_layout",
    "block_sparse_attention",
    "block_sparse_attention_reference",
    "causal_mask",
    "dense_layout",
    "fixed_layout",
    "global_layout",
    "interpreting",
    "kernel_mode",
    "layout_to_mask",
    "lora_linear",
    "lora_linear_reference",
    "make_layout",
    "multi_lora_loop",
    "multi_lora_reference",
    "nf4_linear",
    "nf4_linear_reference",
    "sliding_window_layout",
    "strided_layout",
    "triton_available",
    "use_triton",
]
