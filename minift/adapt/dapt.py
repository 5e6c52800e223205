"""Continued pretraining on unlabelled target text, before fine-tuning (DAPT / TAPT).

Gururangan, Marasovic, Swayamdipta, Lo, Beltagy, Downey and Smith (2020), "Don't stop
pretraining: adapt language models to domains and tasks". A base pretrained on one kind
of text represents another kind less well. Before fine-tuning, train the base further
with its own objective (next-token prediction) on text of the target domain: the whole
domain (domain-adaptive pretraining, DAPT: here the standard library's source code,
``pycode``) or the unlabelled texts of the task itself (task-adaptive, TAPT: here the
target comments). No label is used; the fine-tuning that follows is on the source task,
as before.

The texts are tokenised into one stream (an end-of-text token after each) and the model
trains on random windows of it (minift.data.batching.window_batches) with the one
Trainer, at a small learning rate so that what the base knew is moved, not overwritten.
"""

from __future__ import annotations

import copy

import torch

from minift.data.batching import window_batches
from minift.data.tokens import encode_documents
from minift.errors import UserError
from minift.train import TrainConfig, Trainer


def continue_pretraining(
    base: torch.nn.Module,
    texts: list[str],
    enc,
    steps: int = 200,
    lr: float = 3e-4,
    batch_size: int = 16,
    block_size: int = 64,
    seed: int = 0,
) -> tuple[torch.nn.Module, list[dict]]:
    """A copy of ``base`` trained ``steps`` more steps on ``texts``; base is unchanged."""
    if not texts:
        raise UserError("continued pretraining needs target text; none was given")
    tokens = encode_documents(texts, enc)
    block_size = min(block_size, base.config.block_size)
    if len(tokens) <= block_size + 1:
        raise UserError(
            f"{len(tokens)} tokens of target text are too few for windows of {block_size}"
        )
    model = copy.deepcopy(base).train()
    config = TrainConfig(
        steps=steps, lr=lr, warmup_steps=min(10, steps // 10), weight_decay=0.0,
        seed=seed, progress=False, desc="continued pretraining",
    )  # fmt: skip
    result = Trainer(model, config, window_batches(tokens, batch_size, block_size, seed)).fit()
    return model.eval(), result.history
