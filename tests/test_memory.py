"""minift.train.memory: the per-device arithmetic against the bytes that a real fp32
training step allocates (parameters, buffers, gradients, AdamW state) for full
fine-tuning, LoRA and QLoRA; FSDP and tensor parallelism as the divisions they are."""

import pytest
import torch

from minift.model import GPT, GPTConfig
from minift.peft import LoRAConfig, apply_lora
from minift.quant import apply_qlora
from minift.train.memory import measured_bytes, memory_per_device, parameter_counts

CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=101)
TARGETS = ["c_attn", "c_proj", "c_fc"]


def one_step(model):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    x = torch.randint(0, 101, (2, 9))
    model(x, x).loss.backward()
    opt.step()
    return measured_bytes(model, opt)


def test_full_fp32_is_16_bytes_per_parameter_measured():
    torch.manual_seed(0)
    measured = one_step(GPT(CONFIG))
    predicted = memory_per_device(CONFIG, "full", weight_bytes=4)
    assert measured == {
        "weights": predicted["weights"],
        "grads_and_optimizer": predicted["grads_and_optimizer"],
    }
    assert predicted["total"] == 16 * GPT(CONFIG).num_params()


def test_lora_and_qlora_measured():
    torch.manual_seed(0)
    lora = apply_lora(GPT(CONFIG), LoRAConfig(r=4, target_modules=TARGETS))
    measured = one_step(lora)
    predicted = memory_per_device(CONFIG, "lora", weight_bytes=4, lora_r=4)
    assert measured["weights"] == predicted["weights"]
    assert measured["grads_and_optimizer"] == predicted["grads_and_optimizer"]
    q = apply_qlora(GPT(CONFIG), r=4, alpha=8, target_modules=tuple(TARGETS))
    measured = one_step(q)
    predicted = memory_per_device(CONFIG, "qlora", weight_bytes=4, lora_r=4)
    assert measured["grads_and_optimizer"] == predicted["grads_and_optimizer"]
    # NF4's padding to whole blocks and one mean per tensor: within 1% of the weights
    assert measured["weights"] == pytest.approx(predicted["weights"], rel=0.01)


def test_sharding_divides():
    full = memory_per_device(CONFIG, "full")
    assert memory_per_device(CONFIG, "full", fsdp=4)["total"] == pytest.approx(full["total"] / 4)
    c = parameter_counts(CONFIG)
    tp = memory_per_device(CONFIG, "full", tensor_parallel=2)
    # TP halves the blocks' matrices only: 16 bytes each
    assert full["total"] - tp["total"] == pytest.approx(16 * c.block_matrices / 2)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown method 'dora'"):
        memory_per_device(CONFIG, "dora")
    with pytest.raises(ValueError, match="weight_bytes must be 2 or 4"):
        memory_per_device(CONFIG, "full", weight_bytes=1)
