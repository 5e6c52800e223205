"""minift.kernels: hand-written Triton kernels with their PyTorch references.

Each kernel has a readable PyTorch reference (the definition), a torch.autograd.Function
tying its forward and backward, and the one dispatch rule of :mod:`.dispatch`: CUDA
tensors with Triton present take Triton, everything else the reference, and
``MINIFT_KERNELS=reference|triton`` forces one. Nothing here imports Triton eagerly.

- :func:`lora_linear`: y = x W^T + b + s (x A^T) B^T fused (:mod:`.lora`)
- :func:`attention`: flash attention, causal mask aligned to the end (:mod:`.attention`)
- :func:`block_sparse_attention`: flash attention over a block layout (:mod:`.block_sparse`)
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

__all__ = [
    "PATTERNS",
    "FlashAttentionFunction",
    "LoRALinearFunction",
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
    "sliding_window_layout",
    "strided_layout",
    "triton_available",
    "use_triton",
]
