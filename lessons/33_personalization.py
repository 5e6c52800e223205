# %% [markdown]
# # Lesson 33: personalization — one base, an adapter (or a context) per user
#
# Users of one assistant want different things from the same prompt. Here five simulated
# users score docstring continuations by a hidden taste: three like a topic (storage,
# text, networking words), `brief` likes short answers and `verbose` long ones. The
# taste is code, so every method is scored exactly, per user, on held-out pairs.
#
# | method       | trains                                   | costs per request        |
# |--------------|------------------------------------------|--------------------------|
# | profile      | nothing: "Keep it short." before the prompt | its tokens             |
# | examples     | nothing: the user's preferred lines before the prompt | their tokens |
# | soft prompt  | 4 vectors per user (Lester et al. 2021), DPO | 4 positions          |
# | own LoRA     | a rank-4 adapter per user, DPO (Rafailov et al. 2023) | one low-rank term |
# | shared LoRA  | one adapter on everyone's pairs          | nothing per user         |
#
# The score of a method on a pair is DPO's implicit reward against the frozen base
# without context: did the method move probability toward the user's choice? The base
# scores exactly 1/2. Then: serving all users in one batch, each row through its own
# adapter (Punica/S-LoRA's segmented gather matmul, `minift.kernels.multi_lora`).

# %%
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from minift.kernels.multi_lora import multi_lora_loop, multi_lora_reference

from minift.claims import claim
from minift.metrics import compare, mean_se
from minift.personal import USERS, stack_adapters, user_pairs, users
from minift.personal.users import agreement
from minift.recipes.personalize import METHODS, CompareConfig, compare_users
from minift.recipes.rlhf_stages import default_policy
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "33")
print(f"fast mode: {FAST}")
torch.manual_seed(0)
policy, enc = default_policy()
NAMES = ("storage", "brief", "verbose") if FAST else tuple(USERS)

# %% [markdown]
# ## The users
# Same prompts, different tastes. `brief` and `verbose` are opposites: one model shared
# by both cannot please both.

# %%
for name in NAMES:
    p = user_pairs(name, "train", 1)[0]
    print(f"{name:8s} prefers {p['prompt']}{p['chosen']!r}\n{'':8s}    over {p['prompt']}{p['rejected']!r}")  # fmt: skip
val_pairs = {n: user_pairs(n, "val", 48) for n in NAMES}
agree = np.array([[agreement(USERS[a], val_pairs[b]) for b in NAMES] for a in NAMES])
print("\nshare of column user's choices the row user would make too:")
print("         " + " ".join(f"{n:>8s}" for n in NAMES))
for n, row in zip(NAMES, agree):
    print(f"{n:8s} " + " ".join(f"{v:8.2f}" for v in row))

# %% [markdown]
# ## Every method, per user
# Each own adapter and soft prompt trains on its user's pairs only; the shared adapter
# on all users' pairs for as many steps as all own adapters together (equal compute).
# Learning rates: 3e-3 for LoRA (as lesson 18's LoRA DPO), 3e-2 for the soft prompt
# (prompt tuning needs larger steps: Lester et al. 2021 used 0.3).

# %%
config = CompareConfig(users=NAMES, n_train=32 if FAST else 48, n_val=48 if FAST else 64,
                       lora_steps=15 if FAST else 30, prompt_steps=15 if FAST else 30)  # fmt: skip
t0 = time.perf_counter()
result = compare_users(policy, enc, config)
correct = result["correct"]
print(f"trained {2 * len(NAMES) + 1} adapters/prompts in {time.perf_counter() - t0:.1f}s "
      f"({config.n_train} pairs per user)\n")  # fmt: skip
print("held-out preference accuracy (mean ± SE over the user's pairs):")
print(f"{'user':8s} " + " ".join(f"{m:>13s}" for m in METHODS))
for name in NAMES:
    cells = [mean_se(correct[name][m]) for m in METHODS]
    print(f"{name:8s} " + " ".join(f"{e.value:6.3f} ± {e.se:.3f}" for e in cells))
pooled = {m: np.concatenate([correct[n][m] for n in NAMES]) for m in METHODS}
own_vs_shared = compare("own LoRA", pooled["own-lora"], "shared LoRA", pooled["shared-lora"])
own_vs_profile = compare("own LoRA", pooled["own-lora"], "profile", pooled["profile"])
soft_vs_base = compare("soft prompt", pooled["soft-prompt"], "base", pooled["base"])
for c in (own_vs_shared, own_vs_profile, soft_vs_base):
    print(c)

# %% [markdown]
# ## Serving every user in one batch
# The users' adapters are stacked; a batch mixes their requests, and each layer adds
# row m's own s (x A^T) B^T to one shared base product. On a GPU that term is one Triton
# launch (`scripts/bench_personal.py` times it); here, on the CPU, the PyTorch path.

