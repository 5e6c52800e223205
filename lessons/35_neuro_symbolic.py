# %% [markdown]
# # Lesson 35: neuro-symbolic hybrids — automata, tools and verifiers around a model
#
# A language model proposes; an exact symbolic part disposes. Three ways to combine them:
#
# | hybrid                | the symbolic part                          | guarantees                 |
# |-----------------------|--------------------------------------------|----------------------------|
# | constrained decoding  | a regex compiled to an automaton over the BPE vocabulary (Willard and Louf 2023) | every output matches |
# | tool use              | a calculator the model calls in its text (Toolformer, Schick et al. 2023) | exact arithmetic, if the call is right |
# | verifier in the loop  | an `ast` check on n sampled candidates     | only checked answers kept  |

# %%
import re
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from minift.claims import claim
from minift.metrics import compare, mean_se
from minift.neurosym import build_index, calculate, execute, generate_constrained
from minift.recipes.neurosym import (
    arithmetic_questions,
    direct_correct,
    tool_correct,
    train_arithmetic,
    verified_correct,
)
from minift.recipes.pretrain import load_base
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "35")
print(f"fast mode: {FAST}")
torch.manual_seed(0)
base, enc = load_base()

# %% [markdown]
# ## 1. Constrained decoding
# Each expression becomes a DFA over bytes, then an index: for every automaton state,
# the tokens of the vocabulary that keep the text inside the language, and how many
# tokens a match still needs. At each step the logits of all other tokens are -inf.

# %%
CONSTRAINTS = {
    "identifier": r"[A-Za-z_][A-Za-z0-9_]*",
    "call": r"[a-z_]+\((([a-z_]+|[0-9]+)(, ([a-z_]+|[0-9]+))*)?\)",
    "json": r"\{\"name\": \"[a-z]{1,8}\", \"size\": [0-9]{1,3}\}",
}
N_SAMPLES = 8 if FAST else 32
BUDGET = 24
g = torch.Generator().manual_seed(0)
decoding = {}
for name, pattern in CONSTRAINTS.items():
    t0 = time.perf_counter()
    index = build_index(pattern, enc)
    built = time.perf_counter() - t0
    free = [
        generate_constrained(base, enc, "Return the", None, BUDGET, 1.0, g)
        for _ in range(N_SAMPLES)
    ]
    held = [
        generate_constrained(base, enc, "Return the", index, BUDGET, 1.0, g)
        for _ in range(N_SAMPLES)
    ]
    decoding[name] = {
        "free_match": np.mean([bool(re.fullmatch(pattern, o.text)) for o in free]),
        "match": np.mean([bool(re.fullmatch(pattern, o.text)) for o in held]),
        "ms_free": 1000 * sum(o.seconds for o in free) / sum(len(o.tokens) for o in free),
        "ms": 1000 * sum(o.seconds for o in held) / max(1, sum(len(o.tokens) for o in held)),
        "ms_mask": 1000
        * sum(o.mask_seconds for o in held)
        / max(1, sum(len(o.tokens) for o in held)),
        "states": len(index.next),
        "build_s": built,
    }
    d = decoding[name]
    print(f"{name:10s} index: {d['states']:3d} states, built in {built:.2f}s | matches: free {d['free_match']:.2f}, constrained {d['match']:.2f} | ms/token {d['ms_free']:.2f} -> {d['ms']:.2f} (masking {d['ms_mask']:.2f})")  # fmt: skip
    print(f"{'':10s} e.g. {held[0].text!r}")

# %% [markdown]
# ## 2. Tool use: a calculator called from the text
# Two fine-tunes of the base on the same 400 questions: one answers directly
# ("What is 37*4-12? 136"), the other writes a call ("<< 37*4-12>> 136"). At test time the
# executor runs each call and writes the result back. A failing call is recorded:

# %%
for bad in ("7/0", "3+*4", "__import__('os')"):
    print(f"  <<{bad}>> -> {execute(bad).result}")
STEPS = 40 if FAST else 150
N_TEST = 32 if FAST else 64
train_q = arithmetic_questions(400, seed=0)
test_q = arithmetic_questions(N_TEST, seed=1, exclude=[e for e, _ in train_q])
t0 = time.perf_counter()
direct = train_arithmetic(base, enc, train_q, tool=False, steps=STEPS)
tooled = train_arithmetic(base, enc, train_q, tool=True, steps=STEPS)
print(f"two fine-tunes of {STEPS} steps each (full fine-tuning, lr 3e-3, batch 32) in {time.perf_counter() - t0:.1f}s")  # fmt: skip
right_direct = direct_correct(direct, enc, test_q)
right_tool, calls = tool_correct(tooled, enc, test_q)
failed = [c for c in calls if not c.ok]
print(f"direct answers: {mean_se(right_direct)}")
print(f"with the tool:  {mean_se(right_tool)}  ({len(calls)} calls, {len(failed)} failed)")
c_tool = compare("tool", right_tool, "direct", right_direct)
print(c_tool)

