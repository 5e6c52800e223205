"""UniPELT's gates computed as the paper says, and hybrids: every method stacked on one
model switches off exactly, saves and loads, generates the same with and without the
cache, and learns."""

import copy

import pytest
import torch
from test_adapters import randomise, tiny, toy_base, toy_finetune

from minift.model.heads import SequenceClassifier
from minift.peft import (
    LoRAConfig,
    LoRALinear,
    apply_lora,
    disable_adapters,
    load_adapter,
    merge_lora,
    save_adapter,
    unmerge_lora,
)
from minift.peft.adapters import AdapterConfig, apply_adapters
from minift.peft.ia3 import IA3Config, apply_ia3
from minift.peft.prefix import PrefixConfig, apply_prefix_tuning
from minift.peft.prompt import PromptConfig, apply_prompt_tuning
from minift.peft.unipelt import UniPELTConfig, apply_unipelt


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def unipelt(base, **kw):
    config = UniPELTConfig(**{"r": 2, "reduction_factor": 4, "num_virtual_tokens": 3, **kw})
    return randomise(apply_unipelt(copy.deepcopy(base), config))


def test_each_part_is_scaled_by_its_gate():
    torch.manual_seed(0)
    base = tiny()
    model = unipelt(base)
    # LoRA on q and v only: y = W x + b + sigmoid(W_GL x) s B A x
    lora = model.transformer.h[0].attn.c_attn
    x = torch.randn(2, 5, 24)
    gate = torch.sigmoid(x @ lora.lora_gate.weight.T + lora.lora_gate.bias)
    low_rank = x @ lora.lora_A.T @ (lora.lora_B * lora.lora_B_mask).T
    expected = base.transformer.h[0].attn.c_attn(x) + gate * lora.scaling * low_rank
    torch.testing.assert_close(lora(x), expected)
    assert torch.equal(lora(x)[..., 24:48], base.transformer.h[0].attn.c_attn(x)[..., 24:48])
    # the adapter after the MLP: h + sigmoid(W_GA h) A(h)
    adapter = model.transformer.h[1].mlp.c_proj
    z = torch.randn(2, 5, 96)
    h = base.transformer.h[1].mlp.c_proj(z)
    gate = torch.sigmoid(adapter.gate(h))
    torch.testing.assert_close(adapter(z), h + gate * adapter.adapter(h))
    # the prefix: keys and values times mean_t sigmoid(W_GP x_t), x the attention's input
    idx = torch.randint(0, 71, (2, 7))
    with torch.no_grad():
        model(idx)
        prefix = model.prefix_tuning["default"]
        x = base.transformer.wte(idx) + base.transformer.wpe(torch.arange(7))
        x = base.transformer.h[0].ln_1(x)
        g = torch.sigmoid(prefix.gates[0](x)).mean(dim=1)
        k, v = model.transformer.h[0].attn.prefix(2)
        pk = prefix.prefix[0, 0].view(3, 3, 8).transpose(0, 1)  # (H, P, D)
        torch.testing.assert_close(k, g.view(2, 1, 1, 1) * pk)
        assert 0 < g.min() and g.max() < 1


def test_disabled_gives_the_base_output_and_merging_is_refused():
    base = tiny()
    model = unipelt(base)
    idx = torch.randint(0, 71, (2, 9))
    assert (model(idx).logits - base(idx).logits).abs().max() > 1e-3
    with disable_adapters(model):
        assert torch.equal(model(idx).logits, base(idx).logits)
    with pytest.raises(RuntimeError, match="cannot be merged: its gate depends on the input"):
        merge_lora(model)


