"""Batches: windows, padding, supervised loss masks, packing with segment isolation."""

import numpy as np
import pytest
import torch

from minift.data.batching import (
    classification_batch,
    pad_sequences,
    random_windows,
    sft_example,
    sft_packed_batch,
    sft_padded_batch,
    window_batches,
)
from minift.model import GPT, IGNORE_INDEX, GPTConfig


def test_windows_are_shifted_by_one_and_reproducible():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = random_windows(tokens, 4, 16, torch.Generator().manual_seed(0))
    assert x.shape == (4, 16) and torch.equal(y, x + 1)
    fn = window_batches(tokens, 4, 16, seed=3)
    assert torch.equal(fn(5, 1)[0], fn(5, 1)[0]) and not torch.equal(fn(5, 1)[0], fn(6, 1)[0])
    with pytest.raises(ValueError, match="too small"):
        random_windows(tokens[:10], 2, 16)


def test_padding_left_and_right():
    ids, mask = pad_sequences([[1, 2, 3], [4]], pad_id=0, side="left")
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_sequences([[1, 2, 3], [4]], pad_id=9)
    assert ids.tolist() == [[1, 2, 3], [4, 9, 9]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_sft_targets_cover_the_response_and_end_token_only():
    inputs, targets = sft_example([10, 11, 12], [20, 21], eot=99, max_len=16)
    assert inputs == [10, 11, 12, 20, 21]
    assert targets == [IGNORE_INDEX, IGNORE_INDEX, 20, 21, 99]
    inputs, targets = sft_example(list(range(30)), [20, 21], eot=99, max_len=8)
    assert len(inputs) == 8 and inputs[-3:] == [29, 20, 21]  # prompt cut from the left
    with pytest.raises(ValueError, match="does not fit"):
        sft_example([1], list(range(20)), eot=99, max_len=8)


def test_packed_batch_equals_each_example_alone():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=24, n_layer=2, n_head=2, n_embd=16)).eval()
    examples = [
        sft_example([1, 2, 3], [4, 5], 49, 20),
        sft_example([6, 7, 8, 9, 10], [11], 49, 20),
        sft_example([12], [13, 14, 15], 49, 20),
    ]
    packed = sft_packed_batch(examples, block_size=24, pad_id=0)
    assert packed["idx"].shape[0] == 1  # all three fit one row
    out = model(
        packed["idx"], position_ids=packed["position_ids"], segment_ids=packed["segment_ids"]
    ).logits
    at = 0
    for inp, _ in examples:
        alone = model(torch.tensor([inp])).logits[0]
        torch.testing.assert_close(out[0, at : at + len(inp)], alone, rtol=1e-5, atol=1e-5)
        at += len(inp)
    padded = sft_padded_batch(examples, pad_id=0)
    loss_packed = model(
        packed["idx"],
        packed["targets"],
        position_ids=packed["position_ids"],
        segment_ids=packed["segment_ids"],
    ).loss
    loss_padded = model(
        padded["idx"], padded["targets"], attention_mask=padded["attention_mask"]
    ).loss
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-5)


def test_classification_batch_truncates_and_keeps_labels():
    batch = classification_batch([[1, 2, 3, 4, 5], [6]], [2, 0], pad_id=0, max_len=3)
    assert batch["idx"].tolist() == [[1, 2, 3], [6, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [2, 0]
