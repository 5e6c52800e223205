# %% [markdown]
# # Lesson 02: the transformer, GPT vs BERT-style
#
# A GPT (Radford et al. 2018, 2019) is a stack of identical blocks on top of two lookup
# tables:
#
#     h_0 = wte[tokens] + wpe[positions]                      (embeddings)
#     h_l = h_{l-1} + Attn(LN(h_{l-1}))                       (attention: tokens talk)
#     h_l = h_l + MLP(LN(h_l))                                (MLP: each token thinks)
#     logits = LN_f(h_L) wte^T                                (scores for every next token)
#
# This lesson rebuilds that computation by hand from the weights of minift's pretrained
# base model and checks every step against the modules in `minift/model/`. Then it flips
# one switch, `GPTConfig(causal=False)`, which turns the same stack into a BERT-style
# encoder (Devlin et al. 2019), and compares the two: what each position can see, what
# each is trained to predict, what they cost, and what their attention looks like.

# %%
import dataclasses
import math
import time

import torch
import torch.nn.functional as F

from minift.claims import claim
from minift.data.batching import window_batches
from minift.data.corpus import load_corpus
from minift.data.tokens import corpus_tokens
from minift.model import GPT, GPTConfig
from minift.model.attention import AttentionInputs
from minift.model.gpt import IGNORE_INDEX
from minift.model.mlm import causal_lm_targets, mask_tokens
from minift.recipes.pretrain import default_recipe, lm_eval_fn, load_base
from minift.tokenizer import eot_id, mask_id
from minift.train import TrainConfig, Trainer
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
torch.manual_seed(0)
FAST = fast_mode()
OUT = output_dir("lessons", "02")
print(f"fast mode: {FAST}")

model, enc = load_base()  # shipped with minift (fast mode: pretrained once, cached)
cfg = model.config
print(
    f"base model: {cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.n_embd}, "
    f"vocabulary {cfg.vocab_size}, block_size {cfg.block_size}"
)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# %% [markdown]
# ## 1. A real docstring as input
# We use the docstring of `bisect.insort_right`, cut to its first 24 tokens so the
# attention maps at the end stay readable.

# %%
docs = load_corpus("pydocs", "all")
doc = next((d for d in docs if (d.module, d.name) == ("bisect", "insort_right")), docs[0])
ids = enc.encode_ordinary(doc.text)[:24]
tokens = [enc.decode([i]) for i in ids]
idx = torch.tensor([ids])
T, C, H, D = len(ids), cfg.n_embd, cfg.n_head, cfg.head_dim
print(f"{doc.module}.{doc.name}: {doc.text[:70]!r}...")
print(f"{T} tokens: {tokens}")

with torch.no_grad():
    ref = model(idx, output_hidden_states=True, output_attentions=True)
print(
    f"the model returns logits {tuple(ref.logits.shape)}, {len(ref.hidden_states)} hidden "
    f"states (embeddings + one per block), {len(ref.attentions)} attention maps "
    f"{tuple(ref.attentions[0].shape)} (batch, head, query, key)"
)

# %% [markdown]
# ## 2. Embeddings
# Each token id picks a row of `wte` (what the token is), each position a row of `wpe`
# (where it is). Their sum is the block stack's input: a (T, C) matrix.

# %%
wte, wpe = model.transformer.wte.weight.detach(), model.transformer.wpe.weight.detach()
x0 = wte[idx] + wpe[torch.arange(T)]
print(f"wte {tuple(wte.shape)}, wpe {tuple(wpe.shape)} -> x0 {tuple(x0.shape)}")
print(f"max |x0 - model's embeddings| = {max_diff(x0, ref.hidden_states[0]):.2e}")

# %% [markdown]
# ## 3. One attention head, by hand
# LayerNorm first: `(x - mean) / sqrt(var + eps) * g + b`, per token. Then one matrix
# `c_attn` makes a query, a key and a value for every token, and each head takes its
# own D = C / H channels of them:
#
#     scores = q k^T / sqrt(D)       how well query i matches key j
#     scores[i, j] = -inf for j > i  the causal mask: no looking ahead
#     P = softmax(scores, rows)      attention weights, each row sums to 1
#     y = P v                        each token's weighted average of the values
#
# The 1/sqrt(D) keeps the dot products at unit scale, so the softmax does not saturate.