def test_every_gate_trains_and_base_weights_stay_bit_identical(tmp_path):
    torch.manual_seed(0)
    clf = SequenceClassifier(tiny(), num_labels=3)
    fresh = copy.deepcopy(clf).eval()
    before = {k: v.clone() for k, v in clf.backbone.state_dict().items()}
    apply_unipelt(clf, UniPELTConfig(r=2, reduction_factor=4, num_virtual_tokens=3))
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    gates = {n for n in trainable if "gate" in n}
    assert len(gates) == 3 * 2 * 2  # LoRA, adapter, prefix gates (weight, bias) in 2 blocks
    opt = torch.optim.AdamW([p for p in clf.parameters() if p.requires_grad], lr=1e-2)
    clf.train()
    for step in range(3):
        clf(torch.randint(0, 71, (4, 12)), labels=torch.randint(0, 3, (4,))).loss.backward()
        for n, p in clf.named_parameters():
            assert (p.grad is not None) == p.requires_grad, n
        # B and W_up start at zero, so the LoRA and adapter gates get gradient from step 2
        if step > 0:
            assert all(dict(clf.named_parameters())[n].grad.abs().sum() > 0 for n in gates)
        opt.step()
        opt.zero_grad()
    after = {k.replace(".base_layer", ""): v for k, v in clf.backbone.state_dict().items()}
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    clf.eval()
    save_adapter(clf, tmp_path / "uni")
    loaded = load_adapter(fresh, tmp_path / "uni")
    idx = torch.randint(0, 71, (3, 10))
    assert torch.equal(loaded(idx).logits, clf(idx).logits)


def test_unipelt_lowers_the_validation_loss():
    torch.manual_seed(0)
    model = apply_unipelt(toy_base(), UniPELTConfig(r=4, reduction_factor=4, num_virtual_tokens=4))
    before, after = toy_finetune(model, lr=1e-2)
    assert after < 0.5 * before, (before, after)


def everything(model, name="default"):
    """LoRA, Houlsby adapters, IA3, a prefix and a soft prompt, all on one model."""
    apply_lora(model, LoRAConfig(r=2, target_modules=["c_attn", "c_fc"], adapter_name=name))
    apply_adapters(model, AdapterConfig("houlsby", 4, adapter_name=name))
    apply_ia3(model, IA3Config(adapter_name=name))
    apply_prefix_tuning(model, PrefixConfig(num_virtual_tokens=2, adapter_name=name))
    apply_prompt_tuning(model, PromptConfig(num_virtual_tokens=2, adapter_name=name))
    return randomise(model, std=0.2)


def test_every_method_stacks_on_one_model(tmp_path):
    base = tiny()
    model = everything(copy.deepcopy(base))
    assert [e["method"] for e in model.peft_config["default"]] == [
        "lora", "adapter", "ia3", "prefix", "prompt",
    ]  # fmt: skip
    idx = torch.randint(0, 71, (2, 6))
    with disable_adapters(model):
        assert torch.equal(model(idx).logits, base(idx).logits)
    cached = model.generate(idx, 8, temperature=0)
    assert torch.equal(cached, model.generate(idx, 8, temperature=0, use_cache=False))
    save_adapter(model, tmp_path / "all")
    fresh = load_adapter(copy.deepcopy(base), tmp_path / "all")
    assert torch.equal(fresh(idx).logits, model(idx).logits)
    assert torch.equal(fresh.generate(idx, 8, temperature=0), cached)


def test_lora_plus_prefix_learns_more_than_the_prefix_alone():
    torch.manual_seed(0)
    prefix_only = apply_prefix_tuning(toy_base(), PrefixConfig(num_virtual_tokens=4))
    torch.manual_seed(0)
    hybrid = apply_lora(toy_base(), LoRAConfig(r=4, target_modules=["c_attn"]))
    apply_prefix_tuning(hybrid, PrefixConfig(num_virtual_tokens=4))
    trainable = {n for n, p in hybrid.named_parameters() if p.requires_grad}
    assert trainable == {"prefix_tuning.default.prefix"} | {
        f"transformer.h.{i}.attn.c_attn.lora_{ab}" for i in (0, 1) for ab in "AB"
    }
    before, alone = toy_finetune(prefix_only, lr=3e-2, steps=20)
    _, both = toy_finetune(hybrid, lr=3e-2, steps=20)
    assert both < alone < before, (before, alone, both)


