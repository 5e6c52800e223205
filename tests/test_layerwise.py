"""Layer-wise methods build the parameter sets and groups they claim."""

import pytest
import torch

from minift.model import GPT, GPTConfig
from minift.model.heads import SequenceClassifier
from minift.peft.layerwise import (
    GradualUnfreezing,
    bitfit,
    freeze_all_but_last,
    layerwise_lr_groups,
    norm_tuning,
)
from minift.train import TrainConfig, Trainer


def classifier(n_layer=3):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=n_layer, n_head=2, n_embd=16))
    return SequenceClassifier(gpt, num_labels=2)


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_last_k_blocks():
    model = freeze_all_but_last(classifier(), 1)
    names = trainable(model)
    assert all(
        n.startswith(("backbone.transformer.h.2.", "backbone.transformer.ln_f", "head."))
        for n in names
    )
    assert any(n.startswith("backbone.transformer.h.2.") for n in names) and "head.weight" in names
    with pytest.raises(ValueError, match="between 0 and the number of blocks"):
        freeze_all_but_last(classifier(), 4)


def test_bitfit_and_norm_tuning():
    names = trainable(bitfit(classifier()))
    assert names and all(n.endswith(".bias") or n.startswith("head.") for n in names)
    names = trainable(norm_tuning(classifier()))
    assert names and all(".ln_" in n or n.startswith("head.") for n in names)
    no_bias = SequenceClassifier(
        GPT(GPTConfig(vocab_size=40, block_size=8, n_layer=1, n_head=2, n_embd=8, bias=False)), 2
    )
    with pytest.raises(ValueError, match="has none"):
        bitfit(no_bias)


def test_layerwise_lr_decay_groups():
    model = classifier(n_layer=3)
    groups = layerwise_lr_groups(model, lr=1.0, decay=0.5)
    by_depth = {}
    for g in groups:
        by_depth.setdefault(g["depth"], set()).add(g["lr"])
    assert by_depth == {0: {0.5**4}, 1: {0.5**3}, 2: {0.5**2}, 3: {0.5}, 4: {1.0}}
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len({id(p) for p in model.parameters()})
    block0 = {id(p) for p in model.backbone.transformer.h[0].parameters()}
    assert all(g["depth"] == 1 for g in groups for p in g["params"] if id(p) in block0)


def test_gradual_unfreezing_unfreezes_one_block_at_a_time_and_trains_them():
    model = classifier(n_layer=3)
    schedule = GradualUnfreezing(model, every=2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def on_step(step, trainer):
        schedule(step, trainer)
        seen.append(sum(p.requires_grad for p in model.backbone.transformer.h.parameters()))

    def batch_fn(step, micro):
        g = torch.Generator().manual_seed(step)
        return torch.randint(0, 40, (4, 10), generator=g), torch.randint(0, 2, (4,), generator=g)

    def loss_fn(m, batch):
        return m(batch[0], labels=batch[1]).loss, {}

    groups = layerwise_lr_groups(model, lr=1e-2)
    Trainer(
        model,
        TrainConfig(steps=8, lr=1e-2, progress=False),
        batch_fn,
        loss_fn,
        param_groups=groups,
        on_step=on_step,
    ).fit()
    per_block = len(list(model.backbone.transformer.h[0].parameters()))
    assert seen == [
        0,
        per_block,
        per_block,
        2 * per_block,
        2 * per_block,
        3 * per_block,
        3 * per_block,
        3 * per_block,
    ]
    after = model.state_dict()
    # block 0 unfroze at step 6, so it trained in the last steps; the embedding never did
    assert not torch.equal(
        after["backbone.transformer.h.0.attn.c_attn.weight"],
        start["backbone.transformer.h.0.attn.c_attn.weight"],
    )
    assert torch.equal(
        after["backbone.transformer.wte.weight"], start["backbone.transformer.wte.weight"]
    )
