# %% [markdown]
# # Lesson 12: sparse attention
#
# Dense causal attention lets every query i look at every key j <= i: a T x T score
# matrix, O(T^2) time and memory. At T = 128 that is nothing; at T = 32k it is a billion
# scores per head and layer. A *sparse pattern* lets query i see only a set S(i) of keys,
#
#     Attn(Q, K, V)_i = sum_{j in S(i)} softmax_j(q_i . k_j / sqrt(d)) v_j,    |S(i)| << T,
#
# chosen so that information can still cross the whole sequence in a few layers. minift
# cuts the sequence into blocks of `sparse.block_size` tokens and describes every pattern as
# a block layout `layout[h, I, J]` (may the queries of block I see the keys of block J?):
#
# | pattern          | S(i), in blocks (d = I - J)                                | paper                  |
# |------------------|-------------------------------------------------------------|------------------------|
# | sliding window   | d = 0, r, 2r, ... (window w blocks, dilation r)             | Beltagy et al. 2020    |
# | strided          | d < stride, or d a multiple of stride                       | Child et al. 2019      |
# | fixed            | the own chunk of stride blocks + the last block of each chunk | Child et al. 2019   |
# | global           | the first g blocks see, and are seen by, everything         | Beltagy et al. 2020    |
# | BigBird          | window + global + a few random blocks per head              | Zaheer et al. 2020     |
#
# A pattern is a `GPTConfig` option (`sparse=SparseConfig(pattern, window=...)`), and as it
# adds no parameter it can be switched on in a model pretrained densely
# (`minift.longctx.context.set_attention_pattern`): that is how Longformer was made from
# RoBERTa. Two code paths compute it: `impl="masked"` (the readable reference:
# dense attention under the T x T mask) and `impl="efficient"` (it gathers only the
# key blocks each query block may see, memory linear in T; on a GPU a block-sparse Triton
# kernel takes over, lesson 11).

# %%
import copy
import math
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from minift.claims import claim
from minift.data.batching import window_batches
from minift.data.tokens import corpus_tokens
from minift.longctx.context import set_attention_pattern
from minift.metrics import compare, mean_se
from minift.model import GPTConfig, SparseConfig
from minift.model.sparse import SparsePattern, density, masked_sparse_attention, sparse_mask
from minift.model.sparse_efficient import efficient_sparse_attention
from minift.recipes.pretrain import load_base
from minift.train import TrainConfig, Trainer, lm_loss
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "12")
print(f"fast mode: {FAST}")
torch.manual_seed(0)
base, enc = load_base(progress=False)
T0 = base.config.block_size
print(f"base: {base.num_params():,} parameters, block_size {T0}, {base.config.n_layer} blocks")

# %% [markdown]
# ## 1. The patterns
# Every option counts blocks. Below, 128 tokens in blocks of 8 (16 blocks): a window of
# 3 blocks (its own and the two before), the dilated window skips every other block,
# strided and fixed use a stride of 4 blocks, and one global block. "longformer" is the
# sliding window plus the global block; BigBird adds two random blocks per query block,
# drawn per head from a seed (head 0 shown). "global" on its own is only the global
# blocks: a token outside them sees block 0 and not even itself; it is meant to be added to
# a local pattern (`n_global` works with every pattern), as "longformer" does.

# %%
PATTERNS = {
    "dense": ("dense", {}),
    "sliding_window": ("sliding_window", {"window": 3}),
    "dilated window": ("sliding_window", {"window": 3, "dilation": 2}),
    "strided": ("strided", {"stride": 4}),
    "fixed": ("fixed", {"stride": 4, "summary": 1}),
    "global": ("global", {"n_global": 1}),
    "longformer": ("sliding_window", {"window": 3, "n_global": 1}),
    "bigbird": ("bigbird", {"window": 2, "n_global": 1, "n_random": 2}),
}


def pattern_config(name: str, block_size: int, attn_block: int, **kw) -> GPTConfig:
    """A small config holding pattern ``name``: its options are SparseConfig fields."""
    pattern, opts = PATTERNS[name]
    return GPTConfig(
        vocab_size=64, block_size=block_size, n_layer=1, n_head=2, n_embd=16,
        sparse=SparseConfig(pattern, block_size=attn_block, **opts), **kw,
    )  # fmt: skip