# %%
block = model.transformer.h[0]
with torch.no_grad():
    mu, var = x0.mean(-1, keepdim=True), x0.var(-1, unbiased=False, keepdim=True)
    h = (x0 - mu) / torch.sqrt(var + cfg.norm_eps) * block.ln_1.weight + block.ln_1.bias
    print(f"LayerNorm by hand vs ln_1: max diff {max_diff(h, block.ln_1(x0)):.2e}")
    q, k, v = (h @ block.attn.c_attn.weight.T + block.attn.c_attn.bias).split(C, dim=-1)

    causal_mask = torch.ones(T, T, dtype=torch.bool).tril()
    print("the causal mask (1 = may attend), first 6 positions:")
    print(causal_mask[:6, :6].int())

    heads, hand_diffs = [], []
    for head in range(H):
        cols = slice(head * D, (head + 1) * D)
        qh, kh, vh = q[0, :, cols], k[0, :, cols], v[0, :, cols]
        scores = qh @ kh.T / math.sqrt(D)
        probs = scores.masked_fill(~causal_mask, float("-inf")).softmax(dim=-1)
        heads.append(probs @ vh)
        if head == 0:
            print(f"head 0: q, k, v are {tuple(qh.shape)}; scores {tuple(scores.shape)}")
            print(f"  row sums of P: {probs.sum(-1)[:4].tolist()} ...")
            print(f"  P above the diagonal (the future) sums to {probs.triu(1).sum():.1f}")
        hand_diffs.append(max_diff(probs, ref.attentions[0][0, head]))
        print(f"head {head}: max |P by hand - model's attention map| = {hand_diffs[-1]:.2e}")

# %% [markdown]
# ## 4. All heads, then the rest of the block
# The heads' outputs are concatenated back to C channels and mixed by `c_proj`. The
# result is *added* to the input (the residual stream); then the MLP, C -> 4C -> C with a
# GELU, is added the same way. That is one block.

# %%
with torch.no_grad():
    attn_out = torch.cat(heads, dim=-1) @ block.attn.c_proj.weight.T + block.attn.c_proj.bias
    x1 = x0 + attn_out
    h2 = block.ln_2(x1)
    mlp_hidden = F.gelu(h2 @ block.mlp.c_fc.weight.T + block.mlp.c_fc.bias, approximate="tanh")
    x2 = x1 + mlp_hidden @ block.mlp.c_proj.weight.T + block.mlp.c_proj.bias
    print(f"MLP hidden width {mlp_hidden.shape[-1]} = 4 x {C}")
    hand_diffs.append(max_diff(x2, ref.hidden_states[1]))
    print(f"block 0 by hand vs model: max diff {hand_diffs[-1]:.2e}")

    # The remaining blocks, the final norm and the tied head, now using the modules.
    inputs = AttentionInputs(positions=torch.arange(T)[None], mask=None, causal_no_mask=True)
    x = x2
    for blk in model.transformer.h[1:]:
        x, _ = blk(x, inputs)
    logits = model.transformer.ln_f(x) @ wte.T  # weight tying: the output head is wte
    hand_diffs.append(max_diff(logits, ref.logits))
    print(f"logits by hand vs model: max diff {hand_diffs[-1]:.2e}")
    fast_logits = model(idx).logits  # PyTorch's fused attention, no maps returned
    print(
        f"fused (SDPA) vs explicit attention path: max diff {max_diff(fast_logits, ref.logits):.2e}"
    )
    guess = logits[0].argmax(-1)
print("what the base predicts after each of the first 8 tokens:")
for i in range(8):
    print(f"  {''.join(tokens[: i + 1])!r:45s} -> {enc.decode([int(guess[i])])!r}")

# %% [markdown]
# ## 5. Causal vs encoder: who sees whom
# `GPTConfig(causal=False)` removes the mask and nothing else: the encoder below has the
# base's weights, unchanged. We change one token in the middle of the text, replacing it
# by the first token of the text `" banana"` (the tokenizer may split that word into pieces;
# the line below prints the piece actually used), and measure how much the final hidden
# state at every position moves. The question: do the positions before the change move?
# In the causal model they should not (they never see it); in the encoder they may.

