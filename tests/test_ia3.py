"""IA3: identity at init, only k and v (and the MLP's inner activation) scaled, merge
equals unmerged, exact disabling, frozen base, save/load, learning, bad input."""

import copy

import pytest
import torch
from test_adapters import randomise, tiny, toy_base, toy_finetune

from minift.model.heads import SequenceClassifier
from minift.peft import LoRAConfig, apply_lora, disable_adapters, load_adapter, save_adapter
from minift.peft.ia3 import IA3Config, IA3Linear, apply_ia3, merge_ia3, unmerge_ia3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_ia3_at_init_is_the_identity_and_disabling_is_exact():
    base = tiny()
    model = apply_ia3(copy.deepcopy(base))
    idx = torch.randint(0, 71, (3, 12))
    assert torch.equal(model(idx).logits, base(idx).logits)
    randomise(model)
    assert (model(idx).logits - base(idx).logits).abs().max() > 1e-3
    with disable_adapters(model):
        assert torch.equal(model(idx).logits, base(idx).logits)


def test_keys_and_values_are_scaled_queries_are_not():
    base = tiny()
    model = randomise(apply_ia3(copy.deepcopy(base)), std=0.5)
    layer = model.transformer.h[0].attn.c_attn
    assert layer.ia3_l.shape == (48,)  # l_k and l_v, 24 each
    x = torch.randn(2, 6, 24)
    ref = base.transformer.h[0].attn.c_attn(x)
    out = layer(x)
    l_k, l_v = layer.ia3_l[:24], layer.ia3_l[24:]
    assert torch.equal(out[..., :24], ref[..., :24])  # q untouched
    torch.testing.assert_close(out[..., 24:48], ref[..., 24:48] * l_k)
    torch.testing.assert_close(out[..., 48:], ref[..., 48:] * l_v)
    # the MLP: c_proj(l_ff * GELU(c_fc(x))), the inner activation scaled
    ffn = model.transformer.h[0].mlp
    ref_mlp = base.transformer.h[0].mlp
    inner = torch.nn.functional.gelu(ref_mlp.c_fc(x), approximate="tanh")
    expected = ref_mlp.c_proj(inner * ffn.c_proj.ia3_l)
    torch.testing.assert_close(ffn(x), expected)
    assert ffn.c_proj.ia3_l.shape == (96,)


def test_ia3_parameter_count_is_the_papers():
    model = apply_ia3(tiny())
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n == 2 * (2 * 24 + 96)  # per block: l_k, l_v (d each) and l_ff (4d)


def test_merged_equals_unmerged_and_double_merge_is_an_error():
    base = tiny()
    model = randomise(apply_ia3(copy.deepcopy(base)), std=0.5)
    idx = torch.randint(0, 71, (3, 15))
    with torch.no_grad():
        adapted = model(idx).logits
        merge_ia3(model)
        assert all(m.merged for m in model.modules() if isinstance(m, IA3Linear))
        torch.testing.assert_close(model(idx).logits, adapted, rtol=1e-5, atol=1e-5)
        q = model.transformer.h[0].attn.c_attn.base_layer.weight[:24]
        assert torch.equal(q, base.transformer.h[0].attn.c_attn.weight[:24])  # q rows as they were
        with pytest.raises(RuntimeError, match="already merged"):
            merge_ia3(model)
        with disable_adapters(model):
            torch.testing.assert_close(model(idx).logits, base(idx).logits, rtol=1e-5, atol=1e-5)
        unmerge_ia3(model)
        torch.testing.assert_close(model(idx).logits, adapted, rtol=1e-5, atol=1e-5)
        for name, p in base.state_dict().items():
            key = name.replace("c_attn.", "c_attn.base_layer.").replace(
                "mlp.c_proj.", "mlp.c_proj.base_layer."
            )
            torch.testing.assert_close(model.state_dict()[key], p, rtol=1e-5, atol=1e-6)


def test_merge_is_refused_over_another_wrapper():
    model = apply_ia3(apply_lora(tiny(), LoRAConfig(r=2, target_modules=["c_fc", "c_proj"])))
    with pytest.raises(RuntimeError, match="wraps a LoRALinear, not the linear layer itself"):
        merge_ia3(model)
    assert not any(m.merged for m in model.modules() if isinstance(m, IA3Linear))


def test_only_ia3_and_head_train_and_base_weights_stay_bit_identical():
    torch.manual_seed(0)
    clf = SequenceClassifier(tiny(), num_labels=3)
    before = {k: v.clone() for k, v in clf.backbone.state_dict().items()}
    apply_ia3(clf)
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert trainable == {
        f"backbone.transformer.h.{i}.{s}.ia3_l"
        for i in (0, 1)
        for s in ("attn.c_attn", "mlp.c_proj")
    } | {"head.weight", "head.bias"}
    opt = torch.optim.AdamW([p for p in clf.parameters() if p.requires_grad], lr=1e-2)
    clf.train()
    for _ in range(3):
        clf(torch.randint(0, 71, (4, 12)), labels=torch.randint(0, 3, (4,))).loss.backward()
        for n, p in clf.named_parameters():
            assert (p.grad is not None) == p.requires_grad, n
        opt.step()
        opt.zero_grad()
    assert all((p - 1).abs().max() > 0 for n, p in clf.named_parameters() if "ia3_l" in n)
    after = {k.replace(".base_layer", ""): v for k, v in clf.backbone.state_dict().items()}
    for k, v in before.items():
        assert torch.equal(after[k], v), k


def test_save_then_load_onto_a_fresh_base_reproduces_outputs(tmp_path):
    base = tiny()
    model = randomise(apply_ia3(copy.deepcopy(base), IA3Config(attn_parts=["q", "v"])))
    save_adapter(model, tmp_path / "ia3")
    fresh = load_adapter(copy.deepcopy(base), tmp_path / "ia3")
    idx = torch.randint(0, 71, (2, 9))
    assert torch.equal(fresh(idx).logits, model(idx).logits)


def test_ia3_lowers_the_validation_loss():
    torch.manual_seed(0)
    before, after = toy_finetune(apply_ia3(toy_base()), lr=3e-2)
    assert after < 0.5 * before, (before, after)


def test_bad_input_is_a_clear_error_and_changes_nothing():
    with pytest.raises(ValueError, match="attn_parts must be a non-empty subset"):
        IA3Config(attn_parts=["k", "o"])
    model = tiny()
    snapshot = str(model)
    with pytest.raises(ValueError, match=r"\['k_proj'\] match no linear layer"):
        apply_ia3(model, IA3Config(target_modules=["k_proj", "mlp.c_proj"]))
    with pytest.raises(ValueError, match=r"feedforward_modules \['c_fc'\] are not among"):
        apply_ia3(model, IA3Config(feedforward_modules=["c_fc"]))
    assert str(model) == snapshot and all(p.requires_grad for p in model.parameters())
