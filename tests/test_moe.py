"""Mixture of experts: the router against hand-written formulas, capacity and overflow,
equality with the dense MLP where it must hold, upcycling, and the losses in the model."""

import copy
import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minift.model import GPT, GPTConfig, MoEConfig
from minift.model.layers import MLP
from minift.model.moe import (
    MoEMLP,
    capacity_keep,
    load_balancing_loss,
    moe_layers,
    router_z_loss,
)
from minift.model.upcycle import upcycle

SMALL = dict(vocab_size=61, block_size=32, n_layer=2, n_head=2, n_embd=16)


def moe_config(**kw) -> GPTConfig:
    """kw: MoEConfig options over 4 experts, top-2."""
    return GPTConfig(**SMALL, moe=MoEConfig(**{"experts": 4, "top_k": 2, **kw}))


def test_one_expert_is_the_dense_mlp():
    config = moe_config(experts=1, top_k=1)
    dense, moe = MLP(config), MoEMLP(config)
    moe.experts[0].load_state_dict(dense.state_dict())
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(moe(x), dense(x))
    assert moe.stats.balance_loss.item() == pytest.approx(1.0)  # E f P = 1 * 1 * 1


def test_gates_sum_to_one_over_the_chosen_experts_and_follow_the_softmax():
    moe = MoEMLP(moe_config(experts=5, top_k=3))
    x = torch.randn(40, 16)
    chosen, gates, kept = moe.route(x)
    torch.testing.assert_close(gates.sum(-1), torch.ones(40))
    probs = (x @ moe.router.weight.T).softmax(-1)
    top = probs.topk(3, dim=-1)
    assert torch.equal(chosen, top.indices) and kept.all()
    torch.testing.assert_close(gates, top.values / top.values.sum(-1, keepdim=True))
    switch = MoEMLP(moe_config(experts=5, top_k=1))  # norm_topk: off for top-1
    switch.router.load_state_dict(moe.router.state_dict())
    _, g1, _ = switch.route(x)
    torch.testing.assert_close(g1[:, 0], probs.max(-1).values)  # Switch: the raw probability


def test_router_runs_in_float32_under_bf16_autocast():
    moe = MoEMLP(moe_config())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, gates, _ = moe.route(torch.randn(8, 16))
        y = moe(torch.randn(2, 4, 16))
    assert gates.dtype == torch.float32 and moe.stats.z_loss.dtype == torch.float32
    assert y.shape == (2, 4, 16)


def test_aux_losses_equal_their_formulas():
    torch.manual_seed(1)
    E, N, k = 4, 30, 2
    logits = torch.randn(N, E, dtype=torch.float64)
    probs = logits.softmax(-1)
    chosen = probs.topk(k, dim=-1).indices
    f = [sum(int(e in row) for row in chosen.tolist()) / (N * k) for e in range(E)]
    P = [sum(probs[t, e].item() for t in range(N)) / N for e in range(E)]
    expected = E * sum(fi * pi for fi, pi in zip(f, P))
    assert load_balancing_loss(probs, chosen, E).item() == pytest.approx(expected, rel=1e-6)
    z = sum(math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits.tolist()) / N
    assert router_z_loss(logits).item() == pytest.approx(z, rel=1e-6)


def test_balance_loss_is_one_under_uniform_routing_and_grows_with_imbalance():
    E, N = 4, 64
    uniform = torch.full((N, E), 1.0 / E)
    spread = torch.arange(N)[:, None] % E  # tokens dealt round-robin: f uniform too
    assert load_balancing_loss(uniform, spread, E).item() == pytest.approx(1.0)
    collapsed = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).expand(N, E)
    assert load_balancing_loss(collapsed, torch.zeros(N, 1, dtype=torch.long), E) > 3.8


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.01, 10.0), min_size=2, max_size=6))
def test_balance_loss_is_minimal_at_uniform_for_a_shared_distribution(weights):
    """When every token routes with the same p, f is one-hot at argmax p and the loss is
    E max(p) >= 1, with equality exactly when p is uniform."""
    p = torch.tensor(weights, dtype=torch.float64)
    p = p / p.sum()
    E = len(p)
    probs = p.expand(10, E)
    loss = load_balancing_loss(probs, probs.argmax(-1, keepdim=True), E).item()
    assert loss == pytest.approx(E * p.max().item())
    assert loss >= 1.0 - 1e-9


