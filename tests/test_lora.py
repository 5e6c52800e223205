"""LoRA against peft, and its invariants: merge, disable, DoRA, parts of c_attn, save/load."""

import copy

import pytest
import torch

from minift.model import GPT, GPTConfig
from minift.model.heads import SequenceClassifier
from minift.peft import (
    IA3Config,
    LoRAConfig,
    LoRALinear,
    apply_ia3,
    apply_lora,
    disable_adapters,
    load_adapter,
    merge_and_unload,
    merge_lora,
    save_adapter,
    set_adapter,
    trainable_report,
    unmerge_lora,
)


def tiny(**kw) -> GPT:
    cfg = dict(vocab_size=71, block_size=32, n_layer=2, n_head=3, n_embd=24)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


def randomise_lora(model, std=0.3):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0, std)
                if m.lora_magnitude is not None:
                    m.lora_magnitude.mul_(1 + 0.1 * torch.randn_like(m.lora_magnitude))


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(2)
    cfg = GPT2Config(
        vocab_size=89,
        n_positions=33,
        n_embd=36,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    hf = GPT2LMHeadModel(cfg).eval()
    path = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(path)
    return hf, path


@pytest.mark.parametrize("targets", [["c_attn"], ["c_attn", "c_proj", "c_fc"]])
def test_lora_matches_peft(hf_pair, targets):
    from peft import LoraConfig, get_peft_model

    hf, path = hf_pair
    ref = get_peft_model(
        copy.deepcopy(hf),
        LoraConfig(
            r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, fan_in_fan_out=True
        ),
    )
    ours = apply_lora(
        GPT.from_pretrained(path).eval(), LoRAConfig(r=4, alpha=8, target_modules=targets)
    )
    peft_layers = {
        n.split("base_model.model.")[1]: m
        for n, m in ref.named_modules()
        if hasattr(m, "lora_A") and isinstance(m.lora_A, torch.nn.ModuleDict)
    }
    ours_layers = {n: m for n, m in ours.named_modules() if isinstance(m, LoRALinear)}
    assert sorted(peft_layers) == sorted(ours_layers)
    with torch.no_grad():
        for name, layer in peft_layers.items():
            layer.lora_B["default"].weight.normal_(0, 0.2)
            ours_layers[name].lora_A.copy_(layer.lora_A["default"].weight)
            ours_layers[name].lora_B.copy_(layer.lora_B["default"].weight)
    idx = torch.randint(0, 89, (2, 33))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx).logits, ref(idx).logits, rtol=1e-5, atol=1e-5)
        ref.merge_adapter()
        merge_lora(ours)
        for name, layer in peft_layers.items():
            # Conv1D stores (in, out): peft's merged weight, transposed, is ours.
            torch.testing.assert_close(
                ours_layers[name].base_layer.weight,
                layer.base_layer.weight.t(),
                rtol=1e-5,
                atol=1e-6,
            )


@pytest.mark.parametrize(
    "options", [dict(), dict(use_dora=True), dict(use_rslora=True), dict(qkv_parts=["q", "v"])]
)
def test_merged_equals_unmerged_and_disabled_equals_base(options):
    base = tiny()
    model = apply_lora(
        copy.deepcopy(base), LoRAConfig(r=3, alpha=6, target_modules="all-linear", **options)
    )
    randomise_lora(model)
    idx = torch.randint(0, 71, (3, 20))
    with torch.no_grad():
        adapted = model(idx).logits
        with disable_adapters(model):
            assert torch.equal(model(idx).logits, base(idx).logits)
        assert (adapted - base(idx).logits).abs().max() > 1e-3
        merge_lora(model)
        torch.testing.assert_close(model(idx).logits, adapted, rtol=1e-4, atol=1e-5)
        with pytest.raises(RuntimeError, match="already merged"):
            merge_lora(model)
        with disable_adapters(model):
            torch.testing.assert_close(model(idx).logits, base(idx).logits, rtol=1e-4, atol=1e-5)
        unmerge_lora(model)
        torch.testing.assert_close(model(idx).logits, adapted, rtol=1e-4, atol=1e-5)
        merge_and_unload(model)
        assert not any(isinstance(m, LoRALinear) for m in model.modules())
        torch.testing.assert_close(model(idx).logits, adapted, rtol=1e-4, atol=1e-5)


