"""minift.train.flops against torch.utils.flop_counter.FlopCounterMode on the same step.

FlopCounterMode counts every matmul PyTorch runs (2 m n k each), forward and backward;
the model is called with output_attentions=True so attention runs as two batched matmuls
the counter sees (the CPU's fused SDPA kernel has no FLOP formula registered). Both
counts are integers well below 2**53, so they are compared exactly.
"""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from minift.model import GPT, GPTConfig, MoEConfig
from minift.peft import LoRAConfig, apply_lora
from minift.train.flops import (
    added_trainable,
    flops_per_step,
    matmul_weights,
    measure_peak_flops,
    mfu,
    training_flops,
)


def counted(model, x, backward=True):
    with FlopCounterMode(display=False) as counter:
        out = model(x, x, output_attentions=True)
        if backward:
            out.loss.backward()
    return counter.get_total_flops()


CONFIGS = {
    "gpt2": dict(),
    "swiglu_untied_rope": dict(mlp="swiglu", tie_weights=False, pos_emb="rope", n_inner=40),
    "moe_top2": dict(moe=MoEConfig(experts=4, top_k=2)),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_full_training_step_matches_flop_counter(name):
    torch.manual_seed(0)
    config = GPTConfig(
        n_layer=3, n_head=2, n_embd=36, block_size=16, vocab_size=97, **CONFIGS[name]
    )
    model = GPT(config)
    B, T = 3, 13  # not multiples of anything
    x = torch.randint(0, 97, (B, T))
    assert counted(model, x) == flops_per_step(config, B, T)
    with torch.no_grad():
        assert counted(model, x, backward=False) == flops_per_step(config, B, T, training=False)


def test_lora_step_matches_up_to_the_stated_first_layer_correction():
    torch.manual_seed(1)
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=97)
    model = apply_lora(GPT(config), LoRAConfig(r=4, target_modules=["c_attn", "c_proj"]))
    A = added_trainable(model)
    assert A == sum(p.numel() for p in model.parameters() if p.requires_grad)
    B, T = 3, 11
    x = torch.randint(0, 97, (B, T))
    predicted = flops_per_step(config, B, T, trainable=A)
    # Nothing below block 0's c_attn trains, so autograd skips its input gradient (and its
    # lora_A's): 2 FLOPs per weight of both, per token.
    layer0 = model.transformer.h[0].attn.c_attn
    skipped = 2 * (layer0.base_layer.weight.numel() + layer0.lora_A.numel()) * B * T
    assert counted(model, x) == predicted - skipped
    # LoRA saves at most a third of full fine-tuning's compute: the base's forward and
    # input gradients (4 W of 6 W) remain.
    full = flops_per_step(config, B, T)
    assert 2 / 3 * full < predicted < full


def test_full_model_has_no_added_trainable_and_6n_rule():
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=97)
    model = GPT(config)
    assert added_trainable(model) is None
    W = matmul_weights(config)
    # GPT-2 layout: 12 d^2 per block plus the (tied) lm_head.
    assert W == 2 * 12 * 32 * 32 + 97 * 32
    # Attention vanishes for one-token sequences relative to weights: 6 W + 12 L d.
    assert flops_per_step(config, 1, 1) == 6 * W + 12 * 2 * 32
    assert training_flops(1e9, 20e9) == 6 * 1e9 * 20e9


def test_gpt2_small_flops_per_token_from_the_paper_shape():
    # GPT-2 small at T=1024: 6 * (85M blocks + 38.6M lm_head) + 12 * 12 * 1024 * 768.
    config = GPTConfig()
    W = 12 * 12 * 768 * 768 + 50257 * 768
    assert flops_per_step(config, 1, 1024) == pytest.approx(1024 * (6 * W + 144 * 1024 * 768))


def test_bad_inputs():
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=50)
    with pytest.raises(ValueError, match="exceeds block_size 8"):
        flops_per_step(config, 1, 9)
    with pytest.raises(ValueError, match="batch_size and seq_len must be >= 1"):
        flops_per_step(config, 0, 4)
    with pytest.raises(ValueError, match="trainable must be >= 0"):
        flops_per_step(config, 1, 4, trainable=-1)
    with pytest.raises(ValueError, match="seconds and peak must be > 0"):
        mfu(1e9, 0.0, 1e12)


def test_peak_and_mfu():
    peak = measure_peak_flops("cpu", size=64)
    assert peak > 0
    assert mfu(peak, 1.0, peak) == pytest.approx(1.0)
