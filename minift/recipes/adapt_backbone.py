"""`minift adapt --backbone lora|full`: domain adaptation with a trained backbone.

The methods as their papers run them, each ending in a classifier fine-tuned end to end
(LoRA or full fine-tuning through minift.recipes.finetune and the one Trainer), all with
the same fine-tuning (steps, learning rate, batch, tokens a text):

    source-only  fine-tune on the labelled source rows (the floor)
    dapt         continue pretraining the base on target-domain text, then fine-tune on
                 the source (Gururangan et al. 2020; minift.adapt.dapt)
    dann         fine-tune with a domain head behind gradient reversal on the pooled
                 features of source and target batches (Ganin et al. 2016;
                 minift.adapt.dann_finetune)
    self-train   fine-tune on the source, pseudo-label the confident target rows (class-
                 capped), fine-tune again from the base on source + pseudo-labelled rows,
                 for ``rounds`` rounds (Lee 2013; Zou et al. 2018); from the DAPT base
                 when ``self_train_from_dapt`` (the two combine)
    tapt-dann    DANN from the base after task-adaptive pretraining (TAPT)
    tapt-dann-self-train
                 the chain: TAPT -> DANN -> self-training, the first pseudo-labels from
                 the TAPT+DANN classifier, each round DANN again from the TAPT base
    oracle       fine-tune on the labelled target rows (the ceiling; labels exist only for
                 the embedded target)
"""

from __future__ import annotations

from dataclasses import replace

import torch

from minift.adapt.dann_finetune import DomainHead, dann_objective
from minift.adapt.dapt import continue_pretraining
from minift.adapt.self_training import confident_rows
from minift.data.batching import classification_batch
from minift.data.tasks import Task
from minift.peft.methods import Preparation, RunContext, get_method
from minift.recipes.finetune import FinetuneConfig, build_model, finetune, train_config
from minift.tokenizer import pad_id
from minift.train import Trainer
from minift.train.objectives import classification_inputs, task_objective


def finetune_config(backbone: str, steps: int, lr: float | None, max_len: int, seed: int) -> FinetuneConfig:  # fmt: skip
    """The one fine-tuning every method ends with (evaluated once, at the end)."""
    train = train_config(steps=steps, lr=lr, seed=seed, eval_every=0, eval_at_start=False, progress=False)  # fmt: skip
    return FinetuneConfig(method=backbone, max_len=max_len, batch_size=32, train=train)


def fit_classifier(task: Task, base, enc, config: FinetuneConfig):
    """(the fine-tuned classifier, its source validation accuracy)."""
    r = finetune(task, base, enc, config, keep_model=True)
    return r.model, r.metric


@torch.no_grad()
def predict_proba(model, task: Task, enc, rows: list[dict], max_len: int) -> torch.Tensor:
    """The classifier's class probabilities (n, K) of ``rows`` read with ``task``'s template."""
    ids, pad, out = classification_inputs(task, enc, rows, max_len), pad_id(enc), []
    model.eval()
    for i in range(0, len(ids), 128):
        b = classification_batch(ids[i : i + 128], None, pad, max_len)
        out.append(torch.softmax(model(b["idx"], attention_mask=b["attention_mask"]).logits.double(), -1))  # fmt: skip
    return torch.cat(out)


def dann_finetune(
    task: Task,
    base,
    enc,
    config: FinetuneConfig,
    target: list[dict],
    lambd: float,
    hidden: int = 64,
):
    """(classifier, source val accuracy, training history): fine-tuning as
    minift.recipes.finetune does it, with the DANN objective and a domain head that is
    dropped at the end. lambd = 0 gives plain fine-tuning's weights (without clipping)."""
    method = get_method(config.method)
    options = method.make_config(config.options)
    lr = method.lr if config.train.lr is None else config.train.lr
    run = RunContext(lr, config.train.steps, config.train.weight_decay, config.train.seed)
    model = build_model(base, task, enc, config)
    prepared = method.prepare(model, options, run)
    if not isinstance(prepared, Preparation):
        prepared = Preparation()
    if prepared.fit is not None:
        raise ValueError(f"DANN trains the backbone by gradient steps; method {config.method!r} is fitted in closed form")  # fmt: skip
    # Made after prepare(): the base, the task head and the LoRA factors start as in finetune.
    model.add_module("domain_head", DomainHead(model.config.n_embd, hidden))
    L, seed, steps = config.max_len, config.train.seed, config.train.steps
    plain = task_objective(task, enc, L, config.batch_size, seed)
    target_ids = classification_inputs(task, enc, target, L)
    objective = dann_objective(plain, target_ids, pad_id(enc), L, config.batch_size, seed, steps, lambd)  # fmt: skip
    train = replace(config.train, lr=lr, monitor=objective.monitor, mode=objective.mode)
    trainer = Trainer(
        model, train, objective.batch_fn, objective.loss_fn, objective.eval_fn,
        param_groups=prepared.param_groups, on_step=prepared.on_step,
    )  # fmt: skip
    result = trainer.fit()
    del model.domain_head
    return model.eval(), result.history[-1]["val_accuracy"], result.history


