"""The multitask and continual recipes end to end in fast mode, and their bad input.

Short runs on the tiny fast base: what is checked is that every method runs and returns
a consistent report (rates that sum to 1, per-example scores that average to the metric,
a square accuracy matrix whose summaries match it), that lora-per-task forgets nothing by
construction, and that bad input is one clear error before any training.
"""

import pytest
import torch

from minift.cli import main
from minift.data.tasks import Task
from minift.multitask import stream_summary
from minift.multitask.instruction import verbalized_objective
from minift.recipes.continual import CONTINUAL_METHODS, ContinualConfig, run_continual
from minift.recipes.multitask import (
    MultitaskConfig,
    load_tasks,
    run_adapter_fusion,
    run_multitask,
    train_config,
)
from minift.recipes.pretrain import load_base


@pytest.fixture(scope="module")
def base():
    return load_base(progress=False, verbose=False)


@pytest.mark.parametrize("style, weighting", [("heads", "uncertainty"), ("instruction", "fixed")])
def test_multitask_runs_end_to_end(base, style, weighting):
    model, enc = base
    # the generation task (greedy decoding of 64 prompts to score) in one variant only
    tasks = load_tasks("doc-kind,doc-argcount" + (",doc-name" if style == "heads" else ""))
    config = MultitaskConfig(
        style=style, weighting=weighting, train=train_config(steps=6, progress=False)
    )
    r = run_multitask(tasks, model, enc, config)
    assert sum(r.rates) == pytest.approx(1.0) and sum(r.steps_per_task) == 6
    for name in r.tasks:
        assert sum(r.val_scores[name]) / len(r.val_scores[name]) == pytest.approx(r.metrics[name])
    assert set(r.loss_weights) == set(r.tasks)


def test_adapter_fusion_runs_end_to_end(base):
    model, enc = base
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sources, (target,) = load_tasks("doc-kind,doc-returns"), load_tasks("doc-argcount")
    short = train_config(steps=3, progress=False)
    r = run_adapter_fusion(sources, target, model, enc, train=short, source_train=short)
    assert r.sources == ["doc-kind", "doc-returns"] and 0.0 <= r.metric <= 1.0
    assert set(r.source_metrics) == set(r.sources)
    n_layer, c = model.config.n_layer, model.config.n_embd
    assert r.trainable == n_layer * (3 * c * c + c) + (c + 1) * target.num_labels
    assert len(r.weights) == n_layer  # one fusion site per block (the pfeiffer layout)
    assert all(len(p) == 2 and sum(p) == pytest.approx(1.0) for p in r.weights.values())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # base kept
    with pytest.raises(ValueError, match="task listed twice: doc-kind"):
        run_adapter_fusion(sources + sources[:1], target, model, enc)
    with pytest.raises(ValueError, match="fusion_reg must be >= 0"):
        run_adapter_fusion(sources, target, model, enc, fusion_reg=-1.0)


def test_the_fusion_regulariser_keeps_the_values_near_the_identity(base):
    model, enc = base
    sources, (target,) = load_tasks("doc-kind"), load_tasks("doc-argcount")
    # a rate large enough that W_V moves visibly in 4 steps
    short = train_config(steps=4, progress=False, lr=0.05)
    free = run_adapter_fusion(sources, target, model, enc, train=short, source_train=short)
    held = run_adapter_fusion(sources, target, model, enc, train=short, source_train=short, fusion_reg=10.0)  # fmt: skip
    assert free.source_metrics == held.source_metrics  # same adapters: only the fusion differs
    assert 0.0 < held.value_distance < free.value_distance
    steps = [row for row in held.history if "loss" in row]
    assert steps and all("fusion_reg" in row for row in steps)


def test_fusion_command_prints_the_adapters_weights(capsys):
    argv = ["fusion", "--sources", "doc-kind", "--target", "doc-argcount", "--steps", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "adapter doc-kind" in out and "fusion for doc-argcount" in out and "doc-kind 1.00" in out


@pytest.mark.parametrize("method", CONTINUAL_METHODS)
def test_continual_methods_run_end_to_end(base, method):
    model, enc = base
    tasks = load_tasks("doc-argcount,doc-returns")
    config = ContinualConfig(
        method=method,
        fisher_examples=4,
        replay_batch=4,
        train=train_config(steps=3, progress=False),
    )
    r = run_continual(tasks, model, enc, config)
    assert len(r.R) == 2 and all(len(row) == 2 for row in r.R)
    assert r.summary == stream_summary(r.R)
    if method == "lora-per-task":
        assert r.R[1][0] == r.R[0][0]  # its adapter never changes again: no forgetting
    for j, name in enumerate(r.tasks):
        assert sum(r.final_scores[name]) / len(r.final_scores[name]) == pytest.approx(r.R[-1][j])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["multitask", "--tasks", "doc-kind,nope"], "unknown task 'nope'"),
        (["multitask", "--tasks", "doc-kind,doc-kind"], "task listed twice: doc-kind"),
        (["multitask", "--tasks", "doc-kind,file-words"], "kinds with no head here"),
        (["continual", "--tasks", "doc-kind,doc-name"], "a continual stream takes classification"),
        (
            ["fusion", "--sources", "doc-kind", "--target", "doc-kind"],
            "the target doc-kind is also a source",
        ),
        (["fusion", "--sources", "doc-kind,nope"], "unknown task 'nope'"),
        (
            ["multitask", "--sampling", "temperature", "--temperature", "0"],
            "temperature and cap must be > 0",
        ),  # fmt: skip
    ],
)
def test_bad_input_is_one_clear_error(argv, message, capsys):
    assert main(argv + ["--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_instruction_style_needs_label_words(base):
    _, enc = base
    task = Task("plain", "classification", [{"text": "a", "label": 0}], [{"text": "b", "label": 1}], ["x", "y"])  # fmt: skip
    with pytest.raises(ValueError, match="needs one distinct label word per class"):
        verbalized_objective(task, enc, 16, 4, 0)
    with pytest.raises(ValueError, match="unknown continual method 'magic'"):
        ContinualConfig(method="magic")
    with pytest.raises(ValueError, match="unknown style"):
        MultitaskConfig(style="both")