def test_lora_at_init_is_the_base_model():
    base = tiny()
    model = apply_lora(
        copy.deepcopy(base), LoRAConfig(r=4, target_modules=["c_attn", "c_fc"], use_dora=True)
    )
    idx = torch.randint(0, 71, (2, 11))
    torch.testing.assert_close(model(idx).logits, base(idx).logits, rtol=1e-5, atol=1e-6)


def test_qkv_parts_adapt_only_the_chosen_parts():
    model = apply_lora(tiny(), LoRAConfig(r=2, target_modules=["c_attn"], qkv_parts=["q", "v"]))
    layer = model.transformer.h[0].attn.c_attn
    assert layer.lora_A.shape == (4, 24) and layer.lora_B.shape == (72, 4)
    randomise_lora(model)
    delta = layer.delta_weight()
    assert delta[24:48].abs().max() == 0  # k rows untouched
    assert delta[:24].abs().max() > 0 and delta[48:].abs().max() > 0
    # each part has its own rank-r pair: the q block of B never reads v's rank columns
    assert torch.equal(layer.effective_B()[:24, 2:], torch.zeros(24, 2))


def test_scaling_rules():
    assert LoRAConfig(r=16, alpha=32).scaling == 2.0
    assert LoRAConfig(r=16, alpha=32, use_rslora=True).scaling == 8.0


def test_only_lora_and_head_train_and_base_weights_stay_bit_identical():
    torch.manual_seed(0)
    clf = SequenceClassifier(tiny(), num_labels=3)
    before = {k: v.clone() for k, v in clf.backbone.state_dict().items()}
    apply_lora(clf, LoRAConfig(r=2, target_modules=["c_attn", "c_fc"]))
    trainable = sorted(n for n, p in clf.named_parameters() if p.requires_grad)
    assert (
        all(("lora_" in n) or n.startswith("head.") for n in trainable)
        and "head.weight" in trainable
    )
    opt = torch.optim.AdamW([p for p in clf.parameters() if p.requires_grad], lr=1e-2)
    clf.train()
    for _ in range(5):
        idx = torch.randint(0, 71, (4, 12))
        loss = clf(idx, labels=torch.randint(0, 3, (4,))).loss
        loss.backward()
        for n, p in clf.named_parameters():
            assert (p.grad is not None) == p.requires_grad, n
        opt.step()
        opt.zero_grad()
    after = clf.backbone.state_dict()
    for k, v in before.items():
        key = (
            k
            if k in after
            else k.replace("c_attn.", "c_attn.base_layer.").replace("c_fc.", "c_fc.base_layer.")
        )
        assert torch.equal(after[key], v), k
    report = trainable_report(clf)
    assert 0 < report["percent"] < 30


def test_save_then_load_onto_a_fresh_base_reproduces_outputs(tmp_path):
    torch.manual_seed(0)
    base = tiny()
    model = apply_lora(
        copy.deepcopy(base), LoRAConfig(r=3, target_modules=["c_attn"], use_dora=True)
    )
    randomise_lora(model)
    save_adapter(model, tmp_path / "ad")
    fresh = load_adapter(copy.deepcopy(base), tmp_path / "ad")
    idx = torch.randint(0, 71, (2, 15))
    assert torch.equal(fresh(idx).logits, model(idx).logits)


def test_two_named_adapters_switch():
    base = tiny()
    model = copy.deepcopy(base)
    apply_lora(model, LoRAConfig(r=2, target_modules=["c_attn"], adapter_name="a"))
    randomise_lora(model)
    apply_lora(model, LoRAConfig(r=2, target_modules=["c_attn"], adapter_name="b"))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear) and m.adapter_name == "b":
                m.lora_B.normal_(0, 0.3)
    idx = torch.randint(0, 71, (2, 10))
    set_adapter(model, "a")
    only_a = model(idx).logits
    set_adapter(model, "b")
    only_b = model(idx).logits
    assert not torch.allclose(only_a, only_b)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all("base_layer.lora" not in n for n in trainable)  # "a" sits inside "b" and is frozen
    with pytest.raises(ValueError, match=r"no adapter named \['c'\]"):
        set_adapter(model, "c")


