"""Bottleneck adapters: identity at init, the three layouts computed by hand, exact
disabling, gradients and frozen base, save/load, composition, learning, bad input.

Also home of the toy task that the PEFT learning tests share (imported by
test_ia3, test_prefix_prompt and test_unipelt): chains of tokens that follow one of M
random permutations. A tiny GPT pretrained on chains that start with a *mode token*
naming the permutation must, without that token, guess the permutation from the
context; fine-tuning on mode-1 chains without the mode token is the downstream task.
"""

import copy
import functools

import pytest
import torch

from minift.model import GPT, GPTConfig
from minift.model.heads import SequenceClassifier
from minift.peft import (
    LoRAConfig,
    apply_lora,
    disable_adapters,
    load_adapter,
    save_adapter,
    set_adapter,
)
from minift.peft.adapters import AdapterConfig, ParallelAdapter, SerialAdapter, apply_adapters


# ---------------------------------------------------------------------------- shared helpers
@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Models this small run fastest on one thread (a second only adds synchronisation)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SYMBOLS, MODES, LENGTH = 16, 3, 16


def tiny(**kw) -> GPT:
    cfg = dict(vocab_size=71, block_size=32, n_layer=2, n_head=3, n_embd=24)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


def randomise(model, std=0.3):
    """Give every adapter parameter a random value, so that adapters change the output."""
    from minift.peft.core import adapter_layers, adapter_parameters

    with torch.no_grad():
        for _, layer in adapter_layers(model):
            for p in adapter_parameters(layer):
                p.add_(torch.randn_like(p) * std)
    return model


def chains(n, mode=None, seed=0, with_mode=True):
    """(inputs, targets) for n chains; mode None: each chain a random mode."""
    g = torch.Generator().manual_seed(1234)
    perms = torch.stack([torch.randperm(SYMBOLS, generator=g) for _ in range(MODES)])
    g.manual_seed(seed)
    modes = torch.randint(0, MODES, (n,), generator=g) if mode is None else torch.full((n,), mode)
    x = torch.empty(n, LENGTH, dtype=torch.long)
    x[:, 0] = torch.randint(0, SYMBOLS, (n,), generator=g)
    for t in range(1, LENGTH):
        x[:, t] = perms[modes, x[:, t - 1]]
    if with_mode:
        x = torch.cat([(SYMBOLS + modes)[:, None], x], dim=1)
    return x[:, :-1], x[:, 1:], modes


@functools.lru_cache(maxsize=1)
def _toy_base_state():
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=SYMBOLS + MODES, block_size=LENGTH + 8, n_layer=2, n_head=2, n_embd=32
    )
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(80):
        x, y, _ = chains(32, seed=step)
        model(x, y).loss.backward()
        opt.step()
        opt.zero_grad()
    return cfg, {k: v.clone() for k, v in model.state_dict().items()}


def toy_base() -> GPT:
    """The pretrained toy GPT (built once per process, a few seconds)."""
    cfg, state = _toy_base_state()
    model = GPT(cfg)
    model.load_state_dict(state)
    return model.eval()


def toy_finetune(model, lr: float, steps: int = 40) -> tuple[float, float]:
    """Train ``model``'s trainable parameters on mode-1 chains without the mode token;
    return the validation loss before and after."""
    xv, yv, _ = chains(128, mode=1, seed=10_000, with_mode=False)

    def val() -> float:
        model.eval()
        with torch.no_grad():
            return model(xv, yv).loss.item()

    before = val()
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for step in range(steps):
        x, y, _ = chains(32, mode=1, seed=step, with_mode=False)
        model(x, y).loss.backward()
        opt.step()
        opt.zero_grad()
    return before, val()


