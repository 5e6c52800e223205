# %% [markdown]
# # Lesson 18: DPO, PPO and best-of-n, compared against the truth
#
# Three ways to get responses the preferences favour, from the same SFT policy and the
# same comparisons (the `file-words` task of lesson 16):
#
# | method    | trains              | needs                          | paper                    |
# |-----------|---------------------|--------------------------------|--------------------------|
# | best-of-n | nothing             | a reward model, n samples      | Stiennon et al. 2020     |
# | PPO       | the policy (+value) | a reward model, online samples | Ouyang et al. 2022       |
# | DPO       | the policy          | the comparisons only           | Rafailov et al. 2023     |
#
# Each buys a higher score at the price of moving away from the reference policy (the
# KL). The hidden truth tells us which of them buys *better responses*, and shows the
# classic failure: PPO without its KL penalty learns to please the reward model, not the
# judge the reward model was trained to imitate (reward hacking; Gao et al. 2023).

# %%
import math
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from minift.claims import claim
from minift.metrics import compare, mean_se
from minift.recipes.rlhf_methods import run_ppo
from minift.recipes.rlhf_stages import default_policy, default_reward_model, task_prompts
from minift.recipes.tasks import get_task
from minift.rlhf.dpo import DPOConfig, pair_logprobs, train_config, train_dpo
from minift.rlhf.evaluate import SampleRecorder, evaluate_best_of_n, evaluate_policy
from minift.rlhf.plots import plot_ppo
from minift.rlhf.preference import encode_pairs
from minift.rlhf.tasks import truth_score
from minift.rlhf.trainer import PPOConfig
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "18")
print(f"fast mode: {FAST}")
torch.manual_seed(0)
policy, enc = default_policy()
reward_model, rm_report = default_reward_model()
task = get_task("file-words")
N_EVAL = 64 if FAST else 256
VAL_PROMPTS = task_prompts("val")
results, truths, rewards = {}, {}, {}


def evaluate(model, name: str) -> dict:
    rec = SampleRecorder(reward_model)
    m = evaluate_policy(model, enc, VAL_PROMPTS, N_EVAL, rec, policy, truth=rec.score)
    results[name], truths[name], rewards[name] = m, np.array(rec.truth), np.array(rec.reward)
    print(f"{name:22s} truth {m['truth']:+.3f}  reward {m['rm_score']:+.3f}  KL {m['kl']:6.2f}")
    return m


print(f"reward model held-out accuracy {rm_report['val_accuracy']:.3f}; {N_EVAL} samples per evaluation")  # fmt: skip
evaluate(policy, "reference (SFT)")

# %% [markdown]
# ## 1. Best-of-n: optimisation without training
# Sample n responses, keep the one the reward model likes best. The KL of this
# distribution to the policy is at most log n - (n - 1)/n, known before sampling. Each
# best-of-n answers the first half of the evaluation prompts (it costs n samples each).

