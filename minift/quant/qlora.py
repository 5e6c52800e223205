"""QLoRA (Dettmers et al. 2023): LoRA over a frozen base stored in 4-bit NF4.

    y = x dequant(W_nf4)^T + b  +  s * dropout(x) A^T B^T,      s = alpha / r

The base weight is kept only in its quantized form (minift.quant.nf4, about 4.13 bits per
parameter instead of 16 or 32) and dequantized on the fly in each forward pass, into the
compute dtype of the input; gradients flow through it to the input, never into it.
Only A (r x in, Kaiming-uniform) and B (out x r, zero) train, in full precision, so
training starts exactly at the quantized model and the adapter also learns to correct
part of the quantization error. The paper's other two pieces, paged optimizers and the
bf16 compute dtype, are a CUDA memory-manager feature and the autocast setting.

Layer names follow PEFT (lora_A, lora_B, scaling), so a QLoRA layer's adapter has the same
shape and meaning as minift.peft's LoRA layer; the tests check that its output equals
LoRA over the dequantized weight exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from minift.kernels.nf4 import nf4_linear
from minift.quant.nf4 import NF4Tensor, nf4_code_f32, quantize_nf4


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight lives in NF4 (buffers, saved in the state dict)."""

    def __init__(self, linear: nn.Linear, double_quant: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q = quantize_nf4(linear.weight, double_quant)
        self.shape = q.shape
        self.register_buffer("packed", q.packed)
        self.register_buffer("scales", q.scales)
        self.register_buffer("scale_absmax", q.scale_absmax)
        self.register_buffer("scale_mean", q.scale_mean)
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def nf4(self) -> NF4Tensor:
        return NF4Tensor(self.packed, self.shape, self.scales, self.scale_absmax, self.scale_mean)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.nf4().dequantize(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Dequantized inside the matmul by a Triton kernel on CUDA (minift.kernels.nf4);
        # elsewhere dequantize-then-matmul, the kernel's reference.
        q = self.nf4()
        return nf4_linear(
            x, self.packed, q.block_scales(), nf4_code_f32(x.device), self.shape, self.bias
        )

    def weight_bytes(self) -> int:
        return self.nf4().nbytes()


class QLoRALinear(nn.Module):
    """NF4 base + s * B A on the side."""

    def __init__(
        self, linear: nn.Linear, r: int, alpha: float, dropout: float = 0.0, double_quant=True
    ) -> None:
        super().__init__()
        if not 1 <= r <= min(linear.in_features, linear.out_features):
            raise ValueError(
                f"QLoRA rank r={r} must be in [1, min(in_features, out_features)] = "
                f"[1, {min(linear.in_features, linear.out_features)}]"
            )
        self.base_layer = NF4Linear(linear, double_quant)
        self.r, self.scaling = r, alpha / r
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = linear.weight
        self.lora_A = nn.Parameter(torch.empty(r, linear.in_features, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(linear.out_features, r, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's init, as PEFT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_layer(x)
        A, B = self.lora_A.to(x.dtype), self.lora_B.to(x.dtype)
        return base + self.scaling * F.linear(F.linear(self.lora_dropout(x), A), B)


def apply_qlora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16.0,
    target_modules: tuple[str, ...] | list[str] = ("c_attn", "c_proj", "c_fc"),
    dropout: float = 0.0,
    double_quant: bool = True,
) -> nn.Module:
    """Replace every nn.Linear whose name ends with a target by a QLoRALinear, in place,
    and freeze everything else (PEFT's matching rule: ``c_proj`` matches attn.c_proj and
    mlp.c_proj). The lm_head (tied to the embedding) stays as it is."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    chosen = [n for n in linears if any(n == t or n.endswith("." + t) for t in target_modules)]
    unknown = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in linears)]
    if unknown or not chosen:
        names = sorted({n.rsplit(".", 1)[-1] for n in linears})
        raise ValueError(
            f"QLoRA targets {unknown or list(target_modules)} match no linear layer; "
            f"the model has: {', '.join(names)}"
        )
    layers = {n: QLoRALinear(linears[n], r, alpha, dropout, double_quant) for n in chosen}
    # Built before anything changes: a bad rank leaves the model untouched.
    for p in model.parameters():
        p.requires_grad_(False)
    for name, layer in layers.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
    return model


def qlora_layers(model: nn.Module) -> list[QLoRALinear]:
    return [m for m in model.modules() if isinstance(m, QLoRALinear)]


def frozen_weight_bits(model: nn.Module) -> float:
    """Bits per parameter of the quantized base weights, measured from their buffers."""
    layers = qlora_layers(model)
    if not layers:
        raise ValueError("the model has no QLoRA layers (call apply_qlora first)")
    nbytes = sum(m.base_layer.weight_bytes() for m in layers)
    numel = sum(m.base_layer.in_features * m.base_layer.out_features for m in layers)
    return 8 * nbytes / numel
