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
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from minift.recipes.rlhf_methods import run_ppo
from minift.recipes.rlhf_stages import default_policy, default_reward_model, task_prompts
from minift.recipes.tasks import get_task
from minift.rlhf.dpo import DPOConfig, train_config, train_dpo
from minift.rlhf.evaluate import evaluate_best_of_n, evaluate_policy
from minift.rlhf.plots import plot_ppo
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
results = {}


def evaluate(model, name: str) -> dict:
    m = evaluate_policy(model, enc, VAL_PROMPTS, N_EVAL, reward_model, policy)
    results[name] = m
    print(f"{name:22s} truth {m['truth']:+.3f}  reward {m['rm_score']:+.3f}  KL {m['kl']:6.2f}")
    return m


print(f"reward model held-out accuracy {rm_report['val_accuracy']:.3f}; {N_EVAL} samples per evaluation")  # fmt: skip
evaluate(policy, "reference (SFT)")

# %% [markdown]
# ## 1. Best-of-n: optimisation without training
# Sample n responses, keep the one the reward model likes best. The KL of this
# distribution to the policy is at most log n - (n - 1)/n, known before sampling.

# %%
for n in [2, 4] if FAST else [2, 4, 8, 16]:
    m = evaluate_best_of_n(policy, enc, reward_model, VAL_PROMPTS, n, samples=N_EVAL // 2, truth=truth_score)  # fmt: skip
    results[f"best-of-{n}"] = m
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
# log pi(y_c) - log pi(y_r) and how often the implicit reward ranks a pair right.

# %%
t0 = time.perf_counter()
dpo_train = (
    train_config(steps=15, lr=3e-3, eval_every=5) if FAST else train_config()
)  # 150 steps, lr 3e-4
dpo_config = DPOConfig(batch_size=16 if FAST else 32, beta=0.1, train=dpo_train)
dpo = train_dpo(policy, enc, task.train[:256] if FAST else task.train, task.val[:64] if FAST else task.val, dpo_config)  # fmt: skip
for h in dpo.history:
    if "val_margin" in h:
        print(f"DPO step {h['step']:4d}: held-out margin {h['val_margin']:+.2f}, implicit reward accuracy {h['val_reward_accuracy']:.3f}")  # fmt: skip
print(f"DPO: {dpo_config.train.steps} steps in {time.perf_counter() - t0:.1f}s")
evaluate(dpo.model, "DPO (beta 0.1)")

# %% [markdown]
# ## 3. PPO with and without the KL penalty
# Same budget, same seed; only beta differs. Watch the two lines of each run: the
# reward-model score and the hidden truth. With the penalty they rise together. Without
# it the policy keeps raising the score after the truth has stopped improving: it found
# responses the reward model overrates (here, repeating storage words; the reward model
# saw too few repetitions to learn that the judge dislikes them).

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
    print(f"{name}: {config.iterations} iterations in {time.perf_counter() - t0:.1f}s")
    evaluate(runs[name].model.policy, name)
plot_ppo({k: r.result.history for k, r in runs.items()}, OUT / "ppo_kl_vs_no_kl.png", title="PPO: beta 0.2 (solid) vs no KL penalty (dashed)")  # fmt: skip
hacked = results["PPO (no KL penalty)"]
for s in hacked["samples"][:4]:
    print(f"  no-KL sample: {s}")

# %% [markdown]
# ## 4. Score, truth and KL of every method
# Left: what the reward model thinks. Right: what the judge thinks. Each point is a
# method at the KL it spent. A method is better than another only on the right.

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
for i, (name, m) in enumerate(results.items()):
    marker = "s" if name.startswith("best") else "o"
    for ax, key in ((ax1, "rm_score"), (ax2, "truth")):
        ax.scatter(m["kl"], m[key], marker=marker, color=f"C{i % 10}", label=name)
ax1.set_ylabel("reward-model score (normalised)")
ax2.set_ylabel("hidden truth")
for ax in (ax1, ax2):
    ax.set_xlabel("KL to the reference (nats; best-of-n: the bound)")
    ax.set_xscale("symlog", linthresh=1.0)
ax2.legend(fontsize=7)
fig.tight_layout()
fig.savefig(OUT / "methods_truth_vs_kl.png", dpi=110)
plt.close(fig)

print(f"\n{'method':22s} {'truth':>7s} {'reward':>7s} {'KL':>7s}")
for name, m in results.items():
    print(f"{name:22s} {m['truth']:+7.3f} {m['rm_score']:+7.3f} {m['kl']:7.2f}")
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
