"""Fine-tuning on the default task: every method learns; the base model is never changed."""

import pytest
import torch

from minift.data.tasks import DEFAULT_TASK
from minift.peft.methods import METHODS
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task


@pytest.fixture(scope="module")
def setup():
    base, enc = load_base(progress=False, verbose=False)
    return base, enc, get_task(DEFAULT_TASK)


@pytest.mark.parametrize("method", sorted(m for m in METHODS if m != "scratch"))
def test_every_method_lowers_validation_loss_and_leaves_the_base_untouched(setup, method):
    base, enc, task = setup
    before = {k: v.clone() for k, v in base.state_dict().items()}
    config = FinetuneConfig(
        method=method, train=train_config(steps=12, eval_every=12, progress=False)
    )
    result = finetune(task, base, enc, config)
    start, end = result.history[0]["val_loss"], result.history[-1]["val_loss"]
    assert end < start, f"{method}: val loss {start:.3f} -> {end:.3f}"
    assert 0 < result.trainable <= result.total
    for k, v in base.state_dict().items():
        assert torch.equal(v, before[k]), f"{method} changed the base model's {k}"


def test_unknown_method_lists_the_known_ones(setup):
    base, enc, task = setup
    with pytest.raises(ValueError, match="unknown method 'lorra'.*lora"):
        finetune(task, base, enc, FinetuneConfig(method="lorra"))


def test_every_gradient_run_reports_its_cost_and_a_closed_form_fit_none():
    from minift.train.flops import added_trainable, flops_per_step

    base, enc = load_base(progress=False, verbose=False)
    task = get_task("doc-kind")
    short = train_config(steps=3, progress=False, eval_every=0)
    lora = finetune(task, base, enc, FinetuneConfig(method="lora", batch_size=8, train=short), keep_model=True)  # fmt: skip
    per_step = flops_per_step(base.config, 8, lora.max_len, trainable=added_trainable(lora.model))
    assert lora.cost["steps"] == 3 and lora.cost["tokens"] == 3 * 8 * lora.max_len
    assert lora.cost["flops"] == pytest.approx(3 * per_step)
    assert 0 < lora.cost["seconds"] <= lora.seconds
    full = finetune(task, base, enc, FinetuneConfig(method="full", batch_size=8, train=short))
    assert full.cost["flops"] > lora.cost["flops"]  # 6 W against 4 W + 6 A per token
    probe = finetune(task, base, enc, FinetuneConfig(method="probe", train=short))
    assert probe.cost is None


def test_lp_ft_starts_where_the_converged_probe_ends(setup):
    """head="probe": the head is the probe fitted on the prepared model's features. LoRA
    starts with B = 0 (the base's features), so its step-0 evaluation is the probe
    method's result to the last digit, with the same cross-validated penalty."""
    base, enc, task = setup
    short = train_config(steps=3, eval_every=3, progress=False)
    probe = finetune(task, base, enc, FinetuneConfig(method="probe", train=short))
    lpft = finetune(task, base, enc, FinetuneConfig(method="lora", head="probe", train=short))
    words = finetune(task, base, enc, FinetuneConfig(method="lora", train=short))
    start, fitted = lpft.history[0], probe.history[-1]
    assert start["val_accuracy"] == fitted["val_accuracy"]
    assert start["val_loss"] == pytest.approx(fitted["val_loss"], abs=1e-6)
    assert lpft.head_fit["l2"] == probe.fit["l2"] and words.head_fit is None
    # the label-word head starts elsewhere, with a worse loss than the probe's optimum
    assert words.history[0]["val_loss"] > start["val_loss"] + 0.05
    # the probe method fits its own head: the start changes nothing there
    again = finetune(task, base, enc, FinetuneConfig(method="probe", head="probe", train=short))
    assert again.head_fit is None and again.metric == probe.metric


def test_lp_ft_refuses_what_it_cannot_start(setup):
    from minift.errors import UserError

    base, enc, task = setup
    with pytest.raises(ValueError, match="head must be one of"):
        FinetuneConfig(head="labels")
    lm = get_task("sort-words")
    with pytest.raises(ValueError, match="task has no head"):
        finetune(lm, base, enc, FinetuneConfig(method="lora", head="probe"))
    with pytest.raises(UserError, match="head='probe'.*one process"):
        finetune(task, base, enc, FinetuneConfig(method="lora", head="probe"), fsdp=True)