# %%
encoder = GPT(dataclasses.replace(cfg, causal=False)).eval()
encoder.load_state_dict(model.state_dict())
changed = idx.clone()
mid = T // 2
banana = enc.encode_ordinary(" banana")
# If the middle token happens to be that very piece, take the next one instead.
changed[0, mid] = next(t for t in banana + [eot_id(enc)] if t != ids[mid])
print(f"' banana' -> {len(banana)} tokens {[enc.decode([t]) for t in banana]}")
print(f"position {mid}: {tokens[mid]!r} -> {enc.decode([int(changed[0, mid])])!r}")
with torch.no_grad():
    moves = {}
    for name, m in (("causal", model), ("encoder", encoder)):
        a, b = m(idx).last_hidden[0], m(changed).last_hidden[0]
        moves[name] = (a - b).norm(dim=-1)
print(f"{'pos':>4} {'token':>14} {'causal':>10} {'encoder':>10}   |change of final hidden state|")
for i in range(T):
    print(f"{i:4d} {tokens[i]!r:>14} {moves['causal'][i]:10.4f} {moves['encoder'][i]:10.4f}")
before = slice(0, mid)
print(
    f"largest change before position {mid}: causal {moves['causal'][before].max():.2e}, "
    f"encoder {moves['encoder'][before].max():.2e}"
)

# %% [markdown]
# ## 6. The two objectives
# **Next-token prediction** (GPT): the target of position t is token t+1, so the targets
# are the inputs shifted left by one, and every position gives a training signal. It only
# works with the causal mask: an encoder could copy the answer from the next position.
#
# **Masked language modelling** (BERT): choose 15% of the positions; replace 80% of them
# with `<|mask|>`, 10% with a random token and leave 10% unchanged; predict the original
# token at the chosen positions only (targets elsewhere are IGNORE_INDEX = -100, which
# the cross-entropy skips). Both sides of the context are visible.

# %%
x_in, y_next = causal_lm_targets(idx)
print("next-token prediction (inputs -> targets):")
for i in range(8):
    print(f"  {tokens[i]!r:>14} -> {enc.decode([int(y_next[0, i])])!r}")
with torch.no_grad():
    print(f"base model's next-token loss on this text: {model(x_in, y_next).loss.item():.3f}")

MASK = mask_id(enc)
g = torch.Generator().manual_seed(3)
x_mlm, y_mlm = mask_tokens(idx, MASK, enc.n_vocab, prob=0.15, generator=g)
print(f"\nmasked LM ({int((y_mlm != IGNORE_INDEX).sum())} of {T} positions chosen):")
print(f"  {'pos':>3} {'original':>14} {'input':>14}   target")
for i in range(T):
    target = y_mlm[0, i].item()
    if target == IGNORE_INDEX:
        continue
    shown = "<|mask|>" if x_mlm[0, i] == MASK else repr(enc.decode([int(x_mlm[0, i])]))
    print(f"  {i:3d} {tokens[i]!r:>14} {shown:>14}   {enc.decode([target])!r}")
print("every other position: target -100 (ignored)")

# The 80/10/10 split, counted over many windows of the validation stream.
xs = torch.as_tensor(corpus_tokens("pydocs", "val", enc)[: 64 * 256].astype("int64")).view(64, 256)
inp, tgt = mask_tokens(xs, MASK, enc.n_vocab, prob=0.15, generator=g)
chosen = tgt != IGNORE_INDEX
n = int(chosen.sum())
as_mask = int((inp[chosen] == MASK).sum())
kept = int((inp[chosen] == xs[chosen]).sum())
split = {"chosen": n / xs.numel(), "masked": as_mask / n, "random": (n - as_mask - kept) / n, "unchanged": kept / n}  # fmt: skip
print(
    f"over {xs.numel():,} tokens: {100 * split['chosen']:.1f}% chosen; of those "
    f"{100 * split['masked']:.1f}% masked, {100 * split['random']:.1f}% random, "
    f"{100 * split['unchanged']:.1f}% unchanged (a random draw can hit the original token)"
)

