# %% [markdown]
# # Lesson 34: ensembles, conditional weighting and model soups
#
# Several fine-tunes of one base on one task (`stdlib-package`: which package does a
# docstring document?) disagree on some inputs. Combining them:
#
# | combination     | how                                                  | fitted on validation      |
# |-----------------|------------------------------------------------------|---------------------------|
# | uniform         | mean of the members' probabilities                   | nothing                   |
# | fitted weights  | sum_m w_m p_m, w on the simplex, min NLL             | M - 1 numbers             |
# | stacking        | logistic regression on the members' log-probs (Wolpert 1992), L2 by 3-fold CV | M C x C + C |
# | gate            | g(x) = softmax(V h(x)): weights per input (Jacobs et al. 1991) | (F + 1) M        |
# | soup            | average the *weights* of the LoRA fine-tunes (Wortsman et al. 2022) | nothing     |
#
# The validation rows are split in two: the combinations are fitted on one half and every
# number below is measured on the other.

# %%
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from minift.claims import claim
from minift.ensemble import (
    Stacker,
    choose_l2,
    fit_gate,
    fit_weights,
    greedy_soup,
    mixture,
    nll,
    uniform_average,
    uniform_soup,
    weighted_average,
)
from minift.metrics import compare, mean_se
from minift.recipes.ensemble import (
    MemberSpec,
    input_features,
    member_probs,
    merged_copy,
    seconds_per_call,
    train_members,
)
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "34")
print(f"fast mode: {FAST}")
torch.manual_seed(0)
base, enc = load_base()
task = get_task("stdlib-package")
fit_rows, test_rows = task.val[0::2], task.val[1::2]
y_fit = np.array([r["label"] for r in fit_rows])
y_test = np.array([r["label"] for r in test_rows])

# %% [markdown]
# ## The members
# Three LoRA fine-tunes at three learning rates around LoRA's tuned 5e-3 (lesson 10),
# each with its own seed (a hyperparameter sweep, as the soup paper's), plus two other
# methods: the closed-form probe and IA3 at its tuned 3e-2.

# %%
STEPS = 30 if FAST else 160
specs = [MemberSpec("lora", 2e-3, 0), MemberSpec("lora", 5e-3, 1), MemberSpec("lora", 1.5e-2, 2),
         MemberSpec("probe", None, 0), MemberSpec("ia3", 3e-2, 0)]  # fmt: skip
t0 = time.perf_counter()
members = train_members(task, base, enc, specs, STEPS)
print(f"trained {len(members)} members, {STEPS} steps each, in {time.perf_counter() - t0:.1f}s")
names = list(members)
P_fit = np.stack([member_probs(members[n], task, enc, fit_rows) for n in names])
P_test = np.stack([member_probs(members[n], task, enc, test_rows) for n in names])
correct = {n: (P_test[i].argmax(-1) == y_test).astype(float) for i, n in enumerate(names)}
for n in names:
    print(f"{n:24s} test accuracy {mean_se(correct[n])}")
best = max(names, key=lambda n: correct[n].mean())
print(f"best member: {best}")

# %% [markdown]
# ## Combining predictions

# %%
uniform = uniform_average(P_test).numpy()
weights = fit_weights(P_fit, y_fit)
weighted = weighted_average(P_test, weights).numpy()
l2 = choose_l2(P_fit, y_fit)  # by 3-fold cross-validation on the fit half
stacker = Stacker(l2=l2).fit(P_fit, y_fit)
stacked = stacker.predict_proba(P_test).numpy()
h_fit = input_features(base, task, enc, fit_rows)
h_test = input_features(base, task, enc, test_rows)
gate = fit_gate(h_fit, P_fit, y_fit, steps=300)
with torch.no_grad():
    g_test = gate(h_test)
gated = mixture(P_test, g_test).numpy()
print("fitted weights: " + ", ".join(f"{n} {w:.2f}" for n, w in zip(names, weights)))
print(f"stacking's L2 strength, chosen by cross-validation: {l2:g}")
combos = {"uniform": uniform, "weighted": weighted, "stacking": stacked, "gate": gated}

# %% [markdown]
# ## Averaging weights: the soup
# The LoRA members are merged into their copies of the base weights and averaged; the
# greedy soup adds members in order of their accuracy on the fit half while it does not
# drop.

# %%
lora_names = [n for n in names if n.startswith("lora")]
merged = [merged_copy(members[n]) for n in lora_names]
soup = uniform_soup(merged)


def fit_accuracy(model) -> float:
    return float((member_probs(model, task, enc, fit_rows).argmax(-1) == y_fit).mean())


greedy, chosen = greedy_soup(merged, fit_accuracy)
print(f"greedy soup holds {[lora_names[i] for i in chosen]}")
combos["soup"] = member_probs(soup, task, enc, test_rows)
combos["greedy soup"] = member_probs(greedy, task, enc, test_rows)
combos["lora ensemble"] = uniform_average(P_test[[names.index(n) for n in lora_names]]).numpy()
for name, p in combos.items():
    correct[name] = (p.argmax(-1) == y_test).astype(float)
    print(f"{name:24s} test accuracy {mean_se(correct[name])}  NLL {nll(torch.as_tensor(p), y_test):.3f}")  # fmt: skip

