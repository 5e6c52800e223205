# %% [markdown]
# # Lesson 15: knowledge distillation
#
# Fine-tuning (lessons 04-10) makes a model good at a task; it does not make it cheaper to
# run. *Distillation* trains a smaller, faster **student** to imitate a trained
# **teacher** (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural
# Network"). The student learns from more than the labels: from the teacher's whole
# output distribution, and optionally from its hidden states and attention maps.
#
# | what the student matches            | loss                               | paper                 |
# |-------------------------------------|------------------------------------|-----------------------|
# | softened output distribution        | T^2 KL(p_t^T \|\| p_s^T) + hard CE   | Hinton et al. 2015    |
# | hidden states (through W_h)         | MSE, or 1 - cosine                 | TinyBERT 2020, DistilBERT 2019 |
# | attention maps / distributions      | MSE / KL                           | TinyBERT 2020, MiniLM 2020 |
# | value relations softmax(V V^T)      | KL                                 | MiniLM 2020           |
# | its own samples, scored by teacher  | reverse KL, generalized JSD        | MiniLLM 2024, GKD 2024 |
# | the teacher's generations           | cross-entropy                      | Kim and Rush 2016     |
#
# The code is `minift/distill/`; this lesson builds a student a quarter of the teacher's
# size, distils it on the default task, and measures what each loss buys, the speed-up,
# and what the student keeps of the teacher's accuracy.

# %%
import copy
import dataclasses
import time

import numpy as np
import torch

from minift.claims import claim
from minift.data.tasks import DEFAULT_TASK
from minift.distill.config import DistillConfig, train_config
from minift.distill.loop import distill, forward
from minift.distill.losses import forward_kl, reverse_kl, soft_target_loss
from minift.distill.objectives import (
    lm_objective,
    pydocs_summaries,
    task_objective,
    transfer_objective,
)
from minift.distill.onpolicy import OnPolicyBatches, sequence_batches, teacher_sequences
from minift.distill.report import format_speed_table, plot_validation_curves, speed_table
from minift.distill.shape import lm_calibration, make_student, student_shape
from minift.distill.slicing import calibrate
from minift.distill.students import every_kth_student, narrow_student
from minift.metrics import accuracy_se, compare
from minift.recipes.distill import finetune_teacher, task_calibration
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task
from minift.train.objectives import task_objective as finetune_objective
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "15")
print(f"fast mode: {FAST}")
base, enc = load_base()
task = get_task(DEFAULT_TASK, seed=0)
TEACHER_STEPS, STEPS, EVAL = (10, 10, 5) if FAST else (60, 60, 15)
print(f"base: {base.num_params():,} parameters; {task.summary()}")

# %% [markdown]
# ## 1. The teacher
# The base, fully fine-tuned on the task (lesson 04). It stays frozen from here on.

# %%
teacher, teacher_run = finetune_teacher(task, base, enc, TEACHER_STEPS)
objective = task_objective(task, enc, seed=0)
# The same validation rows, scored one by one (1.0 right, 0.0 wrong), for paired comparisons.
scores_of = finetune_objective(task, enc, seed=0).scores_fn
teacher_acc = objective.eval_fn(teacher)["val_accuracy"]
N_VAL, CHANCE = len(task.val), 1 / len(task.labels)
print(
    f"teacher: {teacher_run.total:,} parameters, {TEACHER_STEPS} steps, val accuracy {teacher_acc:.3f}"
)

# %% [markdown]
# ## 2. Soft targets and the temperature
# The teacher's probabilities for the wrong packages are its "dark knowledge": a
# docstring about sockets is *more* asyncio than tkinter. At T = 1 they are tiny; dividing
# the logits by T > 1 lifts them. The gradient of KL(p_t^T || p_s^T) with respect to
# the student's logits is (p_s^T - p_t^T) / T, which shrinks as T grows: multiplying the
# loss by T^2 keeps its gradient on the scale of the hard loss whatever T is.

# %%
batch = objective.batch_fn(0, 0)
with torch.no_grad():
    z_t = forward(teacher, batch).logits[:1]
print(f"text: {enc.decode(batch['idx'][0][batch['attention_mask'][0].bool()].tolist())!r}")
print(f"label: {task.labels[batch['labels'][0]]}")
for T in (1.0, 2.0, 4.0):
    p = (z_t / T).softmax(-1)[0]
    entropy = -(p * p.log()).sum().item()
    print(f"T={T:3.0f}: " + " ".join(f"{n}={v:.3f}" for n, v in zip(task.labels, p.tolist())) + f"  entropy {entropy:.2f}")  # fmt: skip
