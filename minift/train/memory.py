"""Memory per device for training, from the parameter counts: the arithmetic behind
"does it fit?" for full fine-tuning, LoRA, QLoRA, FSDP and tensor parallelism.

Per parameter (Rajbhandari et al. 2020, ZeRO, section 3):

    full, fp32          4 weight + 4 gradient + 8 Adam (m, v)                    = 16 bytes
    full, mixed bf16    2 weight + 2 gradient + 4 fp32 master + 8 Adam            = 16 bytes
    LoRA                frozen base: weight only (4 fp32 / 2 bf16); each adapter
                        weight 16 bytes as above
    QLoRA               the blocks' linear weights in NF4 (4.127 bits, minift.quant), the
                        rest of the frozen base (embeddings, norms, biases) in weight
                        bytes, adapters 16 bytes (Dettmers et al. 2023)

FSDP over W devices divides weights, gradients and optimizer state by W (ZeRO-3); tensor
parallelism over T devices (Megatron-LM, Shoeybi et al. 2019) divides the blocks' matrices
by T and keeps the embeddings, norms and biases whole on each. Activations are left out:
they depend on batch and length (and activation checkpointing). A test checks the fp32
counts against the bytes of the tensors a real training step allocates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minift.model import GPT, GPTConfig

NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # minift.quant.nf4 with double quantization
METHODS = ("full", "lora", "qlora")


@dataclass
class Counts:
    total: int  # every parameter, shared tensors once
    block_matrices: int  # the weights of the blocks' linear layers (what LoRA and TP touch)
    lora: int  # adapter weights at rank r on every block linear layer


def parameter_counts(config: GPTConfig, lora_r: int = 16) -> Counts:
    with torch.device("meta"):
        model = GPT(config)
    total = model.num_params()
    mats, lora = 0, 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and ".h." in f".{name}.":
            mats += m.weight.numel()
            lora += lora_r * (m.in_features + m.out_features)
    return Counts(total, mats, lora)


def memory_per_device(
    config: GPTConfig,
    method: str = "full",
    weight_bytes: int = 2,
    fsdp: int = 1,
    tensor_parallel: int = 1,
    lora_r: int = 16,
) -> dict[str, float]:
    """Bytes per device of weights, gradients and optimizer state (weight_bytes 2: bf16
    mixed precision with an fp32 master copy; 4: fp32 throughout)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if weight_bytes not in (2, 4) or fsdp < 1 or tensor_parallel < 1:
        raise ValueError("weight_bytes must be 2 or 4, and fsdp, tensor_parallel >= 1")
    c = parameter_counts(config, lora_r)
    rest = c.total - c.block_matrices  # embeddings, norms, biases
    master = 4 if weight_bytes == 2 else 0
    per_trained = weight_bytes + weight_bytes + master + 8  # = 16 either way
    if method == "full":
        weights = weight_bytes * (c.block_matrices / tensor_parallel + rest)
        trained = c.block_matrices / tensor_parallel + rest
        grads_opt = (per_trained - weight_bytes) * trained
    else:
        base_mats = c.block_matrices / tensor_parallel
        mats = base_mats * (NF4_BITS / 8 if method == "qlora" else weight_bytes)
        adapters = c.lora / tensor_parallel
        weights = mats + weight_bytes * rest + weight_bytes * adapters
        grads_opt = (per_trained - weight_bytes) * adapters
    out = {"weights": weights / fsdp, "grads_and_optimizer": grads_opt / fsdp}
    out["total"] = out["weights"] + out["grads_and_optimizer"]
    return out


def measured_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of the tensors a training step holds: parameters and buffers (the NF4 weights
    are buffers), gradients, optimizer state (step counters excluded)."""
    seen = {}
    for t in list(model.parameters()) + list(model.buffers()):
        seen[id(t)] = t
    weights = sum(t.numel() * t.element_size() for t in seen.values())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in seen.values()
                if isinstance(p, torch.nn.Parameter) and p.grad is not None)  # fmt: skip
    state = sum(v.numel() * v.element_size() for s in optimizer.state.values()
                for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0)  # fmt: skip
    return {"weights": weights, "grads_and_optimizer": grads + state}