# %% [markdown]
# ### Training both objectives for a moment
# The same small architecture, trained from scratch on pydocs for the same number of
# steps, once as a causal LM and once as a masked LM. The MLM loss counts only the
# chosen 15% of positions, each of which sees context on both sides; the causal loss
# counts every position, each of which sees only its past.

# %%
train_tokens = corpus_tokens("pydocs", "train", enc)
val_tokens = corpus_tokens("pydocs", "val", enc)
small = GPTConfig(vocab_size=enc.n_vocab, block_size=64, n_layer=2, n_head=2, n_embd=64)
steps = 40 if FAST else 150
recipe = dataclasses.replace(default_recipe(), block_size=64, batch_size=16, eval_batches=4)
val_batches = [
    window_batches(val_tokens, recipe.batch_size, 64, seed=10_000 + i)(0, 0) for i in range(4)
]


def mlm_loss(m, batch):
    # The Trainer seeds the global generator from the step, so the masks are reproducible.
    inputs, targets = mask_tokens(
        batch[0], MASK, enc.n_vocab, prob=0.15, special_ids=(eot_id(enc),)
    )
    return m(inputs, targets).loss, {}


def mlm_eval(m):
    g = torch.Generator().manual_seed(0)  # the same masks at every evaluation
    losses = []
    for x, _ in val_batches:
        inputs, targets = mask_tokens(x, MASK, enc.n_vocab, 0.15, g, special_ids=(eot_id(enc),))
        losses.append(m(inputs, targets).loss.item())
    return {"val_loss": sum(losses) / len(losses)}


trained, final_val = {}, {}
for name, causal, loss_fn, eval_fn in (
    ("causal LM", True, None, lm_eval_fn(val_tokens, recipe)),
    ("masked LM", False, mlm_loss, mlm_eval),
):
    torch.manual_seed(0)
    m = GPT(dataclasses.replace(small, causal=causal))
    config = TrainConfig(steps=steps, lr=5e-3, warmup_steps=10, progress=False, desc=name)
    kwargs = {"loss_fn": loss_fn} if loss_fn else {}
    t = time.perf_counter()
    result = Trainer(
        m, config, window_batches(train_tokens, 16, 64, seed=1), eval_fn=eval_fn, **kwargs
    ).fit()
    trained[name] = m.eval()
    final_val[name] = result.history[-1]["val_loss"]
    print(
        f"{name}: {steps} steps in {time.perf_counter() - t:.1f}s, train loss "
        f"{result.history[0]['loss']:.2f} -> {result.history[-1]['loss']:.2f}, "
        f"val loss {result.history[-1]['val_loss']:.2f} (uniform guessing: {math.log(enc.n_vocab):.2f})"
    )

# %% [markdown]
# ## 7. Parameters and FLOPs per token
# Per block: c_attn C x 3C, c_proj C x C, c_fc C x 4C, c_proj 4C x C, that is 12 C^2
# weights, plus 9 C biases and 4 C LayerNorm gains and biases. Add the embeddings and the
# final norm; the output head is tied to `wte` and costs no parameters of its own.
#
# A forward pass spends 2 FLOPs (a multiply and an add) per weight per token, plus the
# attention itself: a query's scores against T keys (q k^T) and its mix of T values
# (P v), 2 T C FLOPs each per layer, so 2 x 2 x n_layer x T x C per token. Backward costs
# twice the forward, so training costs about 6 N + 12 n_layer T C per token. That
# attention term is the count of Chowdhery et al. (2022, PaLM, appendix B: 6N + 12 L H Q T,
# with H Q = C). Kaplan et al. (2020, table 1) count half of it, 2 n_layer n_ctx d_attn per
# token for the forward pass (6 n_layer T C to train): about what a causal model spends if
# it skips the masked half of the scores, since a query then sees T / 2 keys on average.
# `GPT.flops_per_token` uses the full count. The encoder has exactly the same parameters
# and FLOPs; only the mask differs.

# %%
groups: dict[str, int] = {}
for pname, p in model.named_parameters():  # a tied tensor is listed once, under wte
    key = "blocks" if pname.startswith("transformer.h.") else pname.rsplit(".", 1)[0]
    groups[key] = groups.get(key, 0) + p.numel()