def token_mask(config: GPTConfig, T: int) -> torch.Tensor:
    """M[h, i, j] for T tokens: the layout blown up to tokens, and j <= i."""
    if not config.is_sparse:
        return torch.ones(T, T, dtype=torch.bool).tril()[None]
    layout = SparsePattern(config).layout(T)
    return sparse_mask(layout, config.sparse.block_size, T, T, config.causal)[0]


fig, axes = plt.subplots(2, 4, figsize=(14, 7.4))
for ax, name in zip(axes.flat, PATTERNS):
    m = token_mask(pattern_config(name, 128, 8), 128)[0]
    ax.imshow(m.numpy(), cmap="Blues", interpolation="nearest")
    ax.set_title(f"{name}: {m.sum(1).float().mean():.1f} keys/query", fontsize=10)
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
fig.suptitle("Which keys each query sees (128 tokens, blocks of 8, causal)")
fig.tight_layout()
fig.savefig(OUT / "patterns.png", dpi=100)
plt.close(fig)
print(f"plot saved to {OUT / 'patterns.png'}")

# %% [markdown]
# ## 2. The efficient path computes exactly the masked reference
# The efficient path never builds the T x T matrix: for each query block it gathers the
# key blocks its layout row lists, and masks inside them (the causal rule in the diagonal
# block). Same pattern, same numbers: we check forward *and* gradients in float64 on
# random q, k, v, with T = 100 (not a multiple of the block: the last block is partial).

# %%
B, H, T, D = 2, 2, 100, 16
print(f"{'pattern':16s} {'max |out diff|':>15s} {'max |grad diff|':>16s}")
exact_diff = 0.0  # the largest difference over every pattern, output and gradients
for name in PATTERNS:
    if name == "dense":
        continue
    config = pattern_config(name, 128, 8)
    layout = SparsePattern(config).layout(T)
    q, k, v = (torch.randn(B, H, T, D, dtype=torch.float64, requires_grad=True) for _ in "qkv")
    ref, _ = masked_sparse_attention(q, k, v, sparse_mask(layout, 8, T, T, True))
    eff = efficient_sparse_attention(q, k, v, layout, 8, causal=True)
    g = torch.randn_like(ref)
    grads_ref = torch.autograd.grad((ref * g).sum(), (q, k, v))
    grads_eff = torch.autograd.grad((eff * g).sum(), (q, k, v))
    grad_diff = max((a - b).abs().max().item() for a, b in zip(grads_ref, grads_eff))
    print(f"{name:16s} {(ref - eff).abs().max().item():15.2e} {grad_diff:16.2e}")
    exact_diff = max(exact_diff, (ref - eff).abs().max().item(), grad_diff)

# %% [markdown]
# The same holds through the whole pretrained model: switch a pattern on, once with each
# implementation, and compare the logits on real text (float32 now).

# %%
val_tokens = corpus_tokens("pydocs", "val", enc)
x_val, y_val = window_batches(val_tokens, 8, T0, seed=123)(0, 0)
attn_block = 16 if T0 >= 128 else 8
n_blocks = T0 // attn_block
base.eval()
model_diff = 0.0
with torch.no_grad():
    dense_out = base(x_val, y_val)
    for name in ("longformer", "bigbird", "fixed"):
        pattern, opts = PATTERNS[name]
        outs = {}
        for impl in ("masked", "efficient"):
            model = set_attention_pattern(
                copy.deepcopy(base), pattern, block_size=attn_block, impl=impl, **opts
            )
            outs[impl] = model(x_val, y_val)
        diff = (outs["masked"].logits - outs["efficient"].logits).abs().max().item()
        model_diff = max(model_diff, diff)
        print(
            f"{name:11s} on the base: max |logit diff| masked vs efficient {diff:.2e}; "
            f"LM loss {outs['efficient'].loss.item():.3f} (dense {dense_out.loss.item():.3f})"
        )

# %% [markdown]
# ## 3. A window that covers the sequence *is* dense attention
# With a causal window of w blocks, query block I sees blocks I - w + 1 .. I. Once w reaches
# the number of blocks, every query sees every earlier key: the sparse model is the dense
# one, to float rounding. Smaller windows see less: the logits move, and the LM loss (no
# training yet) tells how much this small base relied on the keys it lost. How much does
# it? The loss is measured on N_EVAL batches of 8 validation windows, with the standard
# error over windows and the paired difference from dense (the same windows for every w).

# %%
N_EVAL = 4 if FAST else 16
eval_batches = [window_batches(val_tokens, 8, T0, seed=500 + i)(0, 0) for i in range(N_EVAL)]