# %% [markdown]
# ## 3. A verifier in the loop
# Sampling the tool model at temperature 1 makes mistakes in the call. An exact check
# is available at inference: the call must parse to the question's own expression
# (`ast`). Sample n calls, keep the first that passes.

# %%
N_CAND = 4 if FAST else 8
V_TEST = test_q[: 16 if FAST else 48]
single, verified = verified_correct(tooled, enc, V_TEST, N_CAND, 1.0, seed=0)
print(f"one sample:            {mean_se(single)}")
print(f"first verified of {N_CAND}:  {mean_se(verified)}")
c_verify = compare(f"verified of {N_CAND}", verified, "one sample", single)
print(c_verify)

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 4))
names = list(decoding)
x = np.arange(len(names))
axes[0].bar(x - 0.2, [decoding[n]["free_match"] for n in names], 0.4, label="free")
axes[0].bar(x + 0.2, [decoding[n]["match"] for n in names], 0.4, label="constrained")
axes[0].set(xticks=x, xticklabels=names, ylim=(0, 1.05), ylabel="outputs that match", title="constrained decoding")  # fmt: skip
axes[0].legend(fontsize=8)
axes[1].bar(x - 0.2, [decoding[n]["ms_free"] for n in names], 0.4, label="free")
axes[1].bar(x + 0.2, [decoding[n]["ms"] for n in names], 0.4, label="constrained")
axes[1].set(xticks=x, xticklabels=names, ylabel="ms per token", title="the cost of the mask")
axes[1].legend(fontsize=8)
bars = {
    "direct": right_direct,
    "tool": right_tool,
    "1 sample": single,
    f"verified/{N_CAND}": verified,
}
est = [mean_se(v) for v in bars.values()]
axes[2].bar(range(len(bars)), [e.value for e in est], yerr=[e.se for e in est], capsize=3)
axes[2].set(xticks=range(len(bars)), xticklabels=list(bars), ylim=(0, 1), ylabel="held-out accuracy (± 1 SE)", title="arithmetic")  # fmt: skip
fig.tight_layout()
fig.savefig(OUT / "neuro_symbolic.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'neuro_symbolic.png'}")

# %% [markdown]
# ## What the numbers say
# The first claims hold by construction on any base; the others depend on how well this
# base learns to copy an expression into a call.

# %%
claim("every constrained output matches its expression", all(d["match"] == 1.0 for d in decoding.values()), ", ".join(f"{n} {d['match']:.2f}" for n, d in decoding.items()))  # fmt: skip
claim("failing tool calls are recorded as failures, not raised", all(not execute(b).ok for b in ("7/0", "3+*4")))  # fmt: skip
claim("the calculator's result equals Python's own arithmetic on every test question", all(calculate(e) == eval(e) for e, _ in test_q), f"{len(test_q)} questions")  # fmt: skip
claim("the model alone rarely produces text that matches a constraint", all(d["free_match"] < 0.5 for d in decoding.values()), ", ".join(f"{n} {d['free_match']:.2f}" for n, d in decoding.items()), at_scale=True)  # fmt: skip
claim("the mask costs less than the model's own forward pass per token", all(d["ms_mask"] < d["ms_free"] for d in decoding.values()), ", ".join(f"{n} {d['ms_mask']:.2f} vs {d['ms_free']:.2f} ms" for n, d in decoding.items()), at_scale=True)  # fmt: skip
claim("calling the calculator beats answering directly on held-out arithmetic", c_tool.difference > 0 and not c_tool.within_noise, str(c_tool), at_scale=True)  # fmt: skip
claim(f"keeping the first verified of {N_CAND} samples beats one sample", c_verify.difference > 0 and not c_verify.within_noise, str(c_verify), at_scale=True)  # fmt: skip
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Write the expression for a Python `def` line (`def name(arg, arg):`) and sample 20
#    from the base: what does the index's `distance` say about the shortest one?
# 2. Remove the pruning of dead states in `minift.neurosym.regex` and constrain to
#    `a+b` with a vocabulary lacking "b": what happens at the budget's end?
# 3. Add `**` to the calculator, with a limit on the exponent: why is `9**9**9` a denial
#    of service without one?
# 4. Train the tool model on half as many steps: which fails first, the call's format or
#    the copying of the numbers? (Read the failed calls.)
# 5. Make the verifier weaker (accept any call that parses): how much of the gain remains?