def test_bad_input_is_a_clear_error_and_changes_nothing(tmp_path):
    model = tiny()
    snapshot = str(model)
    with pytest.raises(
        ValueError,
        match=r"match no linear layer; layer names end with \['c_attn', 'c_fc', 'c_proj'\]",
    ):
        apply_lora(model, LoRAConfig(target_modules=["c_attn", "q_proj"]))
    with pytest.raises(ValueError, match="rank r must be a positive integer"):
        LoRAConfig(r=0)
    assert str(model) == snapshot and all(p.requires_grad for p in model.parameters())
    # adapter weights for another model size: refused, nothing applied
    other = apply_lora(tiny(n_embd=30), LoRAConfig(r=2))
    save_adapter(other, tmp_path / "other")
    with pytest.raises(ValueError, match="do not fit the model.*has shape"):
        load_adapter(model, tmp_path / "other")
    assert str(model) == snapshot


def test_a_refused_merge_changes_no_weight():
    """LoRA over IA3 in block 1 cannot merge (IA3 would see the merged weight); the merge
    is refused before block 0's LoRA, which could merge, touches its weight."""
    model = tiny()
    apply_ia3(model, IA3Config(target_modules=["h.1.attn.c_attn"], feedforward_modules=[]))
    randomise_lora(apply_lora(model, LoRAConfig(r=2, target_modules=["c_attn"])))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeError, match="wraps a IA3Linear"):
        merge_lora(model)
    assert not any(m.merged for m in model.modules() if isinstance(m, LoRALinear))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_lora_layer_through_the_fused_triton_kernel(monkeypatch):
    """MINIFT_KERNELS=triton sends LoRALinear through minift.kernels.lora_linear (the
    interpreter on the CPU, the real kernel on CUDA): same output and gradients as eager."""
    # On a GPU machine TRITON_INTERPRET is unset, so the CPU tensors would have no Triton path.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Triton's float32 dots use TF32 on a GPU (relative error ~3e-4, docs/kernels.md).
    tol = dict(rtol=2e-3, atol=2e-3) if device == "cuda" else dict(rtol=1e-4, atol=1e-4)
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(21, 19), r=3, alpha=6).to(device)
    with torch.no_grad():
        layer.lora_B.normal_(0, 0.3)
    layer.base_layer.weight.requires_grad_(False)
    x = torch.randn(2, 5, 21, device=device, requires_grad=True)
    ref = layer(x)
    ref.square().sum().backward()
    grads = [x.grad.clone(), layer.lora_A.grad.clone(), layer.lora_B.grad.clone()]
    for t in (x, layer.lora_A, layer.lora_B):
        t.grad = None
    monkeypatch.setenv("MINIFT_KERNELS", "triton")
    import minift.kernels as K

    calls = []
    real = K.lora_linear
    monkeypatch.setattr(K, "lora_linear", lambda *a: calls.append(1) or real(*a))
    out = layer(x)
    out.square().sum().backward()
    assert calls == [1]
    torch.testing.assert_close(out, ref, **tol)
    for got, want in zip([x.grad, layer.lora_A.grad, layer.lora_B.grad], grads):
        torch.testing.assert_close(got, want, **tol)


def test_a_rank_above_the_layer_width_is_refused_and_changes_nothing():
    """B A (out x in) has rank at most min(in, out): a larger r only adds parameters."""
    model = tiny()  # width 24: c_attn 24 -> 72, so r <= 24 (and <= 24 per q/k/v part)
    snapshot = str(model)
    for options in (dict(r=25), dict(r=25, qkv_parts=["q", "v"])):
        with pytest.raises(
            ValueError,
            match=r"cannot wrap transformer.h.0.attn.c_attn: LoRA rank r=25 exceeds "
            r"min\(in_features, out_features.*\) = 24.*choose r <= 24",
        ):
            apply_lora(model, LoRAConfig(target_modules=["c_attn"], **options))
    assert str(model) == snapshot and all(p.requires_grad for p in model.parameters())
    # the bound is per layer: c_fc (24 -> 16) refuses r = 20 after c_attn accepted it
    narrow = tiny(n_inner=16)
    with pytest.raises(ValueError, match=r"h.0.mlp.c_fc: LoRA rank r=20 exceeds .* = 16"):
        apply_lora(narrow, LoRAConfig(r=20, target_modules=["c_attn", "c_fc"]))
    assert not any(isinstance(m, LoRALinear) for m in narrow.modules())
    apply_lora(model, LoRAConfig(r=24, target_modules=["c_attn"]))  # full rank is allowed
    for bad in (dict(r=2.5), dict(r=True), dict(alpha=float("nan")), dict(alpha=float("inf"))):
        with pytest.raises(ValueError, match="must be a positive"):
            LoRAConfig(**bad)


