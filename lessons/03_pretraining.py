# %% [markdown]
# # Lesson 03: pretraining
#
# Pretraining teaches a model the statistics of text with one objective: predict the next
# token. Nothing is labelled; the text is its own answer key. This lesson walks the whole
# path on `pydocs`:
#
# 1. the token stream (lesson 01) and the random windows cut from it;
# 2. the training loop: forward, loss, backward, AdamW step; first by hand, then with
#    `minift.train.Trainer` (warm-up and cosine schedule, gradient clipping, evaluation);
# 3. the loss curve of a short run next to the curve of the real base model (the one
#    `load_base()` loads, which lessons 04 onward fine-tune: shipped with minift, made by
#    this recipe with `minift pretrain --size base`; in fast mode a tiny one, built once);
# 4. perplexity, against two baselines a model must beat;
# 5. sampling: greedy, temperature, top-k, top-p;
# 6. the KV cache: the same tokens as generation without it, in less time.

# %%
import dataclasses
import math
import time

import numpy as np
import torch

from minift.claims import claim
from minift.data.batching import window_batches
from minift.data.tokens import corpus_tokens
from minift.model import GPT
from minift.model.generation import filter_logits
from minift.recipes.pretrain import base_report, default_recipe, lm_eval_fn, load_base
from minift.train import TrainConfig, Trainer
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "03")
print(f"fast mode: {FAST}")

base, enc = load_base()  # shipped with minift (fast mode: pretrained once, cached)
report = base_report()
recipe = default_recipe()
V = enc.n_vocab

# %% [markdown]
# ## 1. Tokens and windows
# The corpus is one long array of token ids (documents separated by `<|endoftext|>`). A
# training example is a window of block_size + 1 consecutive tokens at a random offset:
# the first block_size are the inputs x, the last block_size the targets y. Position t of
# y is the token that follows position t of x, so one window holds block_size
# predictions.

# %%
train_tokens = corpus_tokens("pydocs", "train", enc)
val_tokens = corpus_tokens("pydocs", "val", enc)
print(f"train stream: {len(train_tokens):,} tokens; val stream: {len(val_tokens):,} tokens")
print(f"first tokens of the stream: {[enc.decode([int(t)]) for t in train_tokens[:12]]}")

batch_fn = window_batches(train_tokens, batch_size=4, block_size=8, seed=0)
x, y = batch_fn(0, 0)
print(f"x {tuple(x.shape)}, y {tuple(y.shape)}; row 0, input -> target:")
for xi, yi in zip(x[0].tolist(), y[0].tolist()):
    print(f"  {enc.decode([xi])!r:>14} -> {enc.decode([yi])!r}")
print(
    "batch_fn(step, micro) depends on its arguments only (exact resume): "
    f"batch_fn(0, 0) again equal: {torch.equal(batch_fn(0, 0)[0], x)}, "
    f"batch_fn(1, 0) equal: {torch.equal(batch_fn(1, 0)[0], x)}"
)

# %% [markdown]
# ## 2. The training loop, by hand
# A freshly initialised model (small random weights) should predict every token with
# about equal probability, so its loss should start near ln(V), the cross-entropy of a
# uniform guess: the first line below checks it. Each step: draw a batch,
# compute the mean cross-entropy of the next-token predictions, backpropagate, let AdamW
# (Loshchilov and Hutter 2019) move the weights, clear the gradients.

# %%
config = recipe.config(V)
torch.manual_seed(recipe.seed)
model = GPT(config)
print(
    f"model: {config.n_layer} layers x width {config.n_embd}, {model.num_params():,} "
    f"parameters, block_size {config.block_size}"
)
optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
batch_fn = window_batches(train_tokens, recipe.batch_size, recipe.block_size, seed=recipe.seed)
print(f"ln(V) = ln({V}) = {math.log(V):.3f}")
first_losses = []
for step in range(5):
    xb, yb = batch_fn(step, 0)
    loss = model(xb, yb).loss  # cross-entropy over batch_size x block_size predictions
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    first_losses.append(loss.item())
    print(f"  step {step}: loss {loss.item():.3f}")

