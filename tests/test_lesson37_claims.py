"""Lesson 37's claims that hold on the fast base, checked from the same library calls.

- the response-only label mask puts IGNORE_INDEX exactly on the positions that predict a
  prompt token, and counts the response and the end token (loss on everything counts
  the whole sequence shifted by one);
- packing the lesson's examples takes fewer token slots than padding each batch to its
  longest, gives the same loss as the padded batches, and gives a different loss without
  the segment ids (examples then attend to each other).
"""

import torch

from minift.data.batching import sft_example, sft_packed_batch, sft_padded_batch
from minift.model.gpt import IGNORE_INDEX, lm_loss
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task
from minift.seeding import sample_rows
from minift.tokenizer import eot_id, pad_id

MAX_LEN, BATCH = 48, 32  # as in the lesson


def encoded(enc, rows):
    prompts = enc.encode_ordinary_batch([r["prompt"] for r in rows])
    responses = enc.encode_ordinary_batch([r["response"] for r in rows])
    return prompts, responses


def test_response_only_mask_is_exactly_the_prompt():
    _, enc = load_base()
    eot = eot_id(enc)
    task = get_task("sort-words", max_words=3)
    prompts, responses = encoded(enc, task.train[:300] + task.val)
    for p, r in zip(prompts, responses):
        inputs, targets = sft_example(p, r, eot, MAX_LEN)
        assert inputs == p + r  # the full sequence minus its last token (the end token)
        assert targets[: len(p) - 1] == [IGNORE_INDEX] * (len(p) - 1)
        assert targets[len(p) - 1 :] == r + [eot]
        everything = (inputs + [targets[-1]])[1:]  # the lesson's loss_on_everything
        assert everything == (p + r + [eot])[1:]


def test_packing_saves_slots_and_keeps_the_loss_and_needs_segment_ids():
    base, enc = load_base()
    pad, eot = pad_id(enc), eot_id(enc)
    task = get_task("sort-words", max_words=3)
    prompts, responses = encoded(enc, task.train)
    rows = sample_rows(len(prompts), 8 * BATCH, 123, 0).tolist()
    examples = [sft_example(prompts[i], responses[i], eot, MAX_LEN) for i in rows]
    padded = [sft_padded_batch(examples[i : i + BATCH], pad) for i in range(0, len(examples), BATCH)]  # fmt: skip
    packed = sft_packed_batch(examples, base.config.block_size, pad)
    assert packed["idx"].numel() < sum(b["idx"].numel() for b in padded)
    base.eval()
    with torch.no_grad():
        logits = [base(b["idx"], attention_mask=b["attention_mask"]).logits.flatten(0, 1) for b in padded]  # fmt: skip
        loss_padded = lm_loss(
            torch.cat(logits), torch.cat([b["targets"].flatten() for b in padded])
        )
        kw = {"position_ids": packed["position_ids"]}
        loss_packed = base(packed["idx"], packed["targets"], segment_ids=packed["segment_ids"], **kw).loss  # fmt: skip
        loss_leaky = base(packed["idx"], packed["targets"], **kw).loss
    assert abs(loss_packed.item() - loss_padded.item()) < 1e-4
    assert abs(loss_leaky.item() - loss_padded.item()) > 1e-4
