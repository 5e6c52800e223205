"""The distillation loop: a frozen, untouched teacher run once per batch; learning over
the undistilled student; on-policy and sequence-level batches; bad input; the CLI."""

import argparse
import copy
import json

import pytest
import torch

from minift.data.tasks import DEFAULT_TASK
from minift.distill.config import train_config
from minift.distill.loop import DistillConfig, distill, forward
from minift.distill.objectives import Objective, lm_objective
from minift.distill.onpolicy import OnPolicyBatches, sequence_batches, teacher_sequences
from minift.distill.shape import make_student, student_shape
from minift.distill.students import narrow_student
from minift.model import GPT, GPTConfig
from minift.model.gpt import IGNORE_INDEX
from minift.model.heads import SequenceClassifier
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task

ALL_LOSSES = dict(alpha=0.5, hidden=1.0, cosine=1.0, attention=1.0, attention_kl=1.0, value_kl=1.0)


def tiny_gpt(seed=0, vocab=61, n_layer=2, n_embd=32, n_head=2):
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(vocab_size=vocab, block_size=24, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    )


def random_lm_objective(vocab=61, B=4, T=12):
    def batch_fn(step, micro=0):
        g = torch.Generator().manual_seed(step * 31 + micro)
        seq = torch.randint(0, vocab, (B, T + 1), generator=g)
        return {"idx": seq[:, :-1], "targets": seq[:, 1:]}

    val = batch_fn(10_000)

    def eval_fn(model):
        return {"val_loss": model(val["idx"], val["targets"]).loss.item()}

    return Objective("random", batch_fn, eval_fn, "val_loss", "min")


def random_classification_objective(vocab=61, B=6, T=10):
    def batch_fn(step, micro=0):
        g = torch.Generator().manual_seed(step * 31 + micro)
        mask = torch.ones(B, T, dtype=torch.long)
        mask[0, 6:] = 0
        return {
            "idx": torch.randint(0, vocab, (B, T), generator=g),
            "attention_mask": mask,
            "labels": torch.randint(0, 3, (B,), generator=g),
        }

    def eval_fn(model):
        b = batch_fn(999)
        out = model(b["idx"], attention_mask=b["attention_mask"], labels=b["labels"])
        return {"val_loss": out.loss.item()}

    return Objective("random-clf", batch_fn, eval_fn, "val_loss", "min")


@pytest.mark.parametrize("kind", ["lm", "classifier"])
def test_teacher_gets_no_gradient_is_run_once_per_batch_and_is_unchanged(kind):
    teacher = tiny_gpt()
    objective = random_lm_objective()
    if kind == "classifier":
        teacher = SequenceClassifier(teacher, 3)
        objective = random_classification_objective()
    calib = [(objective.batch_fn(0)["idx"], None)]
    student, info = narrow_student(teacher, calib, n_embd=16, n_head=1, n_layer=1)
    teacher.train()  # the loop must switch it to eval and back
    before = copy.deepcopy(teacher.state_dict())
    student_before = copy.deepcopy(student.state_dict())
    calls = []
    gpt = teacher.backbone if kind == "classifier" else teacher
    hook = gpt.register_forward_pre_hook(lambda m, a: calls.append(m.training))
    train = train_config(steps=3, eval_every=0, eval_at_start=False, progress=False)
    config = DistillConfig(**ALL_LOSSES, train=train)
    result = distill(teacher, student, objective, config, init=info)
    hook.remove()
    assert calls == [False, False, False]  # once per batch, in eval mode
    assert teacher.training  # mode restored
    assert all(p.requires_grad for p in teacher.parameters())  # flags restored
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), f"distillation changed the teacher's {k}"
    assert any(not torch.equal(v, student_before[k]) for k, v in student.state_dict().items())
    last = result.history[-1]
    for name in ("soft", "hard", "hidden", "cosine", "attention", "attention_kl", "value_kl"):
        assert name in last and last[name] >= 0, name
    assert result.teacher_params > result.student_params


def test_undistilled_baseline_never_runs_the_teacher():
    teacher, student = tiny_gpt(0), tiny_gpt(1, n_layer=1)
    calls = []
    teacher.register_forward_pre_hook(lambda m, a: calls.append(1))
    config = DistillConfig(
        alpha=0.0, train=train_config(steps=2, eval_at_start=False, progress=False)
    )
    distill(teacher, student, random_lm_objective(), config)
    assert calls == []


