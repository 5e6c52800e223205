"""Turning token ids into training batches.

- Pretraining: random windows of block_size + 1 tokens from one long token stream; the
  inputs are the first block_size, the targets the same window shifted by one.
- Supervised data (prompt -> response): the loss counts the response only. Examples are
  either padded to the longest in the batch, or packed several to a row (no padding
  wasted), with segment ids so that packed examples cannot attend to each other and
  positions that restart at 0 for each example.
- Classification: texts padded on the right, with the labels.

Every batch builder is a pure function of its arguments (and of a seeded generator), which
is what makes training resumable exactly (see minift.train.trainer).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from minift.model.gpt import IGNORE_INDEX
from minift.seeding import batch_generator


def random_windows(
    tokens: np.ndarray | torch.Tensor,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of shape (batch_size, block_size) from random offsets in a token stream."""
    n = len(tokens)
    if n < block_size + 1:
        raise ValueError(
            f"token stream of {n} tokens is too small for windows of block_size {block_size} + 1"
        )
    starts = torch.randint(0, n - block_size, (batch_size,), generator=generator).tolist()
    rows = np.stack([np.asarray(tokens[s : s + block_size + 1], dtype=np.int64) for s in starts])
    chunk = torch.from_numpy(rows)
    return chunk[:, :-1], chunk[:, 1:]


def window_batches(tokens, batch_size: int, block_size: int, seed: int = 0):
    """batch_fn(step, micro) for the Trainer: windows drawn from a generator seeded by
    (seed, step, micro), so each batch is reproducible on its own."""

    def batch_fn(step: int, micro: int = 0):
        g = batch_generator(seed, step, micro)
        return random_windows(tokens, batch_size, block_size, g)

    return batch_fn


def pad_sequences(
    seqs: Sequence[Sequence[int]],
    pad_id: int,
    side: str = "right",
    length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists to one length; return (ids, attention_mask) with mask 1 on real tokens.

    Right padding suits training and classification (a token's position does not move);
    left padding suits batched generation (every prompt ends at the last column).
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if not seqs:
        raise ValueError("cannot pad an empty list of sequences")
    width = length or max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s) > width:
            raise ValueError(f"sequence {i} has {len(s)} tokens, more than the length {width}")
        if not len(s):
            continue
        sl = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[i, sl] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def sft_example(
    prompt: Sequence[int], response: Sequence[int], eot: int, max_len: int
) -> tuple[list[int], list[int]]:
    """(inputs, targets) for one prompt/response pair, targets already shifted by one.

    The sequence is prompt + response + eot. Position t predicts token t+1; the targets of
    positions that predict a prompt token are IGNORE_INDEX, so only the response (and the
    end token, which teaches the model to stop) is learned. Too long: the prompt is cut
    from the left, keeping its end, which sits next to the response.
    """
    seq_resp = list(response) + [eot]
    if len(seq_resp) + 1 > max_len + 1:
        raise ValueError(
            f"response of {len(seq_resp)} tokens (with end token) does not fit max_len {max_len}"
        )
    keep = max(1, max_len + 1 - len(seq_resp))
    seq_prompt = list(prompt)[-keep:]
    seq = seq_prompt + seq_resp
    targets = [IGNORE_INDEX] * (len(seq_prompt) - 1) + seq_resp
    return seq[:-1], targets


def sft_padded_batch(
    examples: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad (inputs, targets) pairs from sft_example into one batch."""
    idx, mask = pad_sequences([e[0] for e in examples], pad_id)
    targets = torch.full_like(idx, IGNORE_INDEX)
    for i, (_, t) in enumerate(examples):
        targets[i, : len(t)] = torch.as_tensor(t)
    return {"idx": idx, "targets": targets, "attention_mask": mask}


def sft_packed_batch(
    examples: Sequence[tuple[list[int], list[int]]], block_size: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """Pack examples into rows of block_size, first-fit in the given order.

    Returns idx, targets, position_ids (restarting per example) and segment_ids (a
    distinct id per example, -1 on the padding at a row's end). With these the model
    computes, for each example, exactly what it would compute on the example alone.
    """
    rows: list[list[tuple[list[int], list[int]]]] = []
    room: list[int] = []
    for ex in examples:
        if len(ex[0]) > block_size:
            raise ValueError(f"example of {len(ex[0])} tokens exceeds block_size {block_size}")
        for r, free in enumerate(room):
            if len(ex[0]) <= free:
                rows[r].append(ex)
                room[r] -= len(ex[0])
                break
        else:
            rows.append([ex])
            room.append(block_size - len(ex[0]))
    B = len(rows)
    idx = torch.full((B, block_size), pad_id, dtype=torch.long)
    targets = torch.full((B, block_size), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((B, block_size), dtype=torch.long)
    segments = torch.full((B, block_size), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for s, (inp, tgt) in enumerate(row):
            n = len(inp)
            idx[r, at : at + n] = torch.as_tensor(inp)
            targets[r, at : at + n] = torch.as_tensor(tgt)
            positions[r, at : at + n] = torch.arange(n)
            segments[r, at : at + n] = s
            at += n
    return {"idx": idx, "targets": targets, "position_ids": positions, "segment_ids": segments}


def classification_batch(
    token_lists: Sequence[Sequence[int]], labels: Sequence[int] | None, pad_id: int, max_len: int
) -> dict[str, torch.Tensor]:
    """Right-padded texts cut to their first max_len tokens, with integer labels."""
    cut = [list(t)[:max_len] if len(t) else [pad_id] for t in token_lists]
    idx, mask = pad_sequences(cut, pad_id)
    batch = {"idx": idx, "attention_mask": mask}
    if labels is not None:
        batch["labels"] = torch.as_tensor(list(labels), dtype=torch.long)
    return batch