for key, n in groups.items():
    print(f"  {key:18s} {n:>10,}")
per_block = 12 * C * C + 9 * C + 4 * C  # weights, biases, two LayerNorms
formula = cfg.vocab_size * C + cfg.block_size * C + cfg.n_layer * per_block + 2 * C
print(f"total {model.num_params():,}; by the formula {formula:,}; per block {per_block:,}")
print(f"non-embedding parameters: {model.num_params(non_embedding=True):,}")

with torch.device("meta"):  # GPT-2 small's shapes without allocating its 500 MB
    gpt2_small = GPT(GPTConfig())
print(f"GPT-2 small (the GPTConfig defaults): {gpt2_small.num_params():,} parameters")

for name, m, seq in (("base", model, cfg.block_size), ("GPT-2 small", gpt2_small, 1024)):
    train_flops = m.flops_per_token(seq)
    attn = 12 * m.config.n_layer * seq * m.config.n_embd  # both products, forward + backward
    print(
        f"{name}: {train_flops / 1e6:,.1f} MFLOPs per token to train at T={seq} "
        f"({100 * attn / train_flops:.0f}% of it in attention scores and mixing; "
        f"Kaplan et al.'s count: {(train_flops - attn / 2) / 1e6:,.1f} MFLOPs)"
    )

# Measured: one forward + backward of the base on a full batch of windows.
xb, yb = window_batches(train_tokens, 8, cfg.block_size, seed=0)(0, 0)
timed = GPT(cfg)
timed.load_state_dict(model.state_dict())
timed(xb, yb).loss.backward()  # warm-up
t = time.perf_counter()
reps = 2 if FAST else 3
for _ in range(reps):
    timed(xb, yb).loss.backward()
sec = (time.perf_counter() - t) / reps
flops = timed.flops_per_token(cfg.block_size) * xb.numel()
print(
    f"forward + backward on {xb.numel()} tokens: {sec * 1e3:.0f} ms, "
    f"{flops / sec / 1e9:.1f} GFLOP/s achieved on this CPU ({torch.get_num_threads()} threads)"
)

# %% [markdown]
# ## 8. Attention maps
# Rows: the pretrained base (causal); the *same weights* with the mask removed (what the
# mask hides, not what an encoder learns); the small masked LM trained above (a real,
# if tiny, encoder). Columns: heads of the first and the last layer. Each map is a
# (query, key) matrix; row i shows where token i looks. For each head we print the mean
# distance it looks back or ahead, the share of attention that goes to later tokens, and
# how spread out it is (its entropy over that of a uniform spread: 1.0 means the head
# attends to everything it may see equally, lower means it picks particular tokens).
# All maps share one colour scale, on a square-root axis (the colour bar: bright = near 1).

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.colors import PowerNorm


def pick_heads(m: GPT) -> list[tuple[int, int]]:
    last = m.config.n_layer - 1
    return [(0, 0), (0, 1), (last, 0), (last, 1)][: 2 * min(2, m.config.n_head)]


rows = [
    ("base, causal", model),
    ("base weights, no mask", encoder),
    ("small masked LM", trained["masked LM"]),
]
dist = (torch.arange(T)[None, :] - torch.arange(T)[:, None]).float()  # key - query
n_cols = max(len(pick_heads(m)) for _, m in rows)
# 4 inches a map: 24 token labels of 6 points each, one every 12 points, do not overlap.
fig, axes = plt.subplots(len(rows), n_cols, figsize=(4 * n_cols + 1, 4 * len(rows)), layout="constrained")  # fmt: skip
future_share = {}
for r, (name, m) in enumerate(rows):
    with torch.no_grad():
        maps = m(idx, output_attentions=True).attentions
    for c, (layer, head) in enumerate(pick_heads(m)):
        P = maps[layer][0, head]
        mean_dist = (P * dist).sum(-1).mean().item()
        future = P.triu(1).sum(-1).mean().item()
        future_share[name, layer, head] = P.triu(1).sum().item()
        # Entropy relative to spreading evenly over the visible keys: 1.0 = uniform.
        visible = (P > 0).sum(-1).float()
        entropy = -(P * P.clamp_min(1e-12).log()).sum(-1)
        spread = (entropy[visible > 1] / visible[visible > 1].log()).mean().item()
        print(
            f"{name:22s} L{layer} H{head}: mean key - query {mean_dist:+5.1f} tokens, "
            f"on later tokens {future:.2f}, entropy / uniform {spread:.2f}"
        )
        ax = axes[r, c]
        # One scale for all maps; the square root keeps weak, spread-out attention visible.
        im = ax.imshow(P.numpy(), cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=1))
        ax.set_title(f"{name}\nlayer {layer}, head {head}", fontsize=8)
        # Token labels on the outer axes only: text layout is most of the drawing time.
        names = [repr(s)[1:-1] for s in tokens]
        ax.set_xticks(range(T), names if r == len(rows) - 1 else [], rotation=90, fontsize=6)
        ax.set_yticks(range(T), names if c == 0 else [], fontsize=6)