def test_bad_input_is_a_clear_error_and_changes_nothing():
    with pytest.raises(ValueError, match="rank r must be a positive integer"):
        UniPELTConfig(r=0)
    with pytest.raises(ValueError, match="num_virtual_tokens must be a positive integer"):
        UniPELTConfig(num_virtual_tokens=0)
    with pytest.raises(ValueError, match="qkv_parts must be a non-empty subset"):
        UniPELTConfig(lora_parts=["x"])
    model = tiny()
    snapshot = str(model)
    with pytest.raises(ValueError, match="reduction_factor 5 does not divide the hidden width 24"):
        apply_unipelt(model, UniPELTConfig(reduction_factor=5))
    apply_prefix_tuning(model, PrefixConfig(num_virtual_tokens=2))
    snapshot = str(model)
    with pytest.raises(ValueError, match="already has a prefix adapter named 'default'"):
        apply_unipelt(model, UniPELTConfig(reduction_factor=4))
    assert str(model) == snapshot


def test_merging_a_lora_over_unipelt_is_refused_before_any_weight_changes():
    """merge_lora reaches the gated layer under a plain LoRA one: it must say no up front
    (before: the outer layer merged, then the gated one raised, half-merged)."""
    torch.manual_seed(0)
    base = tiny()
    model = unipelt(base)
    randomise(apply_lora(model, LoRAConfig(r=2, target_modules=["c_attn"], adapter_name="x")))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeError, match="cannot be merged: its gate depends on the input"):
        merge_lora(model)
    assert not any(getattr(m, "merged", False) for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the plain LoRA alone may merge: the gated layer below adds to W x, so W + s B A folds
    idx = torch.randint(0, 71, (2, 9))
    with torch.no_grad():
        adapted = model(idx).logits
        merge_lora(model, "x")
        torch.testing.assert_close(model(idx).logits, adapted, rtol=1e-4, atol=1e-5)
        with disable_adapters(model):
            torch.testing.assert_close(model(idx).logits, base(idx).logits, rtol=1e-4, atol=1e-5)
        unmerge_lora(model, "x")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=1e-6)


def test_lora_gate_scales_plain_lora_per_token():
    """The documented choice: G_L multiplies LoRA's own s B A x (a gate at 1 is plain
    LoRA with the same r and alpha; alpha = r is the authors' G_L B A x), and it is
    computed per token, so no position's output depends on a later token."""
    torch.manual_seed(0)
    base = tiny()
    layer = unipelt(base, r=3, alpha=3.0).transformer.h[0].attn.c_attn
    x = torch.randn(2, 6, 24)
    with torch.no_grad():
        gate = torch.sigmoid(layer.lora_gate(x))
        authors = layer.base_layer(x) + gate * (x @ layer.lora_A.T @ layer.effective_B().T)
        torch.testing.assert_close(layer(x), authors)
        later = x.clone()
        later[:, 3:] = torch.randn(2, 3, 24)
        assert torch.equal(layer(later)[:, :3], layer(x)[:, :3])
        assert not torch.allclose(layer(later)[:, 3:], layer(x)[:, 3:])
        plain = LoRALinear(layer.base_layer, 3, 3.0, parts=[0, 2], n_parts=3)
        plain.lora_A.copy_(layer.lora_A)
        plain.lora_B.copy_(layer.lora_B)
        layer.lora_gate.weight.zero_()
        layer.lora_gate.bias.fill_(50.0)  # sigmoid(50) rounds to 1 in float32
        assert torch.equal(layer(x), plain(x))
    adapter = unipelt(base).transformer.h[0].mlp.c_proj
    z = torch.randn(2, 6, 96)
    later = z.clone()
    later[:, 3:] = torch.randn(2, 3, 96)
    assert torch.equal(adapter(later)[:, :3], adapter(z)[:, :3])