def test_capacity_keeps_first_choices_first_in_token_order():
    chosen = torch.tensor([[0, 1], [0, 2], [0, 1], [1, 0]])
    keep = capacity_keep(chosen, 3, capacity=2)
    # Expert 0: first choices of tokens 0, 1 fill it; token 2's first choice and token 3's
    # second choice overflow. Expert 1: token 3's first choice, then token 0's second.
    expected = torch.tensor([[True, True], [True, True], [False, False], [True, False]])
    assert torch.equal(keep, expected)


def test_overflowing_tokens_pass_through_unchanged_and_are_counted():
    config = moe_config(top_k=1, capacity_factor=0.5)
    moe = MoEMLP(config)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0, 0] = 10.0  # every token with x_0 > 0 prefers expert 0
    x = torch.randn(1, 40, 16)
    x[0, :, 0] = x[0, :, 0].abs() + 0.1
    y = moe(x)
    capacity = math.ceil(0.5 * 1 * 40 / 4)
    assert moe.stats.capacity == capacity == 5
    assert moe.stats.dropped_tokens.item() == 40 - capacity
    assert moe.stats.dropped_assignments.item() == 40 - capacity
    assert (y[0, capacity:] == 0).all()  # the block's residual passes them through unchanged
    gate = (x[0, :capacity] @ moe.router.weight.T).softmax(-1)[:, :1]  # Switch: g = p
    torch.testing.assert_close(y[0, :capacity], moe.experts[0](x[0, :capacity]) * gate)
    # Through a whole block: the MLP adds nothing for the dropped tokens.
    gpt = GPT(config)
    block = gpt.transformer.h[1]
    block.mlp.load_state_dict(moe.state_dict())
    from minift.model.attention import AttentionInputs

    inputs = AttentionInputs(positions=torch.arange(40)[None], mask=None, causal_no_mask=True)
    with torch.no_grad():
        h = torch.randn(1, 40, 16)
        after_attn = h + block.attn(block.ln_1(h), inputs)[0]
        out, _ = block(h, inputs)
        mlp_out = block.mlp(block.ln_2(after_attn))
    dropped = (mlp_out[0] == 0).all(dim=-1)
    assert dropped.sum() == block.mlp.stats.dropped_tokens > 0
    assert torch.equal(out[0, dropped], after_attn[0, dropped])


def test_upcycled_moe_at_init_equals_the_dense_model():
    dense = GPT(GPTConfig(**SMALL)).eval()
    moe = upcycle(copy.deepcopy(dense), num_experts=4, top_k=2).eval()
    assert moe.config.moe.experts == 4 and len(moe_layers(moe)) == 2
    names = [n for n, _ in moe.named_parameters()]
    assert "transformer.h.1.mlp.experts.3.c_fc.weight" in names
    assert "transformer.h.0.mlp.router.weight" in names
    idx = torch.randint(0, 61, (2, 20))
    torch.testing.assert_close(moe(idx).logits, dense(idx).logits, atol=1e-5, rtol=1e-5)
    # Every other block only (GShard, Switch): every=2 upcycles block 1 alone.
    half = upcycle(copy.deepcopy(dense), num_experts=2, top_k=1, every=2)
    assert [type(b.mlp).__name__ for b in half.transformer.h] == ["MLP", "MoEMLP"]


def test_aux_loss_joins_the_loss_only_while_training():
    torch.manual_seed(0)
    model = GPT(moe_config(aux_weight=0.1, z_weight=0.01))
    idx = torch.randint(0, 61, (2, 16))
    model.train()
    out = model(idx, idx)
    layers = moe_layers(model)
    expected_aux = sum(0.1 * m.stats.balance_loss + 0.01 * m.stats.z_loss for m in layers) / 2
    torch.testing.assert_close(out.aux_loss, expected_aux)
    model.eval()
    ev = model(idx, idx)
    torch.testing.assert_close(out.loss, ev.loss + out.aux_loss)  # no dropout: same logits
    assert len(ev.router_stats) == 2 and ev.router_stats[0].load.sum().item() == pytest.approx(1.0)
    dense = GPT(GPTConfig(**SMALL))(idx, idx)
    assert dense.aux_loss is None and dense.router_stats is None
    copied = copy.deepcopy(model.train())  # stats holding a graph must not block copies
    assert copied(idx).aux_loss is not None