def self_train_backbone(
    task: Task, base, enc, config: FinetuneConfig, target: list[dict],
    threshold: float, rounds: int, balance_ratio: float | None = 2.0, first=None, fit=None,
):  # fmt: skip
    """(classifier, source val accuracy, per round: the rows and pseudo-labels taken).
    Each round fine-tunes a fresh copy of ``base`` on source + pseudo-labelled target rows,
    the pseudo-labels coming from the previous round's classifier; the first round's from
    ``first`` when given (e.g. a DANN classifier: the chain TAPT -> DANN -> self-training),
    else from ``base`` fine-tuned on the source. ``fit(task) -> (classifier, accuracy)``
    trains each round (default: fit_classifier from ``base``; e.g. DANN from ``base``)."""
    fit = fit or (lambda t: fit_classifier(t, base, enc, config))
    model, acc = (first, None) if first is not None else fit(task)
    history = []
    for _ in range(rounds):
        probs = predict_proba(model, task, enc, target, config.max_len)
        keep, labels = confident_rows(probs, threshold, balance_ratio)
        pseudo = [{"text": target[i]["text"], "label": int(c)} for i, c in zip(keep.tolist(), labels.tolist())]  # fmt: skip
        history.append({"keep": keep, "labels": labels})
        model, acc = fit(replace(task, train=task.train + pseudo))
    return model, acc, history


def tapt_dann_self_train(
    task: Task, tapt_base, enc, config: FinetuneConfig, target: list[dict], adapt, first=None
):  # fmt: skip
    """The chain TAPT -> DANN -> self-training: DANN from the TAPT base gives the first
    pseudo-labels (``first`` if already trained), then ``adapt.rounds`` rounds of self-
    training, each a DANN run from the TAPT base on source + pseudo-labelled rows (the
    target rows still read, unlabelled, by the domain head). ``adapt``: an AdaptConfig
    (threshold, rounds, dann.lambd, dann.hidden). (classifier, source val acc, history)"""
    lambd, hidden = adapt.dann.lambd, adapt.dann.hidden

    def dann(t: Task):
        return dann_finetune(t, tapt_base, enc, config, target, lambd, hidden)[:2]

    first = first if first is not None else dann(task)[0]
    return self_train_backbone(task, tapt_base, enc, config, target, adapt.threshold, adapt.rounds, first=first, fit=dann)  # fmt: skip


def target_accuracy(model, task: Task, enc, test: list[dict], max_len: int) -> float:
    probs = predict_proba(model, task, enc, test, max_len)
    y = torch.tensor([r["label"] for r in test])
    return float((probs.argmax(-1) == y).double().mean())


def compare_methods(
    task: Task, base, enc, config, methods: tuple[str, ...], unlabelled: list[dict],
    hidden: list[int], test: list[dict], texts: dict[str, list[str]],
) -> dict[str, dict]:  # fmt: skip
    """The embedded shift (``task`` stdlib-package -> pycode comments), every method in
    ``methods`` (METHODS, or tapt-self-train / tapt-dann / tapt-dann-self-train: from the
    TAPT base) plus the
    oracle, floor and oracle trained once: per method the target test
    accuracy, the accuracy on the unlabelled target rows' hidden labels (for choosing
    settings, never the test rows) and the source validation accuracy. ``texts``: what
    continued pretraining reads for dapt and tapt (minift.recipes.adapt.compare_backbones
    fills in the rows and texts)."""
    L = config.max_len
    ft = finetune_config(config.backbone, config.steps, config.lr, L, config.seed)
    labelled = [{"text": r["text"], "label": c} for r, c in zip(unlabelled, hidden)]
    out, pretrained, dann_models = {}, {}, {}

    def adapted(kind: str):  # the base after continued pretraining, once per kind of text
        if kind not in pretrained:
            pretrained[kind] = continue_pretraining(base, texts[kind], enc, config.dapt_steps, config.dapt_lr, seed=config.seed)[0]  # fmt: skip
        return pretrained[kind]

    for method in ("source-only", *[m for m in methods if m != "source-only"], "oracle"):
        if method == "source-only":
            model, acc = fit_classifier(task, base, enc, ft)
        elif method in ("tapt", "dapt"):
            model, acc = fit_classifier(task, adapted(method), enc, ft)
        elif method in ("dann", "tapt-dann"):
            start = adapted("tapt") if method == "tapt-dann" else base
            model, acc, _ = dann_finetune(task, start, enc, ft, unlabelled, config.dann.lambd, config.dann.hidden)  # fmt: skip
            dann_models[method] = model
        elif method == "tapt-dann-self-train":
            model, acc, _ = tapt_dann_self_train(task, adapted("tapt"), enc, ft, unlabelled, config, dann_models.get("tapt-dann"))  # fmt: skip
        elif method in ("self-train", "tapt-self-train"):
            start = (
                adapted("tapt")
                if method == "tapt-self-train" or config.self_train_from_dapt
                else base
            )
            model, acc, _ = self_train_backbone(task, start, enc, ft, unlabelled, config.threshold, config.rounds)  # fmt: skip
        else:  # the oracle, trained on the target rows' labels: its "selection" score is on its own training rows
            model, acc = fit_classifier(replace(task, train=labelled), base, enc, ft)
        right = predict_proba(model, task, enc, test, L).argmax(-1) == torch.tensor([r["label"] for r in test])  # fmt: skip
        out[method] = {
            "target_accuracy": float(right.double().mean()),
            "test_correct": right.int().tolist(),  # per test row, for paired comparisons
            "selection_accuracy": target_accuracy(model, task, enc, labelled, L),
            "source_accuracy": acc,
        }
    return out
