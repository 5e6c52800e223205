"""AdapterFusion (Pfeiffer et al. 2021): pinned to one adapter it is that adapter, only the
fusion (and the head) trains, its gradients are right, and bad input is one clear error.

Tiny GPTs in float64 on one thread; no training beyond one backward pass.
"""

import copy

import pytest
import torch
from torch.func import functional_call

from minift.model import GPT, GPTConfig
from minift.model.heads import SequenceClassifier
from minift.multitask import AdapterFusion, apply_adapter_fusion, remove_fusion
from minift.multitask.fusion import (
    FusedAdapters,
    fusion_layers,
    fusion_regularization,
    fusion_weights,
)
from minift.peft import set_adapter
from minift.peft.adapters import AdapterConfig, apply_adapters

NAMES = ["a", "b", "c"]
PIN = 100.0  # score of the pinned adapter: exp(-100) vanishes next to 1 in float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny() -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=71, block_size=16, n_layer=2, n_head=2, n_embd=16)
    return GPT(cfg).double().eval()


def with_adapters(model, names=NAMES, layout="pfeiffer"):
    for n in names:
        apply_adapters(model, AdapterConfig(layout=layout, reduction_factor=4, adapter_name=n))
    return model


def bottlenecks(model, name):
    from minift.peft.core import adapter_layers

    return [layer.adapter for _, layer in adapter_layers(model, name)]


