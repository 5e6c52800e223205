# %% [markdown]
# # Lesson 26: cost-aware training and AutoML
#
# A fine-tuning result without its cost is half a result. This lesson
#
# 1. counts the FLOPs of a training step from the architecture (6 W per token for full
#    fine-tuning, 4 W + 6 A with a frozen base and A adapter weights, plus attention;
#    Kaplan et al. 2020, `minift/train/flops.py`) and checks the count against PyTorch's
#    own FLOP counter on the same step, then turns measured time into MFU;
# 2. writes a cost report for a run (time, tokens, FLOPs, peak memory, energy and money
#    from settings) and stops a run when a FLOP budget is spent (`minift/train/cost.py`);
# 3. draws the Pareto front of accuracy against cost across fine-tuning methods;
# 4. searches method, learning rate and rank automatically with random search and with
#    ASHA (Li et al. 2020), which stops weak trials early (`minift/automl/`, `minift tune`).

# %%
import copy
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch.utils.flop_counter import FlopCounterMode

from minift.claims import claim
from minift.data.tasks import DEFAULT_TASK
from minift.metrics import accuracy_se
from minift.peft import LoRAConfig, apply_lora
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task
from minift.recipes.tune import TuneConfig, run_tune
from minift.train import TrainConfig, Trainer
from minift.train.cost import Budget, CostMeter
from minift.train.flops import added_trainable, flops_per_step, measure_peak_flops, mfu
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "26")
base, enc = load_base()
task = get_task(DEFAULT_TASK)
print(f"fast mode: {FAST}; base {base.num_params():,} parameters; task {task.name}")

# %% [markdown]
# ## 1. FLOPs from the architecture, checked by PyTorch's counter
# The counter sees every matmul PyTorch runs. Attention runs as two explicit matmuls here
# (`output_attentions=True`): the fused CPU kernel has no FLOP formula registered.

# %%
B, T = 8, min(32, base.config.block_size)
x = torch.randint(0, base.config.vocab_size, (B, T), generator=torch.Generator().manual_seed(0))
counts = {}
for name in ("full", "lora"):
    model = copy.deepcopy(base).train()
    if name == "lora":
        apply_lora(model, LoRAConfig(r=8, target_modules=["c_attn", "c_proj", "c_fc"]))
    with FlopCounterMode(display=False) as counter:
        model(x, x, output_attentions=True).loss.backward()
    predicted = flops_per_step(base.config, B, T, trainable=added_trainable(model))
    counts[name] = (predicted, counter.get_total_flops())
    print(f"{name:5s}: formula {predicted:.4e}, FlopCounterMode {counts[name][1]:.4e}, "
          f"ratio {counts[name][1] / predicted:.4f}")  # fmt: skip
print(f"LoRA's step costs {counts['lora'][0] / counts['full'][0]:.0%} of full fine-tuning's")

peak = measure_peak_flops("cpu", size=512 if FAST else 1024)
model = copy.deepcopy(base).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
for _ in range(4):  # the first step warms up
    t0 = time.perf_counter()
    model(x, x).loss.backward()
    opt.step()
    opt.zero_grad()
    step_s = time.perf_counter() - t0
achieved = mfu(counts["full"][0], step_s, peak)
print(f"measured matmul peak {peak / 1e9:.1f} GFLOP/s on {torch.get_num_threads()} thread(s); "
      f"a full training step: {step_s * 1000:.0f} ms, MFU {achieved:.1%}")  # fmt: skip

# %% [markdown]
# ## 2. A cost report, and a budget that stops the run
# Watts and price are settings (here a 300 W device at 2.00 per hour, illustrative);
# the FLOP budget allows 2.5 steps' worth, so the run stops after 2 whole steps.

# %%
per_step = flops_per_step(base.config, B, T)
meter = CostMeter(per_step, B * T, Budget(flops=2.5 * per_step), watts=300, price_per_hour=2.0, peak_flops_per_s=peak)  # fmt: skip
batches = lambda step, micro: (x, x)  # noqa: E731
trainer = Trainer(copy.deepcopy(base), TrainConfig(steps=10, lr=1e-4, progress=False), batches, on_step=meter)  # fmt: skip
meter.start()
budget_run = trainer.fit()
report = meter.report()
print("cost:", report.line())
print(f"stopped by the {report.stopped_by_budget} budget after {budget_run.steps_done} of 10 steps")
try:
    CostMeter(per_step, B * T, Budget(flops=per_step / 2))
except ValueError as e:
    print(f"a budget below one step: {e}")

# %% [markdown]
# ## 3. Accuracy against cost, across methods
# The same task, steps and batches; each method at its registry learning rate (from the
# demo's sweep). Cost in FLOPs (from the architecture) and in seconds (measured here, so
# they depend on this machine and its load).

# %%
STEPS = 6 if FAST else 40
pareto = {}
for method in ("full", "lora", "adapter", "ia3", "bitfit"):
    r = finetune(task, base, enc, FinetuneConfig(method=method, train=train_config(steps=STEPS, eval_every=0, eval_at_start=False, progress=False)))  # fmt: skip
    trainable = None if r.trainable == r.total else r.trainable
    flops = STEPS * flops_per_step(base.config, 32, r.max_len, trainable)
    pareto[method] = dict(
        acc=r.metric, se=accuracy_se(r.metric, len(task.val)), flops=flops, seconds=r.seconds
    )
    print(f"{method:8s} {r.metric_name} {r.metric:.3f} ± {pareto[method]['se']:.3f}  {flops:.3g} FLOPs  {r.seconds:.1f} s")  # fmt: skip