def test_distilled_student_beats_the_undistilled_one():
    """Learning, on pydocs with the (fast-mode) pretrained base as teacher: the same
    scratch student, the same 30 steps of the same batches; soft targets (alpha = 1)
    reach a lower validation loss than the labels alone, on every seed tried
    (margin ~0.07 nats against a seed-to-seed spread of ~0.01)."""
    base, enc = load_base(progress=False, verbose=False)
    shape = student_shape(base)
    objective = lm_objective(enc, batch_size=8, seq_len=32, seed=0, eval_batches=4)
    student, _ = make_student(base, "scratch", shape, seed=0)
    losses = {}
    for name, alpha in (("labels only", 0.0), ("distilled", 1.0)):
        train = train_config(steps=30, lr=3e-3, eval_every=30, eval_at_start=False, progress=False)
        config = DistillConfig(alpha=alpha, temperature=1.0, train=train)
        losses[name] = distill(base, copy.deepcopy(student), objective, config).val_loss
    assert losses["distilled"] < losses["labels only"] - 0.02, losses


# ------------------------------------------------------------------ on-policy and sequence-level
def test_on_policy_batches_replace_a_fraction_of_rows_with_student_samples():
    student = tiny_gpt(3)
    data = random_lm_objective(B=8).batch_fn
    batches = OnPolicyBatches(student, data, prompt_len=4, fraction=0.5, seed=0)
    b = batches(5, 0)
    again = batches(5, 0)
    assert all(torch.equal(b[k], again[k]) for k in b)  # a function of (seed, step, micro)
    plain = data(5, 0)
    rows = b["unlabeled"]
    assert 0 < rows.sum() < 8
    assert torch.equal(b["idx"][~rows], plain["idx"][~rows])
    assert torch.equal(b["idx"][rows, :4], plain["idx"][rows, :4])  # the prompt is kept
    assert (b["targets"][rows, :3] == IGNORE_INDEX).all()  # only generated tokens count
    assert torch.equal(b["targets"][rows, 3:-1], b["idx"][rows, 4:])  # targets = next tokens
    assert student.training  # sampling switched to eval and back


def test_on_policy_reverse_kl_lowers_the_divergence_on_student_samples():
    teacher, student = tiny_gpt(0), tiny_gpt(1, n_layer=1)
    data = random_lm_objective(B=8, T=12).batch_fn
    probe = OnPolicyBatches(copy.deepcopy(student), data, 3, fraction=1.0, seed=9)

    def reverse_kl_on_own_samples(model):
        probe.student = model
        b = probe(0, 0)
        from minift.distill.losses import reverse_kl

        keep = b["targets"] != IGNORE_INDEX
        with torch.no_grad():
            return reverse_kl(model(b["idx"]).logits, teacher(b["idx"]).logits, keep).item()

    before = reverse_kl_on_own_samples(student)
    batches = OnPolicyBatches(student, data, 3, fraction=1.0, seed=0)
    objective = Objective("on-policy", batches, lambda m: {}, "val_loss", "min")
    train = train_config(steps=25, lr=3e-3, eval_every=0, eval_at_start=False, progress=False)
    config = DistillConfig(alpha=1.0, divergence="reverse", temperature=1.0, train=train)
    distill(teacher, student, objective, config)
    after = reverse_kl_on_own_samples(student)
    assert after < 0.7 * before, (before, after)


def test_sequence_level_kd_data_is_the_teachers_greedy_output():
    teacher = tiny_gpt(0)
    prompts = torch.randint(0, 61, (5, 4))
    seqs = teacher_sequences(teacher, prompts, 6, batch_size=2)
    assert torch.equal(seqs, teacher.generate(prompts, 6, temperature=0))
    b = sequence_batches(seqs, prompt_len=4, batch_size=3)(0)
    assert (b["targets"][:, :3] == IGNORE_INDEX).all()
    assert torch.equal(b["targets"][:, 3:-1], b["idx"][:, 4:])  # targets = next tokens
    row = b["idx"][0]
    match = [torch.equal(row, s[:-1]) for s in seqs]
    assert any(match)
    with pytest.raises(ValueError, match="prompt_len"):
        sequence_batches(seqs, prompt_len=10, batch_size=3)


