"""Adversarial removal of a protected attribute (Ganin et al. 2016 as applied to fairness
by Edwards and Storkey 2016, Elazar and Goldberg 2018): fine-tune the task while an
adversary tries to read the attribute from the pooled features through a
gradient-reversal layer,

    loss = CE(head(h), y) + CE(adversary(GRL_lambda(h)), a),     h = pool(backbone(x)),

so the adversary learns to predict the attribute a and the backbone learns to make that
impossible (the reversed gradient). The model is minift.recipes.finetune.build_model's
with one more linear layer; the loop is the one Trainer.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from minift.data.batching import classification_batch
from minift.data.tasks import Task
from minift.model.grad_reverse import grad_reverse
from minift.peft.methods import get_method
from minift.recipes.finetune import FinetuneConfig, build_model
from minift.seeding import sample_rows
from minift.tokenizer import pad_id
from minift.train import Trainer
from minift.train.objectives import classification_rows


def adversarial_removal(task: Task, base, enc, config: FinetuneConfig, lambd: float = 1.0):
    """The fine-tuned classifier (full fine-tuning) trained against an attribute adversary."""
    if config.method != "full":
        raise ValueError(f"adversarial removal here trains the full model; got method {config.method!r}")  # fmt: skip
    model = build_model(base, task, enc, config)
    groups = sorted({r["group"] for r in task.train})
    model.add_module("adversary", nn.Linear(model.config.n_embd, len(groups)))
    ids, labels, _, _ = classification_rows(task, enc, config.max_len)
    attr = [groups.index(r["group"]) for r in task.train]
    pad, seed = pad_id(enc), config.train.seed

    def batch_fn(step: int, micro: int):
        rows = sample_rows(len(ids), config.batch_size, seed, step, micro).tolist()
        batch = classification_batch([ids[i] for i in rows], [labels[i] for i in rows], pad, config.max_len)  # fmt: skip
        batch["groups"] = torch.tensor([attr[i] for i in rows])
        return batch

    def loss_fn(m, b):
        h = m.features(b["idx"], attention_mask=b["attention_mask"])
        task_loss = F.cross_entropy(m.head(h).float(), b["labels"])
        adv_loss = F.cross_entropy(m.adversary(grad_reverse(h, lambd)).float(), b["groups"])
        return task_loss + adv_loss, {"adversary_loss": adv_loss.item()}

    lr = get_method("full").lr if config.train.lr is None else config.train.lr
    Trainer(model, replace(config.train, lr=lr, eval_every=0), batch_fn, loss_fn).fit()
    return model.eval()