# ---------------------------------------------------------------------------- invariants
LAYOUTS = ["houlsby", "pfeiffer", "parallel"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_adapter_at_init_is_the_identity_and_disabling_is_exact(layout):
    base = tiny()
    model = apply_adapters(copy.deepcopy(base), AdapterConfig(layout=layout, reduction_factor=4))
    idx = torch.randint(0, 71, (3, 13))
    assert torch.equal(model(idx).logits, base(idx).logits)
    randomise(model)
    assert (model(idx).logits - base(idx).logits).abs().max() > 1e-3
    with disable_adapters(model):
        assert torch.equal(model(idx).logits, base(idx).logits)


def test_layouts_put_adapters_where_the_papers_do():
    count = {}
    for layout in LAYOUTS:
        model = apply_adapters(tiny(), AdapterConfig(layout=layout, reduction_factor=4))
        serial = [n for n, m in model.named_modules() if isinstance(m, SerialAdapter)]
        parallel = [n for n, m in model.named_modules() if isinstance(m, ParallelAdapter)]
        count[layout] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if layout == "houlsby":
            assert serial == [
                f"transformer.h.{i}.{s}" for i in (0, 1) for s in ("attn.c_proj", "mlp.c_proj")
            ]
        elif layout == "pfeiffer":
            assert serial == ["transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"]
        else:
            assert parallel == ["transformer.h.0.mlp", "transformer.h.1.mlp"] and not serial
    C, m = 24, 6  # per adapter: down (m x C + m) and up (C x m + C)
    per_adapter = C * m + m + m * C + C
    assert count == {
        "houlsby": 4 * per_adapter,
        "pfeiffer": 2 * per_adapter,
        "parallel": 2 * per_adapter,
    }


@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_serial_and_parallel_adapters_compute_the_formulas(act):
    f = torch.relu if act == "relu" else torch.nn.functional.gelu
    base = tiny()
    # serial: y = L(z) + s * A(L(z)),  A(h) = W_up f(W_down h + b_down) + b_up
    model = randomise(
        apply_adapters(copy.deepcopy(base), AdapterConfig("pfeiffer", 4, act, scaling=0.5))
    )
    serial = model.transformer.h[0].mlp.c_proj
    a = serial.adapter
    z = torch.randn(2, 5, 96)
    h = base.transformer.h[0].mlp.c_proj(z)
    by_hand = h + 0.5 * (f(h @ a.down.weight.T + a.down.bias) @ a.up.weight.T + a.up.bias)
    torch.testing.assert_close(serial(z), by_hand)
    # parallel: y = MLP(x) + s * A(x), the adapter reading the MLP's input
    par = randomise(apply_adapters(copy.deepcopy(base), AdapterConfig("parallel", 4, act, 3.0)))
    wrapped, b = par.transformer.h[0].mlp, par.transformer.h[0].mlp.branch.adapter
    x = torch.randn(2, 5, 24)
    mlp = base.transformer.h[0].mlp
    by_hand = mlp(x) + 3.0 * (f(x @ b.down.weight.T + b.down.bias) @ b.up.weight.T + b.up.bias)
    torch.testing.assert_close(wrapped(x), by_hand)


def test_houlsby_block_output_by_hand():
    base = tiny(n_layer=1)
    model = randomise(apply_adapters(copy.deepcopy(base), AdapterConfig("houlsby", 4)))
    blk, ref = model.transformer.h[0], base.transformer.h[0]
    x = torch.randn(2, 7, 24)
    inputs = _causal_inputs(2, 7)
    h_attn = ref.attn(ref.ln_1(x), inputs)[0]
    x1 = x + h_attn + blk.attn.c_proj.adapter(h_attn)
    h_mlp = ref.mlp(ref.ln_2(x1))
    expected = x1 + h_mlp + blk.mlp.c_proj.adapter(h_mlp)
    torch.testing.assert_close(blk(x, inputs)[0], expected, rtol=1e-5, atol=1e-6)


def _causal_inputs(B, T):
    from minift.model.attention import AttentionInputs

    positions = torch.arange(T).expand(B, T)
    return AttentionInputs(positions=positions, mask=None, causal_no_mask=True)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_only_adapters_and_head_train_and_base_weights_stay_bit_identical(layout):
    torch.manual_seed(0)
    clf = SequenceClassifier(tiny(), num_labels=3)
    before = {k: v.clone() for k, v in clf.backbone.state_dict().items()}
    apply_adapters(clf, AdapterConfig(layout=layout, reduction_factor=4))
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter." in n or n.startswith("head.") for n in trainable)
    opt = torch.optim.AdamW([p for p in clf.parameters() if p.requires_grad], lr=1e-2)
    clf.train()
    for _ in range(3):
        idx = torch.randint(0, 71, (4, 12))
        clf(idx, labels=torch.randint(0, 3, (4,))).loss.backward()
        for n, p in clf.named_parameters():
            assert (p.grad is not None) == p.requires_grad, n
        assert all(p.grad.abs().sum() > 0 for n, p in clf.named_parameters() if ".up." in n)
        opt.step()
        opt.zero_grad()
    after = {k.replace(".base_layer", ""): v for k, v in clf.backbone.state_dict().items()}
    for k, v in before.items():
        assert torch.equal(after[k], v), k


@pytest.mark.parametrize("layout", LAYOUTS)
def test_save_then_load_onto_a_fresh_base_reproduces_outputs(layout, tmp_path):
    base = SequenceClassifier(tiny(), num_labels=2).eval()
    model = randomise(
        apply_adapters(copy.deepcopy(base), AdapterConfig(layout=layout, reduction_factor=2))
    )
    save_adapter(model, tmp_path / "ad")
    fresh = load_adapter(copy.deepcopy(base), tmp_path / "ad")
    idx = torch.randint(0, 71, (2, 9))
    assert torch.equal(fresh(idx).logits, model(idx).logits)


def test_adapters_compose_with_lora_and_with_each_other(tmp_path):
    base = tiny()
    model = copy.deepcopy(base)
    apply_lora(model, LoRAConfig(r=2, target_modules=["c_attn", "c_proj"]))
    apply_adapters(model, AdapterConfig("houlsby", 4))
    apply_adapters(model, AdapterConfig("parallel", 4, adapter_name="par"))
    apply_lora(model, LoRAConfig(r=2, target_modules=["c_fc"], adapter_name="par"))  # inside mlp
    randomise(model)
    assert type(model.transformer.h[0].mlp.base_layer.c_fc).__name__ == "LoRALinear"
    idx = torch.randint(0, 71, (2, 10))
    with disable_adapters(model):
        assert torch.equal(model(idx).logits, base(idx).logits)
    set_adapter(model, ["default", "par"])
    both = model(idx).logits
    set_adapter(model, "par")
    only_par = model(idx).logits
    assert not torch.allclose(both, only_par)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("branch" in n or "c_fc.lora" in n for n in trainable)
    set_adapter(model, ["default", "par"])
    for name in ("default", "par"):
        save_adapter(model, tmp_path / name, adapter_name=name)
    fresh = load_adapter(load_adapter(copy.deepcopy(base), tmp_path / "default"), tmp_path / "par")
    assert torch.equal(fresh(idx).logits, both)


def test_adapters_plus_an_unfrozen_last_block(tmp_path):
    base = SequenceClassifier(tiny(), num_labels=2).eval()
    config = AdapterConfig("pfeiffer", 4, trainable_extra=["head", "transformer.h.1"])
    model = randomise(apply_adapters(copy.deepcopy(base), config))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if ".h.0." in n} == {
        f"backbone.transformer.h.0.mlp.c_proj.adapter.{a}.{b}"
        for a in ("down", "up")
        for b in ("weight", "bias")
    }
    assert "backbone.transformer.h.1.attn.c_attn.weight" in trainable and "head.weight" in trainable
    with torch.no_grad():
        model.backbone.transformer.h[1].attn.c_attn.weight.mul_(1.5)
    save_adapter(model, tmp_path / "hybrid")
    fresh = load_adapter(copy.deepcopy(base), tmp_path / "hybrid")
    idx = torch.randint(0, 71, (2, 9))
    assert torch.equal(fresh(idx).logits, model(idx).logits)