# %% [markdown]
# ## 3. A short run with the Trainer
# `Trainer` is the same loop plus what real runs need: a linear warm-up then a cosine
# decay of the learning rate, weight decay on matrices only, gradient clipping, periodic
# evaluation on the validation stream, metrics as JSON lines. We train the base's exact
# architecture and recipe for a few steps, starting from a fresh initialisation, and
# compare with the base model's full run, read from its report.

# %%
steps = 60
short = dataclasses.replace(recipe, steps=steps)  # the base's recipe, cut short
torch.manual_seed(recipe.seed)
model = GPT(config)
train_config = TrainConfig(
    steps=steps,
    lr=short.lr,
    warmup_steps=short.warmup_steps,
    weight_decay=short.weight_decay,
    eval_every=steps // 4,
    progress=False,
    desc="short pretraining run",
)
eval_fn = lm_eval_fn(val_tokens, recipe)  # fixed validation windows, as the base used
t = time.perf_counter()
result = Trainer(model, train_config, batch_fn, eval_fn=eval_fn).fit()
seconds = time.perf_counter() - t
tokens_seen = steps * recipe.batch_size * recipe.block_size
for row in result.evals():
    print(f"  step {row['step']:4d}: train loss {row.get('loss', float('nan')):.3f}, val loss {row['val_loss']:.3f}")  # fmt: skip
print(
    f"short run: {steps} steps, {tokens_seen:,} tokens in {seconds:.1f}s "
    f"({tokens_seen / seconds:,.0f} tokens/s, with evaluation)"
)
print(
    f"the base model: {report['recipe']['steps']} steps, {report['tokens_seen']:,} tokens "
    f"({report['tokens_seen'] / report['train_tokens']:.1f} passes over the train stream) "
    f"in {report['seconds']:.0f}s when it was built; val loss {report['val_loss']:.3f}"
)
# Its train loss over the last tenth of its steps next to its val loss. Two things widen
# the gap: val holds modules the model never saw, and a stream seen several times starts
# to be memorised.
last = [r["loss"] for r in report["history"] if "loss" in r and r["step"] > 0.9 * report["recipe"]["steps"]]  # fmt: skip
gap = report["val_loss"] - sum(last) / len(last)
print(
    f"the base's train loss over its last {len(last)} steps {sum(last) / len(last):.3f} vs val loss "
    f"{report['val_loss']:.3f}: gap {gap:+.3f} nats"
    + (" (more than the train-val noise: see the comment above)" if gap > 0.3 else "")
)

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(8, 4.5))
for label, rows, style in (
    (f"base model ({report['recipe']['steps']} steps)", report["history"], "C0"),
    (f"this lesson's short run ({steps} steps)", result.history, "C1"),
):
    train_pts = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    ax.plot(*zip(*train_pts), style, alpha=0.6, lw=1)
    pts = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    ax.plot(*zip(*pts), "o-", color=style, label=f"{label}: val")
counts = np.bincount(train_tokens, minlength=V) + 1.0  # add-one smoothing
unigram_loss = float(-np.log(counts / counts.sum())[val_tokens[1:]].mean())
ax.axhline(math.log(V), color="gray", ls="--", lw=1, label=f"uniform guess, ln {V}")
ax.axhline(unigram_loss, color="gray", ls=":", lw=1, label="unigram frequencies (section 4)")
# A log step axis: the short run is the first few percent of the base's run.
ax.set_xscale("log")
ax.set(xlabel="step (log scale)", ylabel="cross-entropy (nats per token)", title="pretraining on pydocs")  # fmt: skip
ax.legend(fontsize=8, loc="lower left")
fig.tight_layout()
curve_path = OUT / "loss_curve.png"
fig.savefig(curve_path, dpi=110)
plt.close(fig)
print(f"plot saved to {curve_path} (thin lines: train loss per step; dots: val loss)")

# %% [markdown]
# ## 4. Perplexity
# Perplexity is exp(loss): the number of equally likely tokens the model is, on average,
# hesitating between. Two baselines a language model has to beat to show it uses
# context: the uniform guess (perplexity V) and a unigram model that always predicts the
# training-set token frequencies and ignores context. Does the base beat them, and does
# the short run? Bits per byte (loss / ln 2 x tokens / bytes) removes the tokenizer from
# the comparison.

