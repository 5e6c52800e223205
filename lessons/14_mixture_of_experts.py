# %% [markdown]
# # Lesson 14: mixture of experts
#
# A dense transformer spends the same FLOPs on every token: every weight of every MLP
# multiplies it. A *mixture of experts* (MoE) keeps E copies of the MLP and lets a small
# router send each token to k of them, so the parameters grow with E while the compute
# per token stays that of k MLPs:
#
#     p(x) = softmax(W_r x),   chosen = top-k of p(x),   y(x) = sum_{e in chosen} g_e(x) MLP_e(x)
#
# with g_e = p_e (Switch Transformer, top-1: Fedus et al. 2021) or g_e = p_e / sum of the
# chosen p (top-2, as in Mixtral: Jiang et al. 2024). Three practical pieces:
#
# - **load balancing** (Fedus et al. 2021): with f_i the fraction of the N k assignments that
#   go to expert i and P_i the mean router probability of expert i,
#   L_balance = E * sum_i f_i P_i: 1 under uniform routing, E if one expert takes all;
# - **router z-loss** (Zoph et al. 2022): mean_x (logsumexp_e W_r x)^2 keeps the router's
#   logits small;
# - **capacity**: an expert takes at most C = ceil(cf k N / E) assignments; the overflow is
#   dropped, and a dropped token passes through the block's residual unchanged.
#
# Finally, **sparse upcycling** (Komatsuzaki et al. 2022) makes an MoE from a pretrained
# dense model: every expert starts as a copy of its MLP. The code is `minift/model/moe.py`
# (`GPTConfig(moe=MoEConfig(experts=..., top_k=...))` builds one from scratch).

# %%
import copy
import dataclasses
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from minift.claims import claim
from minift.data.batching import window_batches
from minift.data.tokens import corpus_tokens
from minift.metrics import compare
from minift.model import GPT, GPTConfig, MoEConfig
from minift.model.moe import MoEMLP, moe_layers
from minift.model.upcycle import upcycle
from minift.recipes.pretrain import load_base
from minift.train import TrainConfig, Trainer
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "14")
print(f"fast mode: {FAST}")
torch.manual_seed(0)
base, enc = load_base(progress=False)
C = base.config.n_embd
print(f"base: {base.num_params():,} parameters, width {C}, {base.config.n_layer} blocks")

# %% [markdown]
# ## 1. The router, by hand
# An MoE MLP with 4 experts, top-2, on 64 random tokens. We recompute its output from the
# formula: for each token, the two most probable experts, their probabilities renormalised,
# the weighted sum of the two experts' outputs.

# %%
config = GPTConfig(
    vocab_size=64, block_size=64, n_layer=1, n_head=2, n_embd=C, moe=MoEConfig(experts=4, top_k=2)
)
moe = MoEMLP(config)
x = torch.randn(64, C)
with torch.no_grad():
    y = moe(x)
    probs = (x @ moe.router.weight.T).softmax(-1)
    top_p, top_e = probs.topk(2, dim=-1)
    gates = top_p / top_p.sum(-1, keepdim=True)
    by_hand = torch.stack(
        [
            sum(gates[t, r] * moe.experts[int(top_e[t, r])](x[t]) for r in range(2))
            for t in range(64)
        ]
    )
formula_error = (y - by_hand).abs().max().item()
print(f"max |y - formula| = {formula_error:.2e}; gates sum to one: {torch.allclose(gates.sum(-1), torch.ones(64))}")  # fmt: skip
stats = moe.stats
print(f"load f_i (fraction of assignments): {[round(v, 3) for v in stats.load.tolist()]}")
print(f"importance P_i (mean probability):  {[round(v, 3) for v in stats.importance.tolist()]}")

# %% [markdown]
# ## 2. The auxiliary losses against their formulas
# The balancing loss only sees f (counts, not differentiable) through its product with P
# (differentiable): the gradient lowers the probability of the busy experts. Its value is
# 1 when routing is uniform and grows to E when one expert takes everything.

# %%
f = torch.bincount(top_e.reshape(-1), minlength=4).float() / top_e.numel()
balance = 4 * (f * probs.mean(0)).sum()
z = torch.logsumexp(x @ moe.router.weight.T, -1).pow(2).mean()
print(f"L_balance: module {stats.balance_loss:.6f}, formula {balance:.6f}")
print(f"L_z:       module {stats.z_loss:.6f}, formula {z:.6f}")
with torch.no_grad():
    moe.router.weight.zero_()
    moe.router.weight[0] = 1.0  # every token with a positive sum of features prefers expert 0
    skewed = x.abs()  # positive features: all tokens agree
    moe(skewed)
aux_error = max(abs(stats.balance_loss - balance).item(), abs(stats.z_loss - z).item())
skewed_balance = float(moe.stats.balance_loss)
print(f"every token's first choice is expert 0 (top-2, so at most E / k = 2): L_balance = {skewed_balance:.3f}, loads {[round(v, 2) for v in moe.stats.load.tolist()]}")  # fmt: skip