def test_adapters_lower_the_validation_loss():
    for layout in LAYOUTS:
        torch.manual_seed(0)
        model = apply_adapters(toy_base(), AdapterConfig(layout=layout, reduction_factor=4))
        before, after = toy_finetune(model, lr=1e-2)
        assert after < 0.5 * before, (layout, before, after)


def test_bad_input_is_a_clear_error_and_changes_nothing():
    with pytest.raises(ValueError, match="unknown adapter layout 'serial'"):
        AdapterConfig(layout="serial")
    for rf in (0, -4, 2.5):
        with pytest.raises(ValueError, match="reduction_factor must be a positive integer"):
            AdapterConfig(reduction_factor=rf)
    with pytest.raises(ValueError, match="unknown non_linearity"):
        AdapterConfig(non_linearity="swish!")
    model = tiny()
    snapshot = str(model)
    with pytest.raises(
        ValueError, match=r"attn.c_proj: reduction_factor 5 does not divide the hidden width 24"
    ):
        apply_adapters(model, AdapterConfig("houlsby", 5))
    with pytest.raises(ValueError, match=r"\['ffn'\] match no module"):
        apply_adapters(model, AdapterConfig("parallel", 4, target_modules=["mlp", "ffn"]))
    with pytest.raises(ValueError, match="match no linear layer"):
        apply_adapters(model, AdapterConfig("houlsby", 4, target_modules=["attn.out_proj"]))
    with pytest.raises(ValueError, match=r"\['transformer.h.7'\] match no module"):
        apply_adapters(model, AdapterConfig("houlsby", 4, trainable_extra=["transformer.h.7"]))
    assert str(model) == snapshot and all(p.requires_grad for p in model.parameters())