z_s = torch.zeros_like(z_t, requires_grad=True)  # a student that knows nothing yet
grads = {}
for T in (1.0, 2.0, 4.0, 8.0):
    z_s.grad = None
    soft_target_loss(z_s, z_t, T).backward()
    with_t2 = z_s.grad.norm().item()
    grads[T] = (with_t2, with_t2 / T**2)
    print(f"T={T:3.0f}: |grad| with T^2 {with_t2:.3f}, without {with_t2 / T**2:.4f}")

# %% [markdown]
# ## 3. Students
# The teacher's token embedding (vocab x width) is a large share of its parameters, so
# dropping blocks alone (DistilBERT keeps one block in two) cannot reach a quarter of the
# size: the student must also be *narrower*. `student_shape` halves the blocks and heads
# (a kept head keeps its size) and gives the MLP the most neurons the budget allows.
#
# Three ways to initialise it: every k-th block of the teacher at full width (DistilBERT;
# with k = 1 it *is* the teacher); *sliced* from the teacher (`narrow_student`: rotate the
# residual stream onto its principal directions and keep the first d, keep the heads and
# neurons that write the most, SliceGPT-style, exact at full width); or from scratch.

# %%
tg = teacher.backbone
emb = tg.transformer.wte.weight.numel()
print(f"teacher embedding: {emb:,} of {teacher_run.total:,} parameters ({100 * emb / teacher_run.total:.0f}%)")  # fmt: skip
idx = batch["idx"][:4]
same = every_kth_student(teacher, 1)
same_diff = (same(idx).logits - teacher(idx).logits).abs().max().item()
print(f"every-k-th block student, k=1: max |logit diff| vs teacher = {same_diff:.1e}")
if tg.config.n_layer % 2 == 0:
    half = every_kth_student(teacher, 2)
    n_half = sum(p.numel() for p in half.parameters())
    print(f"every-2nd-block student: {n_half:,} parameters = {n_half / teacher_run.total:.2f} x teacher (not a quarter)")  # fmt: skip
calibration = task_calibration(task, enc)
full, info = narrow_student(teacher, calibration, tg.config.n_embd, n_layer=tg.config.n_layer)
full_diff = (full(idx).logits - teacher(idx).logits).abs().max().item()
print(f"sliced at full width: max |logit diff| = {full_diff:.1e} (LayerNorm -> RMSNorm, rotated)")