@torch.no_grad()
def window_losses(model) -> torch.Tensor:
    """The LM loss of each validation window (mean over its tokens): the unit of the SEs."""
    model.eval()
    out = []
    for x, y in eval_batches:
        logits = model(x).logits.float()
        nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        out.append(nll.view(y.shape).mean(1))
    return torch.cat(out)


def se(values) -> float:
    """The standard error of the mean of a tensor or list of values."""
    return mean_se(torch.as_tensor(values).tolist()).se


dense_losses = window_losses(base)
print(f"{T0} tokens in {n_blocks} blocks of {attn_block}; the base's LM loss on {len(dense_losses)} windows, no training:")  # fmt: skip
print(f"  dense: {dense_losses.mean():.4f} +- {se(dense_losses):.4f} (SE)")
window_loss, window_diff = {}, {}
with torch.no_grad():
    for w in sorted({1, 2, n_blocks // 2, n_blocks - 1, n_blocks, n_blocks + 2}):
        model = set_attention_pattern(
            copy.deepcopy(base), "sliding_window", window=w, block_size=attn_block
        )
        window_diff[w] = (model(x_val).logits - dense_out.logits).abs().max().item()
        window_loss[w] = losses = window_losses(model)
        gap = losses - dense_losses
        print(
            f"  window {w:2d} blocks ({min(w, n_blocks) * attn_block:3d} tokens): "
            f"max |logit diff| vs dense {window_diff[w]:.2e}, LM loss {losses.mean():.4f}, "
            f"vs dense {gap.mean():+.4f} +- {se(gap):.4f} (SE of the paired difference)"
        )  # fmt: skip

# %% [markdown]
# ## 4. What a pattern saves
# Per pattern at a long context: the mean number of keys a query sees, and the fraction of
# the causal T x T score matrix that is computed (`minift.model.sparse.density`). Dense
# grows as T / 2 keys per query; a window, global blocks and random blocks stay constant,
# strided grows as sqrt(T) when stride ~ sqrt(T). Then the wall-clock of one attention call
# (2 heads of 32 dims): the masked reference pays for the whole T x T matrix whatever the
# pattern, the efficient path for the blocks it gathers.

# %%
T_LONG = 1024 if FAST else 4096
BS_LONG = 64
print(f"T = {T_LONG}, blocks of {BS_LONG} ({T_LONG // BS_LONG} blocks)")
print(f"{'pattern':16s} {'keys/query':>11s} {'of T x T':>9s} {'of causal':>10s}")
savings = {}
for name in PATTERNS:
    config = pattern_config(name, T_LONG, BS_LONG)
    layout = SparsePattern(config).layout(T_LONG).float() if config.is_sparse else None
    if layout is None:
        keys = (T_LONG + 1) / 2
    else:  # whole blocks below the diagonal, a causal triangle on it, averaged over heads
        nb = T_LONG // BS_LONG
        per_block = torch.ones(nb, nb).tril(-1) * BS_LONG + torch.eye(nb) * (BS_LONG + 1) / 2
        keys = float((layout * per_block).sum(-1).mean())
    savings[name] = (keys, keys / T_LONG, density(config, T_LONG))
    print(f"{name:16s} {keys:11.1f} {keys / T_LONG:9.3f} {density(config, T_LONG):10.3f}")


def clock(fn, repeat: int = 3) -> float:
    fn()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


T_TIME = 1024 if FAST else 2048
q, k, v = (torch.randn(1, 2, T_TIME, 32) for _ in "qkv")
config = pattern_config("longformer", T_TIME, BS_LONG)
layout = SparsePattern(config).layout(T_TIME)
mask = sparse_mask(layout, BS_LONG, T_TIME, T_TIME, True)
with torch.no_grad():
    t_masked = clock(lambda: masked_sparse_attention(q, k, v, mask, need_weights=True))
    t_eff = clock(lambda: efficient_sparse_attention(q, k, v, layout, BS_LONG, True))
entries_eff = int(layout.sum()) * BS_LONG**2
print(
    f"longformer at T = {T_TIME}: masked reference (explicit scores) {t_masked * 1e3:.1f} ms, "
    f"efficient path {t_eff * 1e3:.1f} ms (this CPU, best of 3); score entries {T_TIME**2:,} vs "
    f"{entries_eff:,}"
)

# %% [markdown]
# ## 5. Fine-tuning a dense base into a sparse one
# Switching a narrow pattern on costs the pretrained model some loss (section 3): it
# learnt to use keys that are now gone. Longformer's recipe (Beltagy et al. 2020, section
# 5) is to keep training with the new pattern so the weights adapt. The task here is that
# continued language modelling on `pydocs`, for the same steps, seed and batches three
# times: dense; a narrow Longformer pattern (a window of one block plus one global block);
# and BigBird (the same, plus one random block per query block and head). Two questions,
# each answered with its noise: does the switch cost more than the noise of the
# evaluation, and does fine-tuning win back part of it, next to the dense model that
# gets the same extra training?
#
# The learning rate is not the pretraining's: the Longformer run, whose recovery is the
# question, takes the best of three rates by the loss on 2 batches of validation
# windows *apart from* the reported ones (fast mode tries one rate only), and the dense
# and BigBird runs train at that same rate, so the three differ by the pattern alone.
# Losses are reported on N_EVAL batches of 8 windows, with the standard error over
# windows.

# %%
STEPS = 6 if FAST else 40
LRS = (3e-4,) if FAST else (1e-4, 3e-4, 1e-3)  # fast mode: no sweep, to stay quick
train_tokens = corpus_tokens("pydocs", "train", enc)
batch_fn = window_batches(train_tokens, 8, T0, seed=7)
choose_batches = [window_batches(val_tokens, 8, T0, seed=900 + i)(0, 0) for i in range(2)]


def eval_fn(model) -> dict[str, float]:
    with torch.no_grad():
        choose = sum(model(x, y).loss.item() for x, y in choose_batches) / len(choose_batches)
    return {"val_loss": choose}


RUNS = {  # longformer first: its rate is chosen, the others reuse it
    "longformer": {"pattern": "sliding_window", "window": 1, "n_global": 1},
    "dense": {"pattern": "dense"},
    "bigbird": {"pattern": "bigbird", "window": 1, "n_global": 1, "n_random": 1},
}
finetuned = {}
for name, opts in RUNS.items():
    switched = set_attention_pattern(copy.deepcopy(base), block_size=attn_block, **opts)
    frac = density(switched.config)
    at_switch = window_losses(switched)
    tried = {}
    for lr in LRS if name == "longformer" else (finetuned["longformer"]["lr"],):
        model = copy.deepcopy(switched)
        config = TrainConfig(
            steps=STEPS, lr=lr, warmup_steps=2, eval_every=STEPS // 2, eval_at_start=False,
            progress=False, seed=0,
        )  # fmt: skip
        result = Trainer(model, config, batch_fn, lm_loss, eval_fn).fit()
        tried[lr] = (result.history[-1]["val_loss"], model, result)
    lr = min(tried, key=lambda k: tried[k][0])
    model, result = tried[lr][1], tried[lr][2]
    after = window_losses(model)
    finetuned[name] = {"frac": frac, "lr": lr, "before": at_switch, "after": after}
    sweep = ", ".join(f"{k:g}: {v[0]:.3f}" for k, v in tried.items())
    print(
        f"{name:10s} ({frac:.2f} of the causal pairs): lr (choice-set loss) {{{sweep}}} -> {lr:g}; "
        f"val loss {at_switch.mean():.3f} +- {se(at_switch):.3f} at the switch -> "
        f"{after.mean():.3f} +- {se(after):.3f} after {STEPS} steps"
    )  # fmt: skip

dense, longf = finetuned["dense"], finetuned["longformer"]
gap_before = (longf["before"] - dense["before"]).tolist()  # per window, paired
gap_after = (longf["after"] - dense["after"]).tolist()
cost = compare("longformer loss at the switch", longf["before"].tolist(), "dense loss", dense["before"].tolist())  # fmt: skip
won_back = compare("gap at the switch", gap_before, "gap after fine-tuning", gap_after)
print(f"val loss per window, in nats (lower is better): {cost}")
print(f"longformer minus dense, in nats per window: {won_back}")
alone = (window_loss[1] - dense_losses).mean().item()  # section 3: the same window, no global block
with_global = sum(gap_before) / len(gap_before)
print(f"at the switch, a window of 1 block costs {alone:+.3f} nats alone and {with_global:+.3f} with the global block (the first {attn_block} tokens)")  # fmt: skip

# %% [markdown]
# The last line separates the two parts of the Longformer pattern. If the global block
# takes away most of the window's cost, the base leans on the first tokens of its
# context whatever they say: trained on windows that always start at position 0, it
# learnt to park attention there, what Xiao et al. (2023) call an *attention sink*, and
# a pattern that keeps those tokens keeps most of what the model uses.

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
names = list(savings)
ax1.barh(names, [savings[n][1] for n in names], color="C0")
ax1.set(xlabel=f"fraction of the T x T matrix (T = {T_LONG})", title="what each pattern computes")
# The differences from dense on the same windows, with their SE: a small effect drawn
# next to its noise, on an axis that starts at 0 (no zoom into the noise).
labels, x = ["at the switch", f"after {STEPS} steps"], range(2)
for i, name in enumerate(["longformer", "bigbird"]):
    run = finetuned[name]
    gaps = [(run[when] - dense[when]).tolist() for when in ("before", "after")]
    ax2.bar([j + 0.4 * i - 0.2 for j in x], [sum(g) / len(g) for g in gaps], 0.4,
            yerr=[se(g) for g in gaps], capsize=4, label=f"{name} ({run['frac']:.2f} of the pairs)")  # fmt: skip
ax2.axhline(0, color="k", lw=0.8)
ax2.set_xticks(list(x), labels)
ax2.set(ylabel="val loss minus dense's (nats)", title=f"cost of the pattern, +- 1 SE over {len(dense['before'])} windows\n(dense's own loss: {dense['before'].mean():.2f} nats)")  # fmt: skip
ax2.legend(loc="best", fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "sparse_finetune.png", dpi=100)
plt.close(fig)
print(f"plot saved to {OUT / 'sparse_finetune.png'}")

# %% [markdown]
# ## What the numbers say
# The exactness claims hold on any base. The last three are what Longformer and BigBird
# report for large models and long inputs (Beltagy et al. 2020: a RoBERTa switched to a
# sliding window loses some loss, and continued pretraining wins it back; Zaheer et al.
# 2020): on a 1.3M-parameter base with 128-token windows, trained for minutes, a narrow
# pattern hides only a few dozen tokens, so the effects may be smaller than the noise of
# the evaluation, and a result "within noise" is reported as such.

# %%
claim("the efficient path equals the masked reference for every pattern (float64, outputs and gradients)", exact_diff < 1e-10, f"max |diff| {exact_diff:.1e}")  # fmt: skip
claim("through the pretrained model, masked and efficient give the same logits (float32)", model_diff < 1e-4, f"max |diff| {model_diff:.1e}")  # fmt: skip
covering = [w for w in window_diff if w >= n_blocks]
claim("a causal window that covers every block gives the dense model's logits", max(window_diff[w] for w in covering) < 1e-4, f"windows {covering}: max |logit diff| {max(window_diff[w] for w in covering):.1e}")  # fmt: skip
claim("the efficient path computes fewer score entries than the T x T matrix of the masked reference", entries_eff < T_TIME**2, f"{entries_eff:,} vs {T_TIME**2:,} at T = {T_TIME}")  # fmt: skip
claim(f"at T = {T_TIME}, the efficient path runs faster than the masked reference on this CPU", t_eff < t_masked, f"{t_eff * 1e3:.1f} vs {t_masked * 1e3:.1f} ms, best of 3", at_scale=True)  # fmt: skip
claim("switching to the narrow Longformer pattern raises the val loss beyond noise", not cost.within_noise and cost.difference > 0, str(cost), at_scale=True)  # fmt: skip
claim("one global block takes away most of a narrow window's cost (attention sinks, Xiao et al. 2023)", with_global < alone / 2, f"{with_global:+.3f} vs {alone:+.3f} nats", at_scale=True)  # fmt: skip
claim("fine-tuning with the pattern wins back part of its cost beyond noise (the gap to dense shrinks)", not won_back.within_noise and won_back.difference > 0, str(won_back), at_scale=True)  # fmt: skip
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Sparse patterns pay off with long inputs: `minift.longctx.context.extend_context` tiles
#    the learned positions to a longer block_size (Beltagy et al. 2020, section 5). Extend
#    the base to 4 x block_size with the Longformer pattern and measure the LM loss on
#    windows of that length, before and after a little training.
# 2. Strided and fixed patterns were designed for several heads that split the work
#    (Child et al. 2019). Which tokens can token 127 reach in two layers of `fixed` with
#    stride 4? Compose the masks (boolean matrix product) to find out.
# 3. BigBird's random blocks differ per head. Set `n_random=0` and compare the fine-tuned
#    loss: do the random blocks help here?
