"""Lesson 08's formula for layer-wise learning rates, checked against the library.

The lesson writes: a parameter at depth d (0 the embeddings, l + 1 block l, L + 1 the
final norm and the head) trains at lr * decay^(L + 1 - d), so block l at lr * decay^(L - l).
"""

import math

import torch.nn as nn

from minift.model import GPT, GPTConfig
from minift.model.heads import SequenceClassifier
from minift.peft.layerwise import layer_index, layerwise_lr_groups


def test_layerwise_rates_follow_the_lessons_formula():
    L, lr, decay = 3, 2e-3, 0.7
    config = GPTConfig(vocab_size=64, block_size=16, n_layer=L, n_head=2, n_embd=16)
    model = SequenceClassifier(GPT(config), 4)
    groups = layerwise_lr_groups(model, lr, decay)
    for g in groups:
        assert math.isclose(g["lr"], lr * decay ** (L + 1 - g["depth"]))
    by_name = {id(p): g["lr"] for g in groups for p in g["params"]}
    seen = {"block 0": 0, "head": 0}
    for name, p in model.named_parameters():
        depth = layer_index(name.removeprefix("backbone."), L)
        if ".h.0." in name:  # block 0: lr * decay^L
            assert math.isclose(by_name[id(p)], lr * decay**L)
            seen["block 0"] += 1
        if isinstance(p, nn.Parameter) and name.startswith("head"):
            assert depth == L + 1 and math.isclose(by_name[id(p)], lr)
            seen["head"] += 1
    assert all(seen.values()), seen