# %%
served = stack_adapters(policy, [result["models"][n] for n in NAMES])
ids = torch.arange(len(NAMES)).repeat(4)  # 4 requests per user, interleaved
prompts = torch.tensor([enc.encode_ordinary("Return the")] * len(ids))
with users(served, ids):
    mixed = served(prompts).logits
own = torch.cat([result["models"][NAMES[i]](prompts[:1]).logits for i in ids.tolist()])
served_err = (mixed - own).abs().max().item()
print(f"one mixed batch vs each user's own model: max |logit difference| {served_err:.2e}")

x = torch.randn(512, 128)
A, B = torch.randn(16, 8, 128) / 11, torch.randn(16, 128, 8)
rows = torch.randint(0, 16, (512,))
s = torch.ones(16)
kernel_err = (multi_lora_loop(x, A, B, rows, s) - multi_lora_reference(x, A, B, rows, s)).abs().max().item()  # fmt: skip
with users(served, ids):
    generated = served.generate(prompts[:, :2], 12, temperature=0.0)
for i, name in enumerate(NAMES):
    print(f"{name:8s} greedy: Return{enc.decode(generated[i, 2:].tolist())!r}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 1]})
ax = axes[0]
width = 0.8 / len(METHODS)
for j, m in enumerate(METHODS):
    est = [mean_se(correct[n][m]) for n in NAMES]
    ax.bar(np.arange(len(NAMES)) + j * width, [e.value for e in est], width,
           yerr=[e.se for e in est], capsize=2, label=m)  # fmt: skip
ax.axhline(0.5, color="black", lw=0.6, ls=":")
ax.set(xticks=np.arange(len(NAMES)) + 0.4 - width / 2, xticklabels=NAMES, ylim=(0, 1),
       ylabel="held-out preference accuracy (± 1 SE)", title="whose taste each method learned")  # fmt: skip
ax.legend(fontsize=7, ncol=3)
im = axes[1].imshow(agree, vmin=0, vmax=1, cmap="viridis")
axes[1].set(xticks=range(len(NAMES)), xticklabels=NAMES, yticks=range(len(NAMES)), yticklabels=NAMES,
            title="row user agrees with column's pairs")  # fmt: skip
plt.setp(axes[1].get_xticklabels(), rotation=45)
fig.colorbar(im, ax=axes[1], fraction=0.046)
fig.tight_layout()
fig.savefig(OUT / "personalization.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'personalization.png'}")

# %% [markdown]
# ## What the numbers say
# The first claims are how the pieces are built and hold on any base; the rest are what
# personalization should buy, on this small base and a few dozen pairs per user.

# %%
claim("the base model scores exactly 1/2 on every user's pairs (the score is relative to it)", all((correct[n]["base"] == 0.5).all() for n in NAMES), "every pair a tie")  # fmt: skip
if "brief" in NAMES and "verbose" in NAMES:
    i, j = NAMES.index("brief"), NAMES.index("verbose")
    claim("brief and verbose disagree on every one of each other's pairs", agree[i, j] == 0 and agree[j, i] == 0, f"agreement {agree[i, j]:.2f} / {agree[j, i]:.2f}")  # fmt: skip
claim("one mixed batch through the stacked adapters gives each user's own model's logits", served_err < 1e-4, f"max diff {served_err:.1e}")  # fmt: skip
claim("the loop over adapters equals the row-by-row definition of the multi-LoRA term", kernel_err < 1e-4, f"max diff {kernel_err:.1e}")  # fmt: skip
claim("each user's own adapter beats one adapter shared by everyone, on their own taste", own_vs_shared.difference > 0 and not own_vs_shared.within_noise, str(own_vs_shared), at_scale=True)  # fmt: skip
claim("an adapter trained on the user's pairs beats telling the model their profile", own_vs_profile.difference > 0 and not own_vs_profile.within_noise, str(own_vs_profile), at_scale=True)  # fmt: skip
claim("a 4-vector soft prompt per user moves the model toward its user", soft_vs_base.difference > 0 and not soft_vs_base.within_noise, str(soft_vs_base), at_scale=True)  # fmt: skip
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Give the shared adapter each user's id as a first token ("user: brief"): does one
#    conditioned adapter match the per-user ones, at a fifth of the parameters?
# 2. Train a user's adapter on 8, 16, 32, 48 pairs: from how many does it beat the
#    profile in the prompt? (That is the cold-start problem.)
# 3. Answer `minift feedback --user me --rounds 20` yourself, run `minift personalize
#    --user me`, then `minift generate --adapter me`: does it write what you chose?
# 4. Merge `brief`'s and `verbose`'s adapters by averaging (lesson 34's soup): whose
#    taste wins, and why is averaging opposite adapters not a compromise?
# 5. On a GPU, run `scripts/bench_personal.py`: at how many users does the one-launch
#    kernel beat the loop over adapters, and by how much at 64 users?