fig.colorbar(im, ax=axes, shrink=0.6, label="attention weight (square-root scale)")
path = OUT / "attention_maps.png"
fig.savefig(path, dpi=100)
plt.close(fig)
print(f"plot saved to {path}")

# %% [markdown]
# ## What the numbers say
# Computed from this run. Each holds on any base, the tiny fast-mode one included: they
# are exact identities (up to float rounding), the definition of the mask, or, for the
# 80/10/10 split, a count over thousands of draws checked against its standard error.

# %%
claim(
    "the computation by hand (attention maps, block 0, the logits) matches minift's modules to float rounding",  # fmt: skip
    max(hand_diffs) < 1e-4,
    f"largest difference {max(hand_diffs):.1e}",
)
base_future = max(v for (name, _, _), v in future_share.items() if name == "base, causal")
claim(
    "the causal mask gives zero attention to later tokens in every head shown",
    base_future == 0.0,
    f"total weight on later tokens {base_future:.1e}",
)
claim(
    f"changing token {mid} leaves every earlier position of the causal model exactly unchanged",
    moves["causal"][:mid].max().item() == 0.0,
    f"largest change before it {moves['causal'][:mid].max():.1e}",
)
claim(
    "without the mask every earlier position changes too: an encoder sees the whole text",
    moves["encoder"][:mid].min().item() > 1e-4,
    f"smallest change before token {mid}: {moves['encoder'][:mid].min():.1e}",
)
# Each share is a binomial proportion: its standard error is sqrt(p (1 - p) / count).
targets = {"chosen": (0.15, xs.numel()), "masked": (0.8, n), "random": (0.1, n), "unchanged": (0.1, n)}  # fmt: skip
off = {k: abs(split[k] - p) / math.sqrt(p * (1 - p) / count) for k, (p, count) in targets.items()}  # fmt: skip
claim(
    "mask_tokens draws BERT's split: 15% of positions chosen; of those 80% masked, 10% random, 10% kept",  # fmt: skip
    max(off.values()) < 4,
    ", ".join(f"{k} {100 * split[k]:.1f}%" for k in split)
    + f"; at most {max(off.values()):.1f} standard errors off",  # fmt: skip
)
claim(
    f"the parameter formula counts the model exactly: {per_block:,} per block, {formula:,} in all",
    formula == model.num_params(),
    f"model.num_params() = {model.num_params():,}",
)
lnv = math.log(enc.n_vocab)
claim(
    f"both objectives learn in {steps} steps: each validation loss ends at least 0.5 nats below a uniform guess",  # fmt: skip
    all(v < lnv - 0.5 for v in final_val.values()),
    ", ".join(f"{k} {v:.2f}" for k, v in final_val.items()) + f"; ln V = {lnv:.2f}",
)
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Set `pos_emb="rope"` in a GPTConfig: which parameters disappear, and does the
#    parameter formula above still hold?
# 2. Give the causal model a padded batch (`attention_mask` with zeros on the right).
#    Which positions' outputs change, and why does classification read the last *real*
#    token (lesson 04)?
# 3. Train the masked LM with 40% masking instead of 15%. Does the validation loss on
#    masked positions go up or down, and why is the comparison not apples to apples?
