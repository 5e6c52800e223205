"""FLOPs of a training step from the architecture, and model FLOPs utilisation.

A matmul y = x W with W of shape (n, m) costs 2 n m FLOPs per row of x (one multiply and
one add per weight). For a token that passes through W matmul weights (every nn.Linear,
the lm_head included; embedding lookups cost nothing):

    forward            2 W
    backward, inputs   2 W     dL/dx = dL/dy W^T   (needed to reach earlier layers)
    backward, weights  2 W_t   dL/dW = x^T dL/dy   (only for the weights being trained)

so full fine-tuning costs 6 W per token, Kaplan et al.'s (2020) "C = 6N" and the count
Chinchilla (Hoffmann et al. 2022, appendix F) uses for its compute budgets. Attention adds
FLOPs that no weight accounts for: scores q k^T and mixing p v are each 2 T d per token and
layer, forward 4 n_layer T d per token (PaLM's count, Chowdhery et al. 2022, appendix B:
the full T x T matrix, as dense kernels compute it; Kaplan et al.'s Table 1 lists half),
and its backward is twice its forward (gradients of both operands of each product).

A frozen base with A trained weights added on top (LoRA, adapters) pays

    per token = 2 (W + A) + 2 (W + A) + 2 A + 3 * 4 n_layer T d  =  4 W + 6 A + 12 n_layer T d

which is why LoRA saves about a third of the compute, not 99%: the base's forward and its
input gradients remain. (The first block's input projection gets no input gradient when
nothing below it trains, a correction of at most 2 x that layer's weights per token.)

MFU (Chowdhery et al. 2022) is the achieved model FLOP/s over the device's peak; here the
peak is measured with a large matmul (:func:`measure_peak_flops`), not read off a spec
sheet, so a laptop CPU gets a meaningful figure too.
"""

from __future__ import annotations

import time

import torch

from minift.model import GPT, GPTConfig


def matmul_weights(config: GPTConfig) -> int:
    """Weights one token multiplies by: every nn.Linear weight (lm_head included), with an
    MoE layer's experts counted top_k times, not n_experts times. Counted on the meta
    device, so a 175B config costs no memory."""
    with torch.device("meta"):
        model = GPT(config)
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    if config.moe.experts > 0:
        from minift.model.moe import moe_layers

        for moe in moe_layers(model):
            expert = sum(
                m.weight.numel() for m in moe.experts[0].modules() if isinstance(m, torch.nn.Linear)
            )
            total -= (moe.n_experts - moe.top_k) * expert
    return total


def attention_flops_per_token(config: GPTConfig, seq_len: int) -> float:
    """Forward FLOPs of q k^T and p v per token: 4 n_layer T d times the pattern's density."""
    from minift.model.sparse import density

    return 4.0 * config.n_layer * seq_len * config.n_embd * density(config, seq_len)


def flops_per_step(
    config: GPTConfig | GPT,
    batch_size: int,
    seq_len: int,
    trainable: int | None = None,
    training: bool = True,
) -> float:
    """FLOPs of one optimizer step on batch_size sequences of seq_len tokens.

    trainable=None: every weight trains (full fine-tuning, 6 W per token).
    trainable=A: the base is frozen and A weights added on top train (LoRA, adapters):
    4 W + 6 A per token. training=False: the forward pass alone (evaluation, generation).
    """
    if isinstance(config, GPT):
        config = config.config
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
    if seq_len > config.block_size:
        raise ValueError(f"seq_len {seq_len} exceeds block_size {config.block_size}")
    if trainable is not None and trainable < 0:
        raise ValueError(f"trainable must be >= 0 (or None for all weights), got {trainable}")
    W = matmul_weights(config)
    attn = attention_flops_per_token(config, seq_len)
    if not training:
        per_token = 2 * W + attn + 2 * (trainable or 0)
    elif trainable is None:
        per_token = 6 * W + 3 * attn
    else:
        per_token = 4 * W + 6 * trainable + 3 * attn
    return float(per_token * batch_size * seq_len)


def added_trainable(model: torch.nn.Module) -> int | None:
    """The A of :func:`flops_per_step` for a model: None when every base weight trains,
    else the number of trainable parameters (adapters, LoRA factors, heads)."""
    params = {id(p): p for p in model.parameters()}.values()
    if all(p.requires_grad for p in params):
        return None
    return sum(p.numel() for p in params if p.requires_grad)


def training_flops(n_params: float, tokens: float) -> float:
    """Kaplan et al. / Chinchilla's whole-run estimate C = 6 N D."""
    return 6.0 * n_params * tokens


def measure_peak_flops(
    device: str | torch.device = "cpu", size: int = 1024, dtype: torch.dtype = torch.float32
) -> float:
    """Achieved FLOP/s of a square matmul, the best of a few repeats: the ceiling a
    training step's matmuls can reach on this device with this many threads."""
    device = torch.device(device)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best


def mfu(flops: float, seconds: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: (flops / seconds) / peak."""
    if seconds <= 0 or peak_flops_per_s <= 0:
        raise ValueError(f"seconds and peak must be > 0, got {seconds}, {peak_flops_per_s}")
    return flops / seconds / peak_flops_per_s