shape = student_shape(teacher, budget=0.25)
print(f"\nstudent shape: {shape}")
inits, init_scores = {}, {}
for name, init, layer_map in [
    ("sliced, first blocks", "slice", shape.layer_map),
    ("sliced, uniform map", "slice", list(range(0, tg.config.n_layer + 1, tg.config.n_layer // shape.n_layer))),
    ("scratch", "scratch", shape.layer_map),
]:  # fmt: skip
    student, sinfo = make_student(
        teacher, init, dataclasses.replace(shape, layer_map=layer_map), calibration
    )
    inits[name] = (student, sinfo)
    n = sum(p.numel() for p in student.parameters())
    init_scores[name] = np.array(scores_of(student.eval()))
    acc = init_scores[name].mean()
    print(f"  {name:22s} layer map {layer_map}: {n:,} parameters ({n / teacher_run.total:.3f} x), val accuracy before training {acc:.3f}")  # fmt: skip
variance = torch.linalg.eigvalsh(calibrate(tg, calibration).second_moment).flip(0)
kept = (variance[: shape.n_embd].sum() / variance.sum()).item()
print(f"the first {shape.n_embd} of {tg.config.n_embd} directions hold {100 * kept:.1f}% of the residual stream's energy")  # fmt: skip

first_vs_uniform = compare("first blocks", init_scores["sliced, first blocks"], "uniform map", init_scores["sliced, uniform map"])  # fmt: skip
print(f"before training: {first_vs_uniform}")

# %% [markdown]
# Two questions for the numbers above, answered at the end: does the sliced student,
# a quarter of the weights all taken from the teacher, start above chance before any
# training? And does starting from the teacher's *first* blocks beat the uniform map?
# (One argument for it: dropping a block that the next block was trained to read breaks
# more than dropping the last ones.)
#
# ## 4. Distil, and what each loss buys
# Every run trains the same student for the same steps on the same batches. The
# baselines use the labels alone (no teacher in the loss). The distilled runs add the
# soft targets (alpha = 0.5, T = 2), then one feature loss each, then a *transfer set*:
# docstring summaries with no label (never a validation text), which only a teacher can
# label. Hidden states are matched through W_h, started at the slicing's basis.
# Every run uses distillation's default learning rate, not tuned per variant, and one
# seed: scripts/bench_distill.py repeats the runs over seeds and trains longer.

# %%
sliced, sinfo = inits["sliced, first blocks"]
scratch, _ = inits["scratch"]
texts = pydocs_summaries({r["text"] for r in task.train + task.val})
transfer = transfer_objective(task, enc, texts, unlabeled_per_batch=32, seed=0)
base_cfg = DistillConfig(alpha=0.5, temperature=2.0, train=train_config(steps=STEPS, eval_every=EVAL, progress=False))  # fmt: skip
plain = dataclasses.replace(base_cfg, alpha=0.0)
RUNS = {
    "scratch, labels only (baseline)": (scratch, plain, objective),
    "sliced, labels only (baseline)": (sliced, plain, objective),
    "sliced + KD": (sliced, base_cfg, objective),
    "sliced + KD + hidden (TinyBERT)": (
        sliced,
        dataclasses.replace(base_cfg, hidden=0.1),
        objective,
    ),
    "sliced + KD + attention KL (MiniLM)": (
        sliced,
        dataclasses.replace(base_cfg, attention_kl=1.0, value_kl=1.0),
        objective,
    ),  # fmt: skip
    "sliced + KD + transfer set": (sliced, base_cfg, transfer),
}
results = {}
for name, (init, config, obj) in RUNS.items():
    results[name] = distill(
        teacher, copy.deepcopy(init), obj, config, sinfo if init is sliced else None
    )
    r = results[name]
    r.scores = np.array(scores_of(r.student))
    print(f"{name:38s} val accuracy {r.metric:.3f} ({100 * r.metric / teacher_acc:5.1f}% of the teacher), val loss {r.val_loss:.3f}, {r.seconds:.1f}s")  # fmt: skip
labels_only = results["sliced, labels only (baseline)"]
vs_labels = {name: compare(name, r.scores, "sliced, labels only", labels_only.scores) for name, r in results.items() if name.startswith("sliced +")}  # fmt: skip
sliced_vs_scratch = compare("sliced, labels only", labels_only.scores, "scratch, labels only", results["scratch, labels only (baseline)"].scores)  # fmt: skip
for c in [sliced_vs_scratch, *vs_labels.values()]:
    print(c)
curve = [h["val_accuracy"] for h in labels_only.history if "val_accuracy" in h]
print(f"labels-only val accuracy at each evaluation: {' '.join(f'{a:.3f}' for a in curve)}")
plot_validation_curves(
    {k: r.history for k, r in results.items()}, "val_accuracy", OUT / "curves.png",
    title=f"a {shape.n_layer}x{shape.n_embd} student on {task.name}", reference=teacher_acc,
)  # fmt: skip
print(f"plot: {OUT / 'curves.png'}")

# %% [markdown]
# Each line above pairs two runs on the same validation rows (a paired bootstrap and a
# permutation test): "within noise" means this run cannot tell them apart. Hinton et al.
# also report that soft targets give the student the teacher's calibrated probabilities,
# which would show as a lower validation *loss*; the closing section checks it.
#
# ## 5. Size and speed
# Tokens per second for inference (no grad) and for a training step, on the task's batch,
# one thread when the lesson runs under the test suite.

# %%
best = results["sliced + KD"].student
rows = speed_table(
    {"teacher": teacher, "student (sliced + KD)": best}, batch, repeats=3 if FAST else 10
)
print(format_speed_table(rows))
kd = results["sliced + KD"]
print(f"teacher val accuracy {teacher_acc:.3f}; student {kd.metric:.3f}")
student_vs_teacher = compare("student (sliced + KD)", kd.scores, "teacher", np.array(scores_of(teacher)))  # fmt: skip
print(student_vs_teacher)

# %% [markdown]
# ## 6. Generative students: forward or reverse KL, and on-policy data
# For a language model the student matches a distribution over the vocabulary at every
# position. Forward KL(p_t || q_s) punishes the student for missing any of the teacher's
# modes (it spreads out to cover them all); reverse KL(q_s || p_t) punishes it for putting
# mass where the teacher has none (it picks a mode). A one-parameter-family toy shows it:
# a unimodal student q(i) ~ exp(-(i - mu)^2 / 2) fitted to a two-peaked teacher.

# %%
V = torch.arange(12, dtype=torch.float64)
centres = {}
teacher_p = torch.exp(-((V - 2.5) ** 2)) + torch.exp(-((V - 8.5) ** 2))
teacher_logits = (teacher_p / teacher_p.sum()).log()
for name, fn in (("forward KL", forward_kl), ("reverse KL", reverse_kl)):
    mu = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)  # starts nearer the left peak
    opt = torch.optim.Adam([mu], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        fn((-((V - mu) ** 2) / 2)[None], teacher_logits[None]).backward()
        opt.step()
    centres[name] = mu.item()
    print(f"{name}: the student centres at mu = {mu.item():.2f} (teacher peaks at 2.5 and 8.5)")

# %% [markdown]
# On real text the student also generates: trained only on the data's prefixes, it later
# conditions on its own. GKD (Agarwal et al. 2024) trains on continuations the student
# samples itself, scored token by token by the teacher; MiniLLM (Gu et al. 2024) uses the
# reverse KL there. Sequence-level KD (Kim and Rush 2016) instead trains on the teacher's
# own (greedy) continuations. Here the teacher is the base language model and the student
# is sliced from it; each run is short, so compare the columns, not the absolute values.

# %%
lm = lm_objective(enc, batch_size=8, seq_len=32, seed=0, eval_batches=4)
lm_student, lm_info = make_student(
    base, "slice", student_shape(base), lm_calibration(lm.batch_fn, 2)
)
LM_STEPS = 6 if FAST else 40
probe = OnPolicyBatches(copy.deepcopy(lm_student), lm.batch_fn, 8, fraction=1.0, seed=123)


def own_sample_reverse_kl(model) -> float:
    """Reverse KL to the teacher on text the model itself samples after 8-token prompts."""
    probe.student = model
    b = probe(0, 0)
    keep = b["targets"] != -100
    with torch.no_grad():
        return reverse_kl(model(b["idx"]).logits, base(b["idx"]).logits, keep).item()


print(f"teacher val loss {lm.eval_fn(base)['val_loss']:.3f}; sliced student before training {lm.eval_fn(lm_student)['val_loss']:.3f}")  # fmt: skip
LM_TRAIN = train_config(steps=LM_STEPS, eval_every=0, progress=False)
lm_runs = {
    "labels only": (
        DistillConfig(alpha=0.0, train=LM_TRAIN),
        lm.batch_fn,
    ),
    "forward KD (T=1)": (
        DistillConfig(alpha=1.0, temperature=1.0, train=LM_TRAIN),
        lm.batch_fn,
    ),  # fmt: skip
    "on-policy reverse KL": (
        DistillConfig(alpha=1.0, temperature=1.0, divergence="reverse", train=LM_TRAIN),
        "on-policy",
    ),  # fmt: skip
    "on-policy JSD(0.5)": (
        DistillConfig(alpha=1.0, temperature=1.0, divergence="jsd", train=LM_TRAIN),
        "on-policy",
    ),  # fmt: skip
}
for name, (config, batches) in lm_runs.items():
    s = copy.deepcopy(lm_student)
    if batches == "on-policy":
        batches = OnPolicyBatches(s, lm.batch_fn, prompt_len=8, fraction=0.5, seed=0)
    r = distill(base, s, dataclasses.replace(lm, batch_fn=batches), config, lm_info)
    print(f"{name:22s} val loss {r.val_loss:.3f}, reverse KL on its own samples {own_sample_reverse_kl(s):.3f}")  # fmt: skip

prompts = torch.stack([lm.batch_fn(500 + i, 0)["idx"][0, :8] for i in range(16 if FAST else 64)])
seqs = teacher_sequences(base, prompts, 16)
seq_obj = dataclasses.replace(lm, batch_fn=sequence_batches(seqs, prompt_len=8, batch_size=8))
s = copy.deepcopy(lm_student)


def greedy_agreement(model) -> float:
    out = model.generate(prompts[:16], 16, temperature=0)
    return (out[:, 8:] == seqs[:16, 8:]).float().mean().item()


before = greedy_agreement(s)
distill(base, s, seq_obj, DistillConfig(alpha=0.0, train=LM_TRAIN))
after = greedy_agreement(s)
print(f"sequence-level KD: the student's greedy tokens match the teacher's {before:.2f} -> {after:.2f}")  # fmt: skip

# %% [markdown]
# ## What the numbers say
# The first claims are exact properties of the code and hold on any base. The others
# compare trained models, one seed each: at scale, distillation lets a student keep most
# of a teacher's accuracy (DistilBERT keeps 97% of BERT's GLUE score at 60% of its size;
# Sanh et al. 2019) and beats the same student trained on labels alone (Hinton et al.
# 2015); on a 1.3M-parameter base, a six-way task and a few dozen steps, that may or may
# not show, so those are scale claims.

# %%
claim("the every-k-th-block student with k = 1 and the student sliced at full width both compute the teacher's logits",
      same_diff < 1e-5 and full_diff < 1e-3, f"max |diff| {same_diff:.1e} and {full_diff:.1e}")  # fmt: skip
claim("the forward KL puts the unimodal student between the teacher's two peaks, the reverse KL on one of them",
      abs(centres["forward KL"] - 5.5) < 0.5 and abs(centres["reverse KL"] - 2.5) < 0.5,
      f"mu = {centres['forward KL']:.2f} and {centres['reverse KL']:.2f}")  # fmt: skip
spread_with = max(g[0] for g in grads.values()) / min(g[0] for g in grads.values())
spread_without = grads[1.0][1] / grads[8.0][1]
claim("multiplying the soft loss by T^2 keeps its gradient within a factor 3 from T = 1 to 8; without it the gradient falls more than 10-fold",
      spread_with < 3 and spread_without > 10, f"factor {spread_with:.2f} with T^2, {spread_without:.0f} without")  # fmt: skip
speedup = rows[1]["infer_speedup"]
# A timing: on the fast base a forward pass is mostly per-call overhead, and the test
# suite runs lessons beside other work, so it is a claim about the normal-size models.
claim(f"the student ({kd.student_params / kd.teacher_params:.2f} x the teacher's parameters) runs inference faster than the teacher",
      speedup > 1.2, f"{speedup:.1f}x the teacher's tokens per second", at_scale=True)  # fmt: skip
sliced_init = init_scores["sliced, first blocks"].mean()
claim("the sliced student starts above chance before any training", sliced_init - 2 * accuracy_se(sliced_init, N_VAL) > CHANCE,
      f"{sliced_init:.3f} vs chance {CHANCE:.3f}", at_scale=True)  # fmt: skip
c = first_vs_uniform
claim("before training, slicing from the teacher's first blocks beats the uniform layer map", c.difference > 0 and not c.within_noise,
      f"{c.mean_a:.3f} vs {c.mean_b:.3f}, 95% CI of the difference {c.low:+.3f} to {c.high:+.3f}", at_scale=True)  # fmt: skip
c = vs_labels["sliced + KD"]
claim("the distilled student (sliced + KD) beats the same student trained on labels alone", c.difference > 0 and not c.within_noise,
      f"{c.mean_a:.3f} vs {c.mean_b:.3f}, 95% CI {c.low:+.3f} to {c.high:+.3f}", at_scale=True)  # fmt: skip
best_extra = max(
    (n for n in vs_labels if n != "sliced + KD"), key=lambda n: vs_labels[n].difference
)
c = compare(best_extra, results[best_extra].scores, "sliced + KD", kd.scores)
claim(f"a feature loss or the transfer set adds to plain KD (best of them here: {best_extra})", c.difference > 0 and not c.within_noise,
      f"{c.mean_a:.3f} vs {c.mean_b:.3f}, 95% CI {c.low:+.3f} to {c.high:+.3f}", at_scale=True)  # fmt: skip
claim("soft targets give a lower validation loss than labels alone (a better-calibrated student)",
      kd.val_loss < labels_only.val_loss, f"{kd.val_loss:.3f} vs {labels_only.val_loss:.3f}", at_scale=True)  # fmt: skip
c = student_vs_teacher
claim("the distilled student is within noise of the teacher's accuracy", c.within_noise or c.difference > 0,
      f"{c.mean_a:.3f} vs {c.mean_b:.3f}, 95% CI {c.low:+.3f} to {c.high:+.3f}", at_scale=True)  # fmt: skip
claim("sequence-level KD makes the student's greedy continuations agree more with the teacher's", after > before,
      f"{before:.2f} -> {after:.2f} of the tokens", at_scale=True)  # fmt: skip
if FAST:
    print("(fast mode: a tiny base and few steps exercise the code; the numbers need normal mode)")
print(f"\nlesson 15 done in {time.perf_counter() - t_start:.0f}s")