def test_moe_model_saves_loads_and_takes_lora_on_expert_layers(tmp_path):
    from minift.peft import LoRAConfig, apply_lora

    model = GPT(moe_config()).eval()
    model.save(tmp_path)
    loaded = GPT.load(tmp_path).eval()
    idx = torch.randint(0, 61, (1, 12))
    torch.testing.assert_close(loaded(idx).logits, model(idx).logits)
    lora = apply_lora(copy.deepcopy(model), LoRAConfig(r=2, target_modules=["c_fc"]))
    wrapped = [n for n, m in lora.named_modules() if n.endswith("c_fc") and hasattr(m, "lora_A")]
    assert "transformer.h.0.mlp.experts.2.c_fc" in wrapped and len(wrapped) == 8


def test_flops_count_only_the_chosen_experts():
    dense = GPT(GPTConfig(**SMALL))
    top1 = upcycle(copy.deepcopy(dense), num_experts=8, top_k=1)
    router = 2 * 2 * 16 * 8  # two MoE layers, 2 FLOPs per router weight
    assert top1.flops_per_token(16) == pytest.approx(dense.flops_per_token(16) + 3 * router)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"experts": 2, "top_k": 3}, "moe.top_k 3 must be between 1 and moe.experts 2"),
        ({"experts": -1}, "moe.experts must be >= 0"),
        ({"experts": 4, "capacity_factor": 0.0}, "moe.capacity_factor must be > 0"),
        ({"experts": 4, "every": 3}, "moe.every must be in"),
    ],
)
def test_bad_moe_configs_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**SMALL, moe=kw)


def test_bad_upcycling_leaves_the_model_untouched():
    from minift.peft import LoRAConfig, apply_lora

    dense = GPT(GPTConfig(**SMALL))
    before = copy.deepcopy(dense.state_dict())
    with pytest.raises(ValueError, match="moe.top_k 5"):
        upcycle(dense, num_experts=4, top_k=5)
    with pytest.raises(ValueError, match="unknown MoE option"):
        upcycle(dense, num_experts=4, capacity=1.0)
    lora = apply_lora(copy.deepcopy(dense), LoRAConfig(r=2, target_modules=["c_fc"]))
    with pytest.raises(ValueError, match="plain MLP"):
        upcycle(lora, num_experts=2, top_k=1)
    assert dense.config.moe.experts == 0 and list(dense.state_dict()) == list(before)
    assert dataclasses.asdict(dense.config)["moe"]["experts"] == 0


def router_grad(**moe) -> torch.Tensor:
    """The router weights' gradient from the task loss alone (auxiliary losses off)."""
    torch.manual_seed(0)
    model = GPT(moe_config(aux_weight=0.0, z_weight=0.0, **moe)).train()
    idx = torch.randint(0, 61, (4, 24))
    model(idx, idx).loss.backward()
    return model.transformer.h[0].mlp.router.weight.grad


@pytest.mark.parametrize("top_k", [1, 2])
def test_the_router_learns_from_the_task_loss(top_k):
    """Top-1 routing renormalised over the one chosen expert has g = p / p = 1: the task
    loss would send the router nothing. The default renormalises only for top_k > 1."""
    assert MoEConfig(top_k=top_k).renormalize == (top_k > 1)
    assert router_grad(top_k=top_k).abs().max() > 1e-4
    with pytest.warns(UserWarning, match="no gradient"):
        stuck = router_grad(top_k=1, norm_topk=True)
    assert stuck.abs().max() < 1e-6


def routed_to_the_right_expert(**moe) -> tuple[float, float]:
    """Two experts; tokens with x_0 >= 0 want expert 0's output, the others expert 1's.
    The share of tokens routed to their expert before and after 30 SGD steps on the task
    loss alone (only the router trains; no auxiliary loss)."""
    torch.manual_seed(0)
    layer = MoEMLP(moe_config(experts=2, top_k=1, **moe))
    x = torch.randn(256, 16)
    right = (x[:, 0] < 0).long()
    with torch.no_grad():
        target = torch.where(right[:, None] == 0, layer.experts[0](x), layer.experts[1](x))
    opt = torch.optim.SGD(layer.router.parameters(), lr=30.0)
    share = []
    for _ in range(31):
        opt.zero_grad()
        torch.nn.functional.mse_loss(layer(x), target).backward()
        share.append((layer.route(x)[0][:, 0] == right).float().mean().item())
        opt.step()
    return share[0], share[-1]


def test_a_top1_router_learns_to_pick_the_better_expert():
    before, after = routed_to_the_right_expert()
    assert before < 0.6 and after > 0.95
    with pytest.warns(UserWarning):
        stuck = routed_to_the_right_expert(norm_topk=True)
    assert stuck == (before, before)  # g = p / p = 1: the router never moves
