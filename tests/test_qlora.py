"""minift.quant: the NF4 code book, blockwise quantization, double quantization, QLoRA.

References are written independently here: quantization by argmin over the 16 levels in
float64 (the module uses bucketize on the midpoints), LoRA from minift.peft over an
nn.Linear holding the dequantized weight.
"""

import pytest
import torch

from minift.model import GPT, GPTConfig
from minift.peft.lora_layer import LoRALinear
from minift.quant import (
    NF4Linear,
    QLoRALinear,
    apply_qlora,
    frozen_weight_bits,
    nf4_code,
    qlora_layers,
    quantize_nf4,
)

# Table of NF4 values in Dettmers et al. 2023 (appendix E), as printed there.
PAPER_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]  # fmt: skip


def test_code_book_equals_the_papers_sixteen_values():
    code = nf4_code()
    # The paper's values were computed with the offset rounded to 0.9677083 (we use the
    # exact 1 - (1/30 + 1/32) / 2 = 0.96770833...) and printed from float32: that moves
    # levels by at most 1.2e-7, two float32 ulps at 0.56.
    assert code.tolist() == pytest.approx(PAPER_NF4, abs=2e-7)
    assert code[7] == 0 and code[0] == -1 and code[-1] == 1
    assert (code[1:] > code[:-1]).all()


def reference_nf4(w: torch.Tensor, block: int = 64) -> torch.Tensor:
    """Blockwise absmax NF4 in float64: each weight to the nearest level times its absmax."""
    code = nf4_code()
    flat = w.double().flatten()
    out = torch.empty_like(flat)
    for start in range(0, flat.numel(), block):
        chunk = flat[start : start + block]
        c = chunk.abs().max()
        idx = (chunk[:, None] / c - code[None, :]).abs().argmin(dim=1)
        out[start : start + block] = code[idx] * c
    return out.view(w.shape)


def max_half_gap() -> float:
    code = nf4_code()
    return float((code[1:] - code[:-1]).max() / 2)


@pytest.mark.parametrize("shape", [(37, 45), (3, 7, 11), (200,)])
def test_quantize_dequantize_against_float64_reference(shape):
    torch.manual_seed(sum(shape))
    w = torch.randn(shape) * 0.05 + 0.01
    q = quantize_nf4(w, double_quant=False)
    ours = q.dequantize(torch.float64)
    ref = reference_nf4(w)
    c = w.abs().max()
    # Same levels chosen; values differ only by float32's rounding of code * absmax.
    assert torch.allclose(ours, ref, rtol=0, atol=float(c) * 2**-22)
    # And every weight is within absmax * (largest half-gap of the code) of its value.
    blocks = torch.nn.functional.pad(w.flatten(), (0, (-w.numel()) % 64)).view(-1, 64)
    absmax = blocks.abs().amax(1).repeat_interleave(64)[: w.numel()].view(shape)
    err = (ours - w.double()).abs()
    assert (err <= absmax.double() * max_half_gap() * (1 + 1e-6)).all()


def test_double_quantization_bound_and_bits():
    torch.manual_seed(3)
    w = torch.randn(300, 517) * 0.02
    q = quantize_nf4(w, double_quant=True)
    assert q.scales.dtype == torch.int8
    c_true = torch.nn.functional.pad(w.flatten(), (0, (-w.numel()) % 64)).view(-1, 64)
    c_true = c_true.abs().amax(1)
    c_used = q.block_scales()
    # Second level: int8 of (c - mean) in blocks of 256, so |c - c'| <= absmax_2 / 254.
    step = q.scale_absmax.repeat_interleave(256)[: c_true.numel()] / 254
    assert ((c_used - c_true).abs() <= step * (1 + 1e-5) + 1e-9).all()
    err = (q.dequantize(torch.float64) - w.double()).abs().flatten()
    err = torch.nn.functional.pad(err, (0, (-err.numel()) % 64)).view(-1, 64).amax(1)
    bound = c_used * max_half_gap() + (c_true - c_used).clamp_min(0) + 1e-7
    assert (err <= bound).all()
    # 4 + 8/64 + 32/(64*256) bits, plus padding and one mean: measured from the buffers.
    assert q.bits_per_param() == pytest.approx(4.127, abs=0.01)
    single = quantize_nf4(w, double_quant=False).bits_per_param()
    assert single == pytest.approx(4.5, abs=0.01)


def test_qlora_layer_equals_lora_over_the_dequantized_weight():
    torch.manual_seed(5)
    linear = torch.nn.Linear(45, 37)
    torch.nn.init.normal_(linear.bias)
    qlora = QLoRALinear(linear, r=3, alpha=6.0)
    torch.nn.init.normal_(qlora.lora_B)
    plain = torch.nn.Linear(45, 37)
    with torch.no_grad():
        plain.weight.copy_(qlora.base_layer.dequantized_weight())
        plain.bias.copy_(linear.bias)
    lora = LoRALinear(plain, r=3, alpha=6.0)
    with torch.no_grad():
        lora.lora_A.copy_(qlora.lora_A)
        lora.lora_B.copy_(qlora.lora_B)
    x = torch.randn(2, 5, 45)
    y_q, y_l = qlora(x), lora(x)
    assert torch.equal(y_q, y_l)
    g = torch.randn_like(y_q)
    y_q.backward(g)
    y_l.backward(g)
    assert torch.equal(qlora.lora_A.grad, lora.lora_A.grad)
    assert torch.equal(qlora.lora_B.grad, lora.lora_B.grad)
    # The base is buffers only: nothing of it can train.
    assert [n for n, _ in qlora.named_parameters()] == ["lora_A", "lora_B"]


def test_apply_qlora_on_gpt_starts_at_the_quantized_model_and_learns():
    torch.manual_seed(0)
    config = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=16, vocab_size=71)
    model = GPT(config)
    x = torch.randint(0, 71, (4, 16))
    apply_qlora(model, r=4, alpha=8)
    assert len(qlora_layers(model)) == 2 * 4
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # B = 0: the model computes exactly its quantized base.
    bits = frozen_weight_bits(model)
    assert 4.1 < bits < 4.25
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(10):
        loss = model(x, x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    # State dict round trip keeps the quantized base.
    fresh = apply_qlora(GPT(config), r=4, alpha=8)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x).logits, model(x).logits)


def test_bad_inputs_leave_the_model_untouched():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=30))
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="match no linear layer; the model has: c_attn"):
        apply_qlora(model, target_modules=["q_proj"])
    with pytest.raises(ValueError, match="QLoRA rank r=99"):
        apply_qlora(model, r=99)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert not qlora_layers(model)
    with pytest.raises(ValueError, match="float tensor"):
        quantize_nf4(torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="no QLoRA layers"):
        frozen_weight_bits(model)
    assert isinstance(NF4Linear(torch.nn.Linear(3, 2)).weight_bytes(), int)
