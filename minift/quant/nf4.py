"""4-bit NormalFloat (NF4) blockwise quantization with double-quantized scales
(Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs").

Pretrained weights are close to zero-mean normal, so the best 4-bit code puts equal
probability mass in each of its bins: its levels are quantiles of N(0, 1). NF4 takes 8
quantiles for the positive half and 7 for the negative half (so that 0 is a level exactly
and the code is asymmetric by one level), rescaled to [-1, 1]:

    delta  = (1/2) (1/30 + 1/32)                     keeps the outer quantile finite
    pos_i  = Phi^{-1}(p_i), p = 8 points evenly from 1 - delta down to 1/2 (1/2 excluded)
    neg_j  = -Phi^{-1}(q_j), q = 7 points evenly from 1 - delta down to 1/2 (1/2 excluded)
    code   = sort({neg, 0, pos}) / Phi^{-1}(1 - delta)

Blockwise absmax: the flattened weight is cut into blocks of 64; each block stores its
absmax c = max |w| and, for every weight, the 4-bit index of the code level nearest w / c.
Dequantized, w ~ code[index] * c. Every weight is within c * (largest half-gap of the
code) of its dequantized value, the bound the tests check.

Double quantization: one fp32 c per 64 weights costs 32/64 = 0.5 bits per parameter. The
c's are themselves quantized: their mean is subtracted and they are cut into blocks of
256, each stored as 8-bit integers with one fp32 absmax per block (the paper uses 8-bit
floats here; symmetric int8 is the simpler choice with the same storage). That costs
8/64 + 32/(64*256) = 0.127 bits per parameter: 4.127 bits in all.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

BLOCK = 64  # weights per first-level block
SCALE_BLOCK = 256  # first-level scales per second-level block


def nf4_code() -> torch.Tensor:
    """The 16 NF4 levels, ascending, in float64 (Phi^{-1} is torch.special.ndtri)."""
    delta = 0.5 * (1 / 30 + 1 / 32)
    top = 1 - delta
    pos = torch.special.ndtri(torch.linspace(top, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -torch.special.ndtri(torch.linspace(top, 0.5, 8, dtype=torch.float64)[:-1])
    levels = torch.cat([neg, torch.zeros(1, dtype=torch.float64), pos])
    return levels.sort().values / torch.special.ndtri(torch.tensor(top, dtype=torch.float64))


@functools.cache
def nf4_code_f32(device: torch.device) -> torch.Tensor:
    """The code book in float32 on ``device``, computed once per device."""
    return nf4_code().float().to(device)


@dataclass
class NF4Tensor:
    """A weight stored in NF4: two 4-bit indices per byte and the (double-)quantized scales."""

    packed: torch.Tensor  # uint8 (ceil(numel / 2),): index of element 2i in the high nibble
    shape: tuple[int, ...]
    scales: torch.Tensor  # fp32 (n_blocks,), or int8 when double-quantized
    scale_absmax: torch.Tensor | None = None  # fp32 (ceil(n_blocks / 256),)
    scale_mean: torch.Tensor | None = None  # fp32 scalar

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def nbytes(self) -> int:
        parts = [self.packed, self.scales, self.scale_absmax, self.scale_mean]
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    def bits_per_param(self) -> float:
        return 8 * self.nbytes() / self.numel

    def block_scales(self) -> torch.Tensor:
        """The first-level absmax c of every block, as the forward pass will use it."""
        if self.scale_absmax is None:
            return self.scales
        return dequantize_scales(self.scales, self.scale_absmax, self.scale_mean)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        code = nf4_code().to(device=self.packed.device, dtype=torch.float32)
        idx = torch.stack([self.packed >> 4, self.packed & 0xF], dim=1).flatten()
        values = code[idx.long()]
        pad = (-values.numel()) % BLOCK
        values = torch.nn.functional.pad(values, (0, pad)).view(-1, BLOCK)
        w = (values * self.block_scales()[:, None]).flatten()[: self.numel]
        return w.view(self.shape).to(dtype)


def quantize_scales(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Second level: (c - mean) in blocks of 256, symmetric int8 with an fp32 absmax each."""
    mean = c.mean()
    centred = c - mean
    pad = (-centred.numel()) % SCALE_BLOCK
    blocks = torch.nn.functional.pad(centred, (0, pad)).view(-1, SCALE_BLOCK)
    absmax = blocks.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(blocks / absmax[:, None] * 127).to(torch.int8).flatten()[: c.numel()]
    return q, absmax, mean


def dequantize_scales(q: torch.Tensor, absmax: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    pad = (-q.numel()) % SCALE_BLOCK
    blocks = torch.nn.functional.pad(q.float(), (0, pad)).view(-1, SCALE_BLOCK)
    return (blocks * absmax[:, None] / 127).flatten()[: q.numel()] + mean


@torch.no_grad()
def quantize_nf4(weight: torch.Tensor, double_quant: bool = True) -> NF4Tensor:
    """Quantize ``weight`` (any shape, any float dtype) to NF4 in blocks of 64."""
    if not weight.is_floating_point():
        raise ValueError(f"quantize_nf4 takes a float tensor, got {weight.dtype}")
    if weight.numel() == 0:
        raise ValueError("quantize_nf4 got an empty tensor")
    w = weight.detach().float().flatten()
    pad = (-w.numel()) % BLOCK
    blocks = torch.nn.functional.pad(w, (0, pad)).view(-1, BLOCK)
    c = blocks.abs().amax(dim=1)
    scales = c
    q = absmax = mean = None
    if double_quant:
        q, absmax, mean = quantize_scales(c)
        # Pick each weight's level with the scale the forward pass will use, so the
        # rounding error of the scale is partly absorbed by the choice of level.
        c = dequantize_scales(q, absmax, mean)
        scales = q
    safe = torch.where(c > 0, c, torch.ones_like(c))
    normed = blocks / safe[:, None]
    code = nf4_code().float().to(w.device)
    # The nearest level: the code is sorted, so compare with the midpoints between levels.
    mids = (code[1:] + code[:-1]) / 2
    idx = torch.bucketize(normed.flatten(), mids).to(torch.uint8)[: w.numel()]
    if idx.numel() % 2:
        idx = torch.cat([idx, idx.new_zeros(1)])
    packed = (idx[0::2] << 4) | idx[1::2]
    return NF4Tensor(packed, tuple(weight.shape), scales, absmax, mean)
