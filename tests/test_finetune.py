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