# ------------------------------------------------------------------ bad input
def test_bad_input_is_refused_before_anything_trains():
    teacher, student = tiny_gpt(0), tiny_gpt(1, n_layer=1)
    before = copy.deepcopy(student.state_dict())
    objective = random_lm_objective()
    with pytest.raises(ValueError, match="layers that do not exist"):
        distill(
            teacher,
            student,
            objective,
            DistillConfig(layer_map=[0, 3], train=train_config(steps=2, progress=False)),
        )
    other = GPT(GPTConfig(vocab_size=60, block_size=24, n_layer=1, n_head=2, n_embd=32))
    with pytest.raises(ValueError, match="different vocabularies"):
        distill(teacher, other, objective, DistillConfig(train=train_config(steps=2)))
    for T in (0.0, -2.0):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            DistillConfig(temperature=T)
    with pytest.raises(ValueError, match="divergence"):
        DistillConfig(divergence="sideways")
    for k, v in student.state_dict().items():
        assert torch.equal(v, before[k])


def test_forward_reads_every_batch_kind():
    model = tiny_gpt()
    x = torch.randint(0, 61, (2, 5))
    a = forward(model, (x, x))
    b = forward(model, {"idx": x, "targets": x}, hidden=True, attentions=True)
    torch.testing.assert_close(a.logits, b.logits)  # fused vs explicit attention
    assert len(b.hidden_states) == 3 and len(b.attentions) == 2
    clf = SequenceClassifier(model, 4)
    out = forward(
        clf, {"idx": x, "attention_mask": torch.ones_like(x), "labels": torch.tensor([1, 2])}
    )
    torch.testing.assert_close(out.logits, clf(x, attention_mask=torch.ones_like(x)).logits)


# ------------------------------------------------------------------ the CLI
def test_cli_distills_the_default_task_in_fast_mode(tmp_path):
    from minift.cli.distill import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["distill", "--teacher-steps", "4", "--steps", "4", "--eval-every", "2", "--baseline",
         "--out", str(tmp_path), "--speed-repeats", "1"]
    )  # fmt: skip
    args.func(args)
    report = json.loads((tmp_path / "report.json").read_text())
    assert {"teacher", "student", "runs"} <= set(report)
    assert report["student"]["params"] <= 0.25 * report["teacher"]["params"]
    assert (tmp_path / "curves.png").stat().st_size > 0
    bad = parser.parse_args(["distill", "--temperature", "0", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="temperature"):
        bad.func(bad)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "steps"),
        (["--batch-size", "0"], "batch_size"),
        (["--lr", "0"], "lr must be a finite number > 0"),
        (["--lr", "inf"], "lr must be a finite number > 0"),
        (["--budget", "0"], "budget"),
        (["--task", "pydocs", "--transfer", "8"], "transfer adds unlabelled texts"),
        (["--on-policy", "0.5"], "on_policy samples text from the student"),
    ],
)
def test_cli_refuses_bad_values_before_anything_trains(argv, message, tmp_path):
    from minift.cli.distill import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["distill", "--out", str(tmp_path / "run"), *argv])
    with pytest.raises(ValueError, match=message):
        args.func(args)
    assert not (tmp_path / "run").exists()


def test_cli_defaults_are_the_jobs_defaults():
    from minift.cli.distill import register
    from minift.recipes.distill import DistillJob

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["distill"])
    job = DistillJob()
    assert (args.steps, args.eval_every, args.lr, args.teacher_steps, args.alpha) == (
        job.distill.train.steps, job.distill.train.eval_every, job.distill.train.lr,
        job.teacher_steps, job.distill.alpha,
    )  # fmt: skip


def test_the_task_objective_is_the_one_fine_tuning_builds():
    """distill.objectives.task_objective wraps the fine-tuning objective of the task's
    kind (a regression guard: it once unpacked that objective's fields by position)."""
    from minift.distill.objectives import task_objective as distill_objective
    from minift.train.objectives import task_objective as finetune_objective

    _, enc = load_base(progress=False, verbose=False)
    task = get_task(DEFAULT_TASK)
    ours, theirs = distill_objective(task, enc, 8, 24, 3), finetune_objective(task, enc, 24, 8, 3)
    assert (ours.monitor, ours.mode) == (theirs.monitor, theirs.mode) == ("val_accuracy", "max")
    a, b = ours.batch_fn(2, 0), theirs.batch_fn(2, 0)
    assert all(torch.equal(a[k], b[k]) for k in b)