# %% [markdown]
# ## What each costs at inference
# An ensemble of M members runs M models (the gate one more, the base, for its
# features); a soup runs one.

# %%
models = [members[n] for n in names]
cost = {
    "one member": seconds_per_call(lambda: member_probs(members[best], task, enc, test_rows)),
    f"ensemble of {len(names)}": seconds_per_call(
        lambda: [member_probs(m, task, enc, test_rows) for m in models]
    ),  # fmt: skip
    "gate": seconds_per_call(
        lambda: (
            [member_probs(m, task, enc, test_rows) for m in models],
            input_features(base, task, enc, test_rows),
        )
    ),  # fmt: skip
    "soup": seconds_per_call(lambda: member_probs(soup, task, enc, test_rows)),
}
for k, v in cost.items():
    print(f"{k:16s} {1000 * v:7.1f} ms for {len(test_rows)} rows")

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
ax = axes[0]
bars = names + list(combos)
est = [mean_se(correct[n]) for n in bars]
colors = ["tab:grey"] * len(names) + ["tab:blue"] * 4 + ["tab:green"] * 3
ax.bar(range(len(bars)), [e.value for e in est], yerr=[e.se for e in est], color=colors, capsize=2)
ax.set(xticks=range(len(bars)), ylabel="test accuracy (± 1 SE)", title="members (grey), ensembles (blue), soups (green)")  # fmt: skip
ax.set_xticklabels(bars, rotation=60, ha="right", fontsize=7)
ax.set_ylim(0, 1)
trust = np.stack([g_test.numpy()[y_test == c].mean(0) for c in range(task.num_labels)])
im = axes[1].imshow(trust, vmin=0, vmax=max(0.5, trust.max()), cmap="viridis", aspect="auto")
axes[1].set(xticks=range(len(names)), yticks=range(task.num_labels), yticklabels=task.labels,
            title="mean gate weight, by the input's true package")  # fmt: skip
axes[1].set_xticklabels(names, rotation=60, ha="right", fontsize=7)
fig.colorbar(im, ax=axes[1], fraction=0.046)
fig.tight_layout()
fig.savefig(OUT / "ensembles.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'ensembles.png'}")

# %% [markdown]
# ## What the numbers say
# The first claims follow from how each combination is built and hold on any base; the
# rest are what ensembles and soups buy in the literature, tested on this base.

# %%
exact_mean = np.abs(uniform - P_test.mean(0)).max()
claim("the uniform ensemble's probabilities are the mean of the members'", exact_mean < 1e-12, f"max diff {exact_mean:.1e}")  # fmt: skip
pinned = mixture(P_test, gate.pin(names.index(best))(h_test).detach()).numpy()
claim("a gate pinned to the best member gives exactly that member's predictions", np.abs(pinned - P_test[names.index(best)]).max() < 1e-12)  # fmt: skip
fit_nll = nll(weighted_average(P_fit, weights), y_fit)
claim("the fitted weights' NLL on the fit half is at most every member's and the uniform mix's", all(fit_nll <= nll(torch.as_tensor(P_fit[i]), y_fit) + 1e-6 for i in range(len(names))) and fit_nll <= nll(uniform_average(P_fit), y_fit) + 1e-6, f"{fit_nll:.3f}")  # fmt: skip
claim("greedy soup's accuracy on the fit half is at least its best ingredient's", fit_accuracy(greedy) >= max(fit_accuracy(m) for m in merged))  # fmt: skip
best_combo = max(combos, key=lambda n: correct[n].mean())
c_best = compare(best_combo, correct[best_combo], best, correct[best])
claim("the best combination beats the best single member on held-out rows", c_best.difference > 0 and not c_best.within_noise, str(c_best), at_scale=True)  # fmt: skip
c_gate = compare("gate", correct["gate"], "uniform", correct["uniform"])
claim("weighting members per input (the gate) beats weighting them equally", c_gate.difference > 0 and not c_gate.within_noise, str(c_gate), at_scale=True)  # fmt: skip
c_soup = compare("soup", correct["soup"], "lora ensemble", correct["lora ensemble"])
claim("a soup of the LoRA fine-tunes matches their ensemble (within noise) at one model's cost", c_soup.within_noise or c_soup.difference > 0, str(c_soup), at_scale=True)  # fmt: skip
claim(f"the ensemble of {len(names)} costs more than twice the soup at inference", cost[f"ensemble of {len(names)}"] > 2 * cost["soup"], f"{1000 * cost[f'ensemble of {len(names)}']:.0f} vs {1000 * cost['soup']:.0f} ms", at_scale=True)  # fmt: skip
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Train five LoRA members at the *same* learning rate with different seeds: does the
#    ensemble still beat its best member? (Diversity is what an ensemble buys.)
# 2. Average the LoRA members' A and B matrices separately instead of their merged
#    updates: compare with the soup, and explain with mean(B A) != mean(B) mean(A).
# 3. Give the gate the members' own confidences (max probability) as extra features: does
#    it learn to trust the confident member?
# 4. Fit the stacker on the *training* rows instead of the held-out half: why does it then
#    trust the member that overfits most?
# 5. Soup the full fine-tune (`full`) with a LoRA member merged: what breaks, and why do
#    soups need fine-tunes of one pretrained model?