# %% [markdown]
# ## 3. Capacity and overflow through the residual
# Top-1, capacity factor 1: each expert takes ceil(1.0 * 64 / 4) = 16 tokens. With the
# skewed router every token wants expert 0: the first 16 in token order get it, the others
# are dropped. A dropped token's MLP output is exactly zero, so the block computes
# x + attn + 0 for it: it skips the MLP through the residual connection.

# %%
drops = {}
for cf in (1.0, 2.0, None):
    cfg = dataclasses.replace(
        config, moe=dataclasses.replace(config.moe, top_k=1, capacity_factor=cf)
    )
    switch = MoEMLP(cfg)
    switch.load_state_dict(moe.state_dict())
    with torch.no_grad():
        out = switch(skewed)
    s = switch.stats
    zero_rows = int((out == 0).all(-1).sum())
    drops[cf] = (int(s.dropped_tokens), zero_rows, s.capacity)
    print(
        f"capacity factor {cf}: capacity {s.capacity}, dropped tokens {int(s.dropped_tokens)} "
        f"(output rows exactly zero: {zero_rows})"
    )

# %% [markdown]
# ## 4. Sparse upcycling: an MoE that starts as the dense model
# `upcycle` replaces every MLP with E copies of it and a fresh router. With top-2 gates that
# sum to one, y = g_1 MLP(x) + g_2 MLP(x) = MLP(x): the upcycled model computes exactly what
# the dense one does, whatever the router says, and fine-tuning then lets the experts
# drift apart. Parameters grow about E-fold in the MLPs; FLOPs per token grow only by the
# second expert and the router.

# %%
tokens = corpus_tokens("pydocs", "val", enc)
xv, yv = window_batches(tokens, 4, base.config.block_size, seed=1)(0, 0)
base.eval()
upcycled = upcycle(copy.deepcopy(base), num_experts=4, top_k=2).eval()
with torch.no_grad():
    dense_out, moe_out = base(xv, yv), upcycled(xv, yv)
upcycle_error = (dense_out.logits - moe_out.logits).abs().max().item()
print(f"max |logit diff| upcycled vs dense: {upcycle_error:.2e}")
print(f"LM loss dense {dense_out.loss:.5f}, upcycled {moe_out.loss:.5f}")
T = base.config.block_size
print(
    f"parameters {base.num_params():,} -> {upcycled.num_params():,}; FLOPs per token "
    f"{int(base.flops_per_token(T)):,} -> {int(upcycled.flops_per_token(T)):,}"
)
top1 = upcycle(copy.deepcopy(base), num_experts=4, top_k=1, norm_topk=False).eval()
with torch.no_grad():
    diff = (top1(xv).logits - dense_out.logits).abs().max()
print(
    f"top-1 with raw Switch gates g = p < 1 is *not* the dense model at init: max |diff| {diff:.2f}"
)

# %% [markdown]
# ## 5. Training with and without the balancing loss
# A small Switch model (4 experts, top-1, g = p) trains from scratch on `pydocs` twice, with
# the same seed and batches: once with aux_weight = 0, once with 0.01. We record each
# layer's load f_i at every step. Without the loss, the router's early preferences feed
# themselves: the favoured expert gets more tokens, learns faster, and is chosen even more
# (Shazeer et al. 2017 saw the same). With it, the loads should swing while the router
# is young and then settle near 1/E. Does balancing cost LM loss? Both models are scored
# on the same validation windows, and compare() says whether the difference is noise.
# (A few hundred steps from scratch: the LM losses are far from converged, so this is
# about the early phase of training.)

# %%
STEPS = 40 if FAST else 100
E = 4
small = GPTConfig(
    vocab_size=enc.n_vocab, block_size=64, n_layer=2, n_head=2, n_embd=64,
    moe=MoEConfig(experts=E, top_k=1),  # top-1: g = p (norm_topk is off for top_k = 1)
)  # fmt: skip
train_tokens = corpus_tokens("pydocs", "train", enc)
batch_fn = window_batches(train_tokens, 8, small.block_size, seed=3)
N_VAL = 64  # validation windows, the same for both runs
val_windows = window_batches(tokens, N_VAL, small.block_size, seed=7)(0, 0)


@torch.no_grad()
def window_losses(model) -> np.ndarray:
    """LM loss (without the auxiliary losses) of each validation window."""
    model.eval()
    x, y = val_windows
    logits = model(x).logits
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")
    return loss.mean(1).numpy()