# %%
val_bytes = len(enc.decode_bytes(val_tokens.tolist()))
tokens_per_byte = len(val_tokens) / val_bytes
with torch.no_grad():
    losses = {
        "uniform": math.log(V),
        "unigram": unigram_loss,
        f"short run ({steps} steps)": eval_fn(model.eval())["val_loss"],
        "base model": eval_fn(base)["val_loss"],
    }
print(f"{'model':24s} {'val loss':>9s} {'perplexity':>11s} {'bits/byte':>10s}")
for name, loss in losses.items():
    bpb = loss / math.log(2) * tokens_per_byte
    print(f"{name:24s} {loss:9.3f} {math.exp(loss):11.1f} {bpb:10.3f}")

# %% [markdown]
# ## 5. Sampling
# The model gives a distribution over the next token; generation picks one, appends it,
# and repeats. **Greedy** (temperature 0) takes the most likely token; Holtzman et al.
# (2020) found that it tends to loop, repeating itself (we count repeated 3-grams below).
# **Temperature** divides the logits before the softmax: below 1 sharpens, above 1
# flattens. **Top-k** (Fan et al. 2018) keeps the k most likely tokens; **top-p**
# (Holtzman et al. 2020) keeps the smallest set whose probabilities sum to p.

# %%
prompt = "Return a new list of the"
prompt_ids = torch.tensor([enc.encode_ordinary(prompt)])
with torch.no_grad():
    logits = base(prompt_ids).logits[0, -1]
print(f"next-token distribution after {prompt!r}:")
dist_rows = {}
for temp in (0.5, 1.0, 2.0):
    probs = (logits / temp).softmax(-1)
    top = probs.topk(5)
    dist_rows[temp] = probs
    shown = ", ".join(f"{enc.decode([int(i)])!r} {p:.2f}" for p, i in zip(top.values, top.indices))
    kept_p = int(torch.isfinite(filter_logits(logits[None] / temp, top_p=0.9)).sum())
    print(f"  temperature {temp}: {shown}; top-p 0.9 keeps {kept_p} of {V} tokens")

new_tokens = min(40, config.block_size - prompt_ids.size(1))
settings = [
    ("greedy", dict(temperature=0.0)),
    ("temperature 0.8, top-k 40", dict(temperature=0.8, top_k=40)),
    ("temperature 1.0, top-p 0.9", dict(temperature=1.0, top_p=0.9)),
    ("temperature 1.5, no filter", dict(temperature=1.5)),
]


def repeated_share(ids: list[int], n: int = 3) -> float:
    """The share of a text's token n-grams that already occurred earlier in it."""
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return 1 - len(set(grams)) / max(1, len(grams))


repeats = {}
for name, kw in settings:
    g = torch.Generator().manual_seed(0)
    out = base.generate(prompt_ids, new_tokens, generator=g, **kw)
    continuation = out[0, prompt_ids.size(1) :].tolist()
    repeats[name] = repeated_share(continuation)
    print(f"[base, {name}] repeated 3-grams: {repeats[name]:.0%}\n  {prompt!r} + {enc.decode(continuation)!r}")  # fmt: skip
out = model.generate(prompt_ids, new_tokens, temperature=0.0)
print(f"[short run, greedy]\n  {prompt!r} + {enc.decode(out[0, prompt_ids.size(1) :].tolist())!r}")

fig, ax = plt.subplots(figsize=(8, 3.5))
order = dist_rows[1.0].argsort(descending=True)[:15]
width = 0.27
for j, (temp, probs) in enumerate(dist_rows.items()):
    ax.bar(np.arange(15) + (j - 1) * width, probs[order].numpy(), width, label=f"T={temp}")
ax.set_xticks(np.arange(15), [repr(enc.decode([int(i)])) for i in order], rotation=60, fontsize=7)
ax.set(ylabel="probability", title=f"next token after {prompt!r}, three temperatures")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "temperature.png", dpi=110)
plt.close(fig)
print(f"\nplot saved to {OUT / 'temperature.png'}")

# %% [markdown]
# ## 6. The KV cache
# Without a cache, generating token n re-runs the model on all n previous tokens. With
# it, each step feeds only the newest token; its query attends to keys and values kept
# from the earlier steps. The output must be identical: greedy, and sampling with the
# same random generator.