def idx(n=3, t=10):
    return torch.randint(0, 71, (n, t), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("j", range(len(NAMES)))
def test_pinned_fusion_equals_the_one_nonzero_adapter(j):
    """All adapters but j are zero (W_up, b_up = 0, their start); adapter j is random
    except that its output's coordinate 0 is exactly 1. With W_Q = 0, b_Q = PIN e_0 and
    W_K = I the scores are PIN for j and 0 for the others: softmax one-hot on j; with
    W_V = I the fused model must equal the model with adapter j alone."""
    model = with_adapters(tiny())
    torch.manual_seed(10 + j)
    with torch.no_grad():
        for ad in bottlenecks(model, NAMES[j]):
            ad.down.weight.normal_(0, 0.5)
            ad.up.weight.normal_(0, 0.5)
            ad.up.bias.normal_(0, 0.5)
            ad.up.weight[0].zero_()
            ad.up.bias[0] = 1.0
    alone = copy.deepcopy(model)
    set_adapter(alone, NAMES[j])  # inactive adapters compute exactly their base layer
    with torch.no_grad():
        expected = alone(idx()).logits

    sites = apply_adapter_fusion(model, NAMES)
    assert sites == [f"transformer.h.{i}.mlp.c_proj" for i in range(2)]
    dim = model.config.n_embd
    with torch.no_grad():
        for _, layer in fusion_layers(model):
            f = layer.fusion
            f.query.weight.zero_()
            f.query.bias.zero_()
            f.query.bias[0] = PIN
            f.key.weight.copy_(torch.eye(dim, dtype=torch.float64))
            f.value.weight.copy_(torch.eye(dim, dtype=torch.float64))
        got = model(idx()).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    for p in fusion_weights(model).values():
        assert p[j] == 1.0 and sum(p) - p[j] < 1e-40  # one-hot up to exp(-PIN)


def test_pinned_layer_reads_one_of_several_nonzero_adapters():
    """The layer alone, every adapter output nonzero: pinned to j it returns h + a_j."""
    torch.manual_seed(0)
    f = AdapterFusion(5, dtype=torch.float64)
    h = torch.randn(2, 4, 5, dtype=torch.float64)
    a = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    a[..., 0] = -1.0
    a[..., 1, 0] = 1.0  # only adapter 1 has +1 in coordinate 0
    with torch.no_grad():
        f.query.weight.zero_()
        f.query.bias.copy_(PIN * torch.eye(5, dtype=torch.float64)[0])
        f.key.weight.copy_(torch.eye(5, dtype=torch.float64))
        f.value.weight.copy_(torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(f(h, a), h + a[..., 1, :], rtol=0, atol=1e-12)


def test_value_starts_near_identity_and_the_seed_fixes_the_start():
    model = with_adapters(tiny(), ["a", "b"])
    apply_adapter_fusion(model, ["a", "b"], seed=3)
    other = with_adapters(tiny(), ["a", "b"])
    apply_adapter_fusion(other, ["a", "b"], seed=3)
    for (_, x), (_, y) in zip(fusion_layers(model), fusion_layers(other)):
        for p, q in zip(x.fusion.parameters(), y.fusion.parameters()):
            assert torch.equal(p, q)
    assert fusion_regularization(model).item() < 1e-9  # ||I - W_V||^2, noise 1e-6
    with torch.no_grad():
        model(idx())
    for p in fusion_weights(model).values():
        assert len(p) == 2 and sum(p) == pytest.approx(1.0)


def test_only_the_fusion_and_the_head_train():
    model = SequenceClassifier(tiny(), num_labels=3).double()
    with_adapters(model, ["a", "b"])
    apply_adapter_fusion(model, ["a", "b"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    fusion = {
        f"{site}.fusion.{n}" for site, layer in fusion_layers(model) for n, _ in layer.fusion.named_parameters()
    }  # fmt: skip
    assert trainable == fusion | {"head.weight", "head.bias"}
    c = model.config.n_embd
    assert sum(p.numel() for n, p in model.named_parameters() if n in fusion) == 2 * (3 * c * c + c)
    # the adapters and the base get no gradient; the fusion and the head do
    model(idx()).logits.sum().backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in trainable), n


def test_fusion_gradients_match_finite_differences():
    torch.manual_seed(0)
    f = AdapterFusion(4, value_noise=0.1, dtype=torch.float64)
    with torch.no_grad():
        f.query.weight.mul_(2.0)  # scores of order 1: a softmax far from uniform or one-hot
    names = [n for n, _ in f.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in f.parameters())
    h = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    a = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)

    def fn(h, a, *ps):
        return functional_call(f, dict(zip(names, ps)), (h, a))

    assert torch.autograd.gradcheck(fn, (h, a, *params))


def test_remove_fusion_restores_the_adapters():
    model = with_adapters(tiny(), ["a", "b"])
    torch.manual_seed(1)
    with torch.no_grad():
        for n in ("a", "b"):
            for ad in bottlenecks(model, n):
                ad.up.weight.normal_(0, 0.3)
        before = model(idx()).logits
    apply_adapter_fusion(model, ["a", "b"])
    remove_fusion(model)
    assert not any(isinstance(m, FusedAdapters) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(idx()).logits, before, rtol=0, atol=0)


def _state(model):
    return (
        [type(m).__name__ for m in model.modules()],
        {n: p.requires_grad for n, p in model.named_parameters()},
    )


@pytest.mark.parametrize(
    "names, message",
    [
        ([], "needs at least one adapter to fuse"),
        (["a", "nope"], r"no serial adapter named \['nope'\]; the model has \['a', 'b', 'h'\]"),
        (["a", "a"], r"adapter named twice in the fusion: \['a'\]"),
        (["a", "p"], r"\['p'\] are not serial bottleneck adapters"),
        (["a", "h"], "a fusion site must hold exactly"),
        (["a"], r"not fused \['h', 'b'\]"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(names, message):
    model = with_adapters(tiny(), ["a", "b"])
    with_adapters(model, ["h"], layout="houlsby")  # on attn.c_proj too: sites a, b lack
    with_adapters(model, ["p"], layout="parallel")
    before = _state(model)
    with pytest.raises(ValueError, match=message):
        apply_adapter_fusion(model, names)
    assert _state(model) == before


def test_fusing_twice_and_bad_options_are_errors():
    model = with_adapters(tiny(), ["a", "b"])
    apply_adapter_fusion(model, ["a", "b"])
    with pytest.raises(ValueError, match="already has AdapterFusion layers"):
        apply_adapter_fusion(model, ["a", "b"])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        AdapterFusion(4, temperature=0.0)
    f = AdapterFusion(4)
    with pytest.raises(ValueError, match=r"must be \(\.\.\., N, C\)"):
        f(torch.zeros(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="no AdapterFusion layers"):
        fusion_regularization(tiny())