@pytest.mark.parametrize("dora_first", [True, False])
def test_dora_refuses_to_share_a_layer_with_another_lora_adapter(dora_first):
    """DoRA's norm ||W + s B A|| is of the layer's own W: stacked under or over another
    LoRA adapter, merging would be wrong (before: errors up to 1.0 and a base weight that
    merge-then-unmerge moved). Refused in both orders, the model left as it was."""
    model = tiny()
    apply_lora(model, LoRAConfig(r=2, use_dora=dora_first, adapter_name="a"))
    randomise_lora(model)
    before, snapshot = copy.deepcopy(model.state_dict()), str(model)
    with pytest.raises(ValueError, match="cannot wrap .*c_attn: DoRA cannot share a layer.*'a'"):
        apply_lora(model, LoRAConfig(r=2, use_dora=not dora_first, adapter_name="b"))
    assert str(model) == snapshot and model.peft_config.keys() == {"a"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # DoRA over any other wrapper is refused as well; on its own layer it is fine
    ia3 = apply_ia3(tiny(), IA3Config(target_modules=["c_attn"], feedforward_modules=[]))
    with pytest.raises(ValueError, match="DoRA cannot share a layer .*IA3Linear"):
        apply_lora(ia3, LoRAConfig(r=2, use_dora=True))
    apply_lora(model, LoRAConfig(r=2, use_dora=True, target_modules=["c_fc"], adapter_name="b"))


def test_stacked_lora_adapters_merge_unmerge_disable_and_unload_exactly():
    """Two plain LoRA adapters on one layer add up, so they merge in any order; switched
    off while merged, the stack gives the base output (before: the outer layer computed
    with the inner one's update still merged in)."""
    torch.manual_seed(0)
    base = tiny()
    model = copy.deepcopy(base)
    for name in ("a", "b"):
        randomise_lora(apply_lora(model, LoRAConfig(r=2, target_modules="all-linear", adapter_name=name)))  # fmt: skip
    idx = torch.randint(0, 71, (2, 12))
    weight = model.transformer.h[0].attn.c_attn.base_layer.base_layer.weight
    w0 = weight.detach().clone()
    with torch.no_grad():
        adapted = model(idx).logits
        merge_lora(model)
        torch.testing.assert_close(model(idx).logits, adapted, rtol=1e-4, atol=1e-5)
        with disable_adapters(model):
            torch.testing.assert_close(model(idx).logits, base(idx).logits, rtol=1e-4, atol=1e-5)
        set_adapter(model, "a")  # "b" (outside) off, "a" (inside) on: base + a
        only_a = model(idx).logits
        unmerge_lora(model)
        torch.testing.assert_close(weight, w0, rtol=0, atol=1e-6)
        torch.testing.assert_close(only_a, model(idx).logits, rtol=1e-4, atol=1e-5)
        set_adapter(model, ["a", "b"])
        merge_and_unload(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(idx).logits, adapted, rtol=1e-4, atol=1e-5)


def test_apply_lora_checks_the_trainable_extras_before_changing_anything():
    """apply_lora used to wrap every layer, then fail on an unknown trainable extra."""
    model = tiny()
    snapshot = str(model)
    with pytest.raises(ValueError, match=r"\['transformer.h.9'\] match no module"):
        apply_lora(model, LoRAConfig(r=2, trainable_extra=["head", "transformer.h.9"]))
    assert str(model) == snapshot and not hasattr(model, "peft_config")