runs, val_loss, busiest_load, final_balance = {}, {}, {}, {}
for aux in (0.0, 0.01):
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(small, moe=dataclasses.replace(small.moe, aux_weight=aux)))

    def loss_fn(model, batch):
        out = model(batch[0], batch[1])
        loads = {f"load_{i}_{e}": s.load[e].item() for i, s in enumerate(out.router_stats) for e in range(E)}  # fmt: skip
        balance = sum(s.balance_loss.item() for s in out.router_stats) / len(out.router_stats)
        return out.loss, {**loads, "balance": balance, "lm": (out.loss - out.aux_loss).item()}

    config = TrainConfig(steps=STEPS, lr=1e-3, warmup_steps=5, eval_every=0, progress=False)
    result = Trainer(model, config, batch_fn, loss_fn).fit()
    runs[aux] = result.history
    val_loss[aux] = window_losses(model)
    last = result.history[-10:]
    lm = sum(h["lm"] for h in last) / len(last)
    bal = sum(h["balance"] for h in last) / len(last)
    busiest = [max(sum(h[f"load_{i}_{e}"] for h in last) / len(last) for e in range(E)) for i in range(small.n_layer)]  # fmt: skip
    busiest_load[aux], final_balance[aux] = max(busiest), bal
    print(
        f"aux weight {aux}: over the last 10 steps LM loss {lm:.3f}, L_balance {bal:.3f}, "
        f"busiest expert's load per layer {[round(b, 2) for b in busiest]} (uniform: {1 / E:.2f}) "
        f"({result.seconds:.1f}s); val LM loss {val_loss[aux].mean():.3f}"
    )
print(f"{len(moe_layers(model))} MoE layers, {model.num_params():,} parameters")
# Lower is better for a loss, so name the balanced run first: a positive difference is its cost.
cost = compare("with balancing", val_loss[0.01], "without", val_loss[0.0])
print(f"val LM loss over {N_VAL} windows: {cost}")

# %%
fig, axes = plt.subplots(2, small.n_layer, figsize=(5 * small.n_layer, 6.5), sharex=True, sharey=True)  # fmt: skip
for row, (aux, history) in enumerate(runs.items()):
    steps = [h["step"] for h in history]
    for layer in range(small.n_layer):
        ax = axes[row, layer]
        for e in range(E):
            ax.plot(steps, [h[f"load_{layer}_{e}"] for h in history], label=f"expert {e}")
        ax.axhline(1 / E, color="gray", ls=":")
        ax.set_title(f"aux weight {aux}: layer {layer}", fontsize=10)
        ax.set_ylabel("fraction of tokens")
for ax in axes[-1]:
    ax.set_xlabel("training step")
handles, labels = axes[0, 0].get_legend_handles_labels()
fig.legend(handles, labels, loc="upper right", ncol=E, fontsize=8)  # outside the curves
fig.suptitle("Router load per expert while training (top-1, 4 experts)", x=0.3)
fig.tight_layout(rect=(0, 0, 1, 0.95))
fig.savefig(OUT / "router_load.png", dpi=100)
plt.close(fig)
print(f"plot saved to {OUT / 'router_load.png'}")

# %% [markdown]
# ## What the numbers say
# The first four are exact properties of the code, on any base. The last two are what
# Fedus et al. 2021 report for Switch Transformers at scale (the balancing loss keeps
# experts evenly loaded at a negligible cost in quality); here they are measured on a
# 2-block model trained from scratch for a few hundred steps.

# %%
claim("the MoE layer's output and its auxiliary losses equal their formulas",
      formula_error < 1e-5 and aux_error < 1e-5, f"max deviations {formula_error:.1e}, {aux_error:.1e}")  # fmt: skip
claim("with capacity factor 1 and every token wanting one expert, exactly the overflow is dropped and its rows are exactly zero",
      drops[1.0][0] == 64 - drops[1.0][2] == drops[1.0][1] and drops[None][0] == 0,
      f"capacity {drops[1.0][2]}, dropped {drops[1.0][0]}, zero rows {drops[1.0][1]}; no capacity: {drops[None][0]} dropped")  # fmt: skip
claim("the upcycled top-2 model computes the dense model's logits", upcycle_error < 1e-4,
      f"max |diff| {upcycle_error:.1e}")  # fmt: skip
claim("a router whose first choice is always one expert gives L_balance = E / k = 2 under top-2",
      abs(skewed_balance - 2.0) < 1e-4, f"{skewed_balance:.4f}")  # fmt: skip
claim("with the balancing loss the busiest expert takes a smaller share of the tokens than without it",
      busiest_load[0.01] < busiest_load[0.0] - 0.1,
      f"busiest load {busiest_load[0.01]:.2f} vs {busiest_load[0.0]:.2f}, uniform {1 / E:.2f}; L_balance {final_balance[0.01]:.3f} vs {final_balance[0.0]:.3f}",
      at_scale=True)  # fmt: skip
claim("the balancing loss costs no LM loss beyond noise (it is nearly free)",
      cost.within_noise or cost.difference < 0,
      f"val LM loss {cost.mean_a:.3f} vs {cost.mean_b:.3f}, {cost.difference:+.3f}, 95% CI {cost.low:+.3f} to {cost.high:+.3f}",
      at_scale=True)  # fmt: skip
if FAST:
    print("(fast mode: a tiny base and few steps exercise the code; the numbers need normal mode)")
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Train the Switch model with capacity factor 1.0 and 1.25 and no balancing loss: how
#    many tokens are dropped per step, and what does that do to the LM loss?
# 2. Upcycle the base with 8 experts top-2, fine-tune it on `pydocs` for a few dozen steps,
#    and measure how far the experts drift apart (the norm of expert e minus expert 0).
# 3. `math.comb(E, k)` expert combinations per token: why does top-2 of 8 (Mixtral) give a
#    richer routing than top-1 of 8 at the same parameter count?