# %%
N_VALUES = [2, 4] if FAST else [2, 4, 8, 16]
kl_bound_error = 0.0
for n in N_VALUES:
    rec = SampleRecorder(reward_model)
    m = evaluate_best_of_n(policy, enc, reward_model, VAL_PROMPTS, n, samples=N_EVAL // 2, truth=rec.score)  # fmt: skip
    results[f"best-of-{n}"], truths[f"best-of-{n}"] = m, np.array(rec.truth)
    kl_bound_error = max(kl_bound_error, abs(m["kl"] - (math.log(n) - (n - 1) / n)))
    print(f"{'best-of-' + str(n):22s} truth {m['truth']:+.3f}  reward {m['rm_score']:+.3f}  KL <= {m['kl']:.2f}")  # fmt: skip

# %% [markdown]
# ## 2. DPO: the comparisons, no reward model, no sampling
# DPO (Rafailov et al. 2023) notices that the optimum of "reward - beta KL" is
# pi*(y) proportional to ref(y) exp(r(y) / beta), so every policy implies a reward
# r = beta log(pi / ref). Plugging that into the Bradley-Terry likelihood gives a loss on
# the policy alone:
#
#     loss = -log sigmoid(beta [log pi(y_c)/ref(y_c) - log pi(y_r)/ref(y_r)])
#
# It trains on the fixed comparison pairs, offline. Watched: the held-out margin
# log pi(y_c) - log pi(y_r) and how often the implicit reward ranks a pair right. At
# step 0 the policy *is* the reference, so every implicit reward, and every margin
# between two, is exactly 0: a tie on every pair. The library's running accuracy counts
# a strict win only (a tie as wrong), so it reads 0 there; below, ties are counted
# apart, and the accuracy counts a tie as half a win (a coin flip).

# %%
t0 = time.perf_counter()
dpo_train = (
    train_config(steps=15, lr=3e-3, eval_every=5) if FAST else train_config()
)  # 150 steps, lr 3e-4
dpo_config = DPOConfig(batch_size=16 if FAST else 32, beta=0.1, train=dpo_train)
dpo_val = task.val[:64] if FAST else task.val
dpo = train_dpo(policy, enc, task.train[:256] if FAST else task.train, dpo_val, dpo_config)  # fmt: skip
print(f"DPO: {dpo_config.train.steps} steps of {dpo_config.batch_size} pairs in {time.perf_counter() - t0:.1f}s")  # fmt: skip

val_pairs = encode_pairs(dpo_val, enc, policy.config.block_size)
ref_c, ref_r = pair_logprobs(policy, val_pairs, enc)


def implicit_rewards(model) -> dict:
    """Wins, ties and losses of the implicit reward beta log(pi / ref) on the held-out pairs."""
    c, r = pair_logprobs(model, val_pairs, enc)
    margin = dpo_config.beta * ((c - ref_c) - (r - ref_r))
    win, tie = (margin > 0).float().mean().item(), (margin == 0).float().mean().item()
    return {"win": win, "tie": tie, "loss": 1 - win - tie, "accuracy": win + tie / 2}


dpo_start, dpo_end = implicit_rewards(policy), implicit_rewards(dpo.model)
print(f"{'step':>5s} {'held-out margin':>16s} {'implicit reward: wins':>22s} {'ties':>6s} {'accuracy (tie = 1/2)':>21s}")  # fmt: skip
for h in (h for h in dpo.history if "val_margin" in h):
    known = (
        dpo_start if h["step"] == 0 else dpo_end if h["step"] == dpo_config.train.steps else None
    )
    wins = f"{h['val_reward_accuracy']:22.3f}"
    rest = f"{known['tie']:6.3f} {known['accuracy']:21.3f}" if known else f"{'':6s} {'':21s}"
    print(f"{h['step']:5d} {h['val_margin']:+16.2f} {wins} {rest}")
print("(ties counted only at the start and the end; in between the policy has moved and ties are rare)")  # fmt: skip
evaluate(dpo.model, "DPO (beta 0.1)")

# %% [markdown]
# ## 3. PPO with and without the KL penalty
# Same budget, same seed; only beta differs. Watch the two lines of each run: the
# reward-model score and the hidden truth. The question, answered at the end: does the
# run without the penalty push the score higher while the truth stays behind, because it
# found responses the reward model overrates (repeating storage words: the reward model
# saw too few repetitions to learn that the judge dislikes them, lesson 16)?
#
# The lesson runs fewer PPO iterations, with smaller batches, than `minift rlhf` and
# scripts/bench_rlhf.py (the figures in the README) do by default, to stay within a
# lesson's two minutes; its numbers are therefore not the README's (printed below).

# %%
runs = {}
for name, beta in (("PPO (beta 0.2)", 0.2), ("PPO (no KL penalty)", 0.0)):
    config = PPOConfig(
        iterations=6 if FAST else 30, batch_size=16 if FAST else 32, num_minibatches=2,
        ppo_epochs=2, lr=3e-4, kl_coef=beta, seed=0,
    )  # fmt: skip
    t0 = time.perf_counter()
    runs[name] = run_ppo(
        policy, enc, reward_model, task_prompts("train"), config, truth=truth_score
    )
    print(f"{name}: {config.iterations} iterations of {config.batch_size} rollouts in {time.perf_counter() - t0:.1f}s")  # fmt: skip
    evaluate(runs[name].model.policy, name)
recipe = PPOConfig()
print(f"this lesson: PPO {config.iterations} iterations x {config.batch_size} rollouts = {config.iterations * config.batch_size:,}; "
      f"`minift rlhf` default: {recipe.iterations} x {recipe.batch_size} = {recipe.iterations * recipe.batch_size:,} "
      f"(scripts/bench_rlhf.py: {recipe.iterations} x 64). DPO: {dpo_config.train.steps} steps x {dpo_config.batch_size} pairs "
      f"here, {DPOConfig().train.steps} x {DPOConfig().batch_size} in the recipe")  # fmt: skip
plot_ppo({k: r.result.history for k, r in runs.items()}, OUT / "ppo_kl_vs_no_kl.png", title="PPO: beta 0.2 (solid) vs no KL penalty (dashed)")  # fmt: skip
hacked = results["PPO (no KL penalty)"]
for s in hacked["samples"][:4]:
    print(f"  no-KL sample: {s}")

# %% [markdown]
# ## 4. Score, truth and KL of every method
# Left: what the reward model thinks. Right: what the judge thinks. Each point is a
# method at the KL it spent, with one standard error of its mean over the samples. A
# method is better than another only on the right.

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
for i, (name, m) in enumerate(results.items()):
    marker = "s" if name.startswith("best") else "o"
    for ax, key, values in ((ax1, "rm_score", rewards.get(name)), (ax2, "truth", truths[name])):
        err = mean_se(values).se if values is not None else None
        ax.errorbar(m["kl"], m[key], yerr=err, fmt=marker, color=f"C{i % 10}", capsize=3, label=name)  # fmt: skip
ax1.set_ylabel("reward-model score (normalised)")
ax1.set_title("best-of-n: the score of the chosen sample (no error bar)", fontsize=9)
ax2.set_ylabel("hidden truth (mean per response, +- 1 SE)")
kl_max = max(m["kl"] for m in results.values())
ticks = [t for t in (0, 0.5, 1, 2, 5, 10, 20, 50, 100) if t <= 1.2 * kl_max]
for ax in (ax1, ax2):
    ax.set_xlabel("KL to the reference (nats; best-of-n: the bound)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
handles, labels = ax2.get_legend_handles_labels()
fig.legend(handles, labels, loc="center right", fontsize=8)  # beside the panels, not on them
fig.tight_layout(rect=(0, 0, 0.83, 1))
fig.savefig(OUT / "methods_truth_vs_kl.png", dpi=110)
plt.close(fig)

print(f"\n{'method':22s} {'truth':>7s} {'+- SE':>6s} {'reward':>7s} {'KL':>7s} {'samples':>8s}")
for name, m in results.items():
    kl = f"<={m['kl']:.2f}" if name.startswith("best") else f"{m['kl']:.2f}"
    print(f"{name:22s} {m['truth']:+7.3f} {mean_se(truths[name]).se:6.3f} {m['rm_score']:+7.3f} {kl:>7s} {len(truths[name]):8d}")  # fmt: skip

# %% [markdown]
# ## What the numbers say
# The first claims are exact, on any base. The others compare the methods on the same
# held-out prompts, beyond the noise of the samples: at scale, DPO and PPO with a KL
# penalty both improve what people judge (Rafailov et al. 2023), and optimising a reward
# model too hard (here: no KL penalty) raises its score while the true quality stalls or
# falls (Gao et al. 2023). On a small base trained for a minute, each may or may not
# show.

# %%
claim("at DPO's step 0 the policy is the reference: every implicit reward margin on the held-out pairs is exactly 0 (a tie)",
      dpo_start["tie"] == 1.0, f"ties {dpo_start['tie']:.3f}, wins {dpo_start['win']:.3f}; counting a tie as 1/2, accuracy {dpo_start['accuracy']:.3f}")  # fmt: skip
claim("best-of-n reports the KL bound log n - (n - 1)/n", kl_bound_error < 1e-9,
      f"max deviation {kl_bound_error:.1e}")  # fmt: skip
ref_t = truths["reference (SFT)"]


def gain(name: str):
    t = truths[name]
    return compare(
        name, t, "reference", ref_t[: len(t)]
    )  # best-of-n: the first half of the prompts


for name in ("DPO (beta 0.1)", "PPO (beta 0.2)", f"best-of-{N_VALUES[-1]}"):
    c = gain(name)
    print(c)
    claim(f"{name} raises the hidden truth over the reference policy, beyond noise", c.difference > 0 and not c.within_noise,
          f"{c.mean_b:+.3f} -> {c.mean_a:+.3f}, 95% CI of the gain {c.low:+.3f} to {c.high:+.3f}", at_scale=True)  # fmt: skip
c_dpo = implicit_rewards(dpo.model)
claim("after training, DPO's implicit reward ranks more held-out pairs right than a coin flip (ties as 1/2)",
      c_dpo["accuracy"] > 0.5, f"{c_dpo['accuracy']:.3f} ({c_dpo['win']:.3f} wins, {c_dpo['tie']:.3f} ties)", at_scale=True)  # fmt: skip
r_hack = compare(
    "no KL penalty", rewards["PPO (no KL penalty)"], "beta 0.2", rewards["PPO (beta 0.2)"]
)
t_hack = compare(
    "no KL penalty", truths["PPO (no KL penalty)"], "beta 0.2", truths["PPO (beta 0.2)"]
)
print(f"reward: {r_hack}\ntruth:  {t_hack}")
claim("without the KL penalty PPO reaches a higher reward-model score but not a higher truth (reward hacking)",
      r_hack.difference > 0 and not r_hack.within_noise and (t_hack.difference < 0 or t_hack.within_noise),
      f"score {r_hack.mean_b:+.3f} -> {r_hack.mean_a:+.3f} ({r_hack.low:+.3f} to {r_hack.high:+.3f}), truth {t_hack.mean_b:+.3f} -> {t_hack.mean_a:+.3f} ({t_hack.low:+.3f} to {t_hack.high:+.3f})",
      at_scale=True)  # fmt: skip
if FAST:
    print("(fast mode: a tiny base and few steps exercise the code; the comparison needs normal mode)")  # fmt: skip
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Give PPO without the KL penalty twice the iterations. Plot truth against reward-model
#    score over the run: where does the curve turn over (Gao et al.'s over-optimisation)?
# 2. Sweep DPO's beta over 0.03, 0.1, 0.3. How do the KL and the truth move?
# 3. Best-of-n with n = 64 costs 64 samples per answer. At what n does it match PPO's
#    truth, and at what KL?
# 4. Record your own preferences with `minift feedback --rounds 20`, then run
#    `minift rlhf --method dpo --data preferences.jsonl`. What did your feedback teach?