# %%
n_new = config.block_size - prompt_ids.size(1)  # the longest run the cache allows
same = {}
for name, kw in (("greedy", dict(temperature=0.0)), ("top-k sampling", dict(top_k=20))):
    a = base.generate(prompt_ids, n_new, use_cache=True, generator=torch.Generator().manual_seed(1), **kw)  # fmt: skip
    b = base.generate(prompt_ids, n_new, use_cache=False, generator=torch.Generator().manual_seed(1), **kw)  # fmt: skip
    same[name] = torch.equal(a, b)
    print(f"{name}: {n_new} tokens with and without the cache identical: {same[name]}")
assert all(same.values()), "KV-cache generation differs from uncached generation"

timings = {}
for use_cache in (True, False):
    base.generate(prompt_ids, 4, temperature=0.0, use_cache=use_cache)  # warm-up
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        base.generate(prompt_ids, n_new, temperature=0.0, use_cache=use_cache)
        runs.append(time.perf_counter() - t)
    timings[use_cache] = min(runs)
print(
    f"{n_new} new tokens: {1e3 * timings[True]:.0f} ms with the cache, "
    f"{1e3 * timings[False]:.0f} ms without ({timings[False] / timings[True]:.1f}x; best of 3)"
)

# %% [markdown]
# ## What the numbers say
# Computed from this run. The first four hold on any base, the tiny fast-mode one
# included; the last two may or may not show on this base (a sampled text of a few dozen
# tokens; timings on a shared CPU).

# %%
claim(
    "a fresh model starts at a uniform guess: its first loss is within 0.15 nats of ln(V)",
    abs(first_losses[0] - math.log(V)) < 0.15,
    f"{first_losses[0]:.3f} vs ln {V} = {math.log(V):.3f}",
)
base_loss, short_loss = losses["base model"], losses[f"short run ({steps} steps)"]
claim(
    "pretraining lowers the validation loss below both baselines: base < unigram < uniform",
    base_loss < unigram_loss < math.log(V),
    f"{base_loss:.3f} < {unigram_loss:.3f} < {math.log(V):.3f}",
)
claim(
    f"more pretraining, lower loss: the base ({report['recipe']['steps']} steps) beats the short run ({steps} steps) by more than 0.1 nats",  # fmt: skip
    base_loss < short_loss - 0.1,
    f"{base_loss:.3f} vs {short_loss:.3f}",
)
claim(
    "the KV cache changes nothing but the time: greedy and sampled tokens are identical with and without it",  # fmt: skip
    all(same.values()),
    f"{n_new} new tokens each",
)
vals = [r["val_loss"] for r in result.evals()]
claim(
    f"after {steps} steps the short run is below the unigram baseline, so it already uses context",
    short_loss < unigram_loss,
    f"{short_loss:.3f} vs {unigram_loss:.3f}; over its last {steps // 4} steps the val loss moved "
    f"by {vals[-1] - vals[-2]:+.3f}"
    + (": still falling, not converged" if vals[-2] - vals[-1] > 0.01 else ""),
    at_scale=True,
)
claim(
    "greedy decoding repeats itself more than top-p sampling (Holtzman et al. 2020)",
    repeats["greedy"] > repeats["temperature 1.0, top-p 0.9"],
    f"repeated 3-grams {repeats['greedy']:.0%} vs {repeats['temperature 1.0, top-p 0.9']:.0%} in {new_tokens} tokens",  # fmt: skip
    at_scale=True,
)
claim(
    "the KV cache saves time when generating",
    timings[True] < timings[False],
    f"{1e3 * timings[True]:.0f} ms vs {1e3 * timings[False]:.0f} ms",
    at_scale=True,
)
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Run the short run with warmup_steps=5, then with the learning rate multiplied by 3.
#    What happens to the train loss in the first 20 steps, and why does warm-up help Adam?
# 2. Train for as many steps as the base but with half the batch size. Compare the val
#    loss per step and per token seen.
# 3. Why does the cache's advantage grow with the length generated? Time 16, 32 and all
#    available new tokens and fit the two curves.