front = [m for m in pareto if not any(
    pareto[o]["acc"] >= pareto[m]["acc"] and pareto[o]["flops"] <= pareto[m]["flops"] and o != m
    and (pareto[o]["acc"], pareto[o]["flops"]) != (pareto[m]["acc"], pareto[m]["flops"]) for o in pareto)]  # fmt: skip
print("on the Pareto front (no method both cheaper and at least as accurate):", front)

# %% [markdown]
# ## 4. AutoML: random search against ASHA, on the same sampled trials
# Both sample the same configurations (method in lora/dora/adapter, lr log-uniform in
# [1e-4, 3e-2], rank 2..16): random search trains each for the full budget; ASHA starts
# each at a ninth of it and promotes the top third of each rung (fast mode: a quarter,
# and the top quarter). One seed here;
# `scripts/bench_tune.py` repeats it over 3 seeds.

# %%
# Normal mode: 9 trials, eta 3, 3 rungs (ASHA needs eta^2 = 9 results at rung 0 for one to
# reach the top); fast mode: 4 trials, eta 4, 2 rungs, since each trial's set-up dominates there.
TRIALS, MIN, MAX, ETA = (4, 1, 4, 4) if FAST else (9, 2, 18, 3)
search = {}
for scheduler in ("random", "asha"):
    search[scheduler] = run_tune(TuneConfig(scheduler=scheduler, trials=TRIALS, min_steps=MIN, max_steps=MAX, eta=ETA), base, enc)  # fmt: skip
    b = search[scheduler].best
    print(f"{scheduler:6s}: best {b['metric']:.3f} ({b['method']}, lr {b['lr']:.1e}) after "
          f"{search[scheduler].total_steps} steps, {search[scheduler].seconds:.0f} s")  # fmt: skip
ratio = search["asha"].total_steps / search["random"].total_steps

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.3))
ax = axes[0]
for m, p in pareto.items():
    ax.errorbar(p["flops"], p["acc"], yerr=1.96 * p["se"], fmt="o", capsize=3)
    ax.annotate(m, (p["flops"], p["acc"]), textcoords="offset points", xytext=(5, 5))
fr = sorted(front, key=lambda m: pareto[m]["flops"])
ax.step(
    [pareto[m]["flops"] for m in fr],
    [pareto[m]["acc"] for m in fr],
    where="post",
    color="grey",
    ls=":",
)
ax.set(
    xscale="log",
    xlabel="training FLOPs",
    ylabel="val accuracy",
    title=f"accuracy against cost, {STEPS} steps",
)
ax = axes[1]
for scheduler, res in search.items():
    pts = [(cum, v) for cum, _, s, v in res.history]
    ax.scatter(*zip(*pts), s=14, label=f"{scheduler}: each evaluation")
    curve, best = [], None
    for cum, _, s, v in res.history:
        if s == MAX and (best is None or v > best):
            best = v
        if best is not None:
            curve.append((cum, best))
    if curve:
        ax.step(*zip(*curve), where="post", label=f"{scheduler}: best at full budget")
ax.set(
    xlabel="steps trained (cumulative)", ylabel="val accuracy", title="random search against ASHA"
)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "cost_automl.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'cost_automl.png'}")

# %% [markdown]
# ## What the numbers say

# %%
claim("the FLOP formula equals PyTorch's count for full fine-tuning", counts["full"][0] == counts["full"][1], f"{counts['full'][0]:.6e} vs {counts['full'][1]:.6e}")  # fmt: skip
claim("for LoRA it over-counts only the first block's skipped input gradient (< 5%)", 0 <= 1 - counts["lora"][1] / counts["lora"][0] < 0.05, f"ratio {counts['lora'][1] / counts['lora'][0]:.4f}")  # fmt: skip
claim("the FLOP budget stopped the run before it overspent", report.stopped_by_budget == "flops" and report.flops <= 2.5 * per_step and budget_run.steps_done == 2, f"{budget_run.steps_done} steps, {report.flops:.3g} of {2.5 * per_step:.3g}")  # fmt: skip
claim("ASHA spent at most half of random search's steps on the same trials", ratio <= 0.5, f"{search['asha'].total_steps} vs {search['random'].total_steps} steps")  # fmt: skip
claim("ASHA reached random search's best validation accuracy", search["asha"].best["metric"] >= search["random"].best["metric"], f"{search['asha'].best['metric']:.3f} vs {search['random'].best['metric']:.3f}", at_scale=True)  # fmt: skip
claim("a parameter-efficient method is on the Pareto front of accuracy against FLOPs", any(m != "full" for m in front), f"front: {front}", at_scale=True)  # fmt: skip
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. `minift tune --methods lora --scheduler halving --trials 27 --min-steps 3 --max-steps 81`:
#    how many trials reach the top rung, and how many steps did it cost?
# 2. Re-run section 3 with a time budget instead of a step count (`Budget(seconds=...)`):
#    does the ranking of the methods change?
# 3. ASHA here retrains a promoted trial from the start. How many steps would it save by
#    resuming from the rung's checkpoint instead? Compute it from `search["asha"].history`.
# 4. MFU on the CPU is far below a GPU's 40-60%: measure the matmul peak with 1 and 2
#    threads, and the step's MFU at batch 8 and 64. Where does the time go?
