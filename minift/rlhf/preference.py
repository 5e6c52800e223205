"""Preference data: JSONL rows of ``prompt``, ``chosen``, ``rejected``, as token batches.

A row says that, given ``prompt``, a person preferred the response ``chosen`` to the
response ``rejected``. This is the data of reward modelling (Christiano et al. 2017;
Stiennon et al. 2020; Ouyang et al. 2022) and of DPO (Rafailov et al. 2023). An optional
numeric ``margin`` field says by how much (Touvron et al. 2023 derive it from a rating).

Each response is scored as the sequence ``prompt + response + <|endoftext|>``: the end
token is part of the response, so "stopping here" is something a model can be rewarded
or penalised for, and a reward model reads its score at that token. Batches are padded on
the right; ``response_mask`` marks the tokens whose log-probabilities make up the
response's log-likelihood (every response token and the end token, never the prompt).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from minift.ask import append_jsonl
from minift.data.batching import pad_sequences
from minift.data.jsonl import read_jsonl
from minift.data.tasks import stable_fraction
from minift.tokenizer import eot_id, pad_id

PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")
SAME_RESPONSE = (
    "chosen and rejected are the same response, which says nothing about what is preferred; "
    "drop the row or give two different responses"
)


def load_preferences(path: str | os.PathLike) -> list[dict]:
    """Read a preference JSONL file; a bad row is a ValueError naming file, line and field
    (``prefs.jsonl line 3: missing field 'rejected'``), or a row whose two responses are
    the same, and nothing is returned."""
    rows = read_jsonl(path, PREFERENCE_FIELDS)
    for lineno, row in enumerate(rows, start=1):
        if row["chosen"] == row["rejected"]:
            raise ValueError(f"{path} row {lineno}: {SAME_RESPONSE}")
        margin = row.get("margin")
        if margin is not None and (
            isinstance(margin, bool) or not isinstance(margin, (int, float))
        ):
            raise ValueError(
                f"{path} row {lineno}: field 'margin' must be a number, got {margin!r}"
            )
    return rows


def split_preferences(rows: Sequence[dict], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held out): 10% of the rows held out by a stable hash of the prompt and both
    responses (the same split on every run). Files with fewer than 20 rows are too small
    to hold any out, so everything trains."""
    rows = list(rows)
    if len(rows) < 20:
        return rows, []
    keys = [r["prompt"] + "\x00" + r["chosen"] + "\x00" + r["rejected"] for r in rows]
    train = [r for r, k in zip(rows, keys) if stable_fraction(k, seed) >= 0.1]
    val = [r for r, k in zip(rows, keys) if stable_fraction(k, seed) < 0.1]
    return (train, val) if train and val else (rows, [])


def append_preferences(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    """Append rows to a preference JSONL file atomically: the file is validated first, then
    rewritten whole through a temporary file, so a crash never leaves a half-written line."""
    path = pathlib.Path(path)
    for i, row in enumerate(rows):
        missing = [f for f in PREFERENCE_FIELDS if not isinstance(row.get(f), str)]
        if missing:
            raise ValueError(f"row {i} to append lacks the string field(s) {missing}")
    if path.exists() and path.read_text(encoding="utf-8").strip():
        load_preferences(path)  # refuse to extend a file that is already broken
    append_jsonl(path, rows)


@dataclass
class EncodedPairs:
    """Token ids of preference rows: prompt, and each response with its end token."""

    prompt: list[list[int]]
    chosen: list[list[int]]
    rejected: list[list[int]]
    margin: list[float]

    def __len__(self) -> int:
        return len(self.prompt)


def encode_prompt(enc, prompt: str) -> list[int]:
    """A prompt's ids; an empty prompt becomes the end token, so the first response token
    still has a position to be predicted from."""
    return enc.encode_ordinary(prompt) or [eot_id(enc)]


def encode_pairs(rows: Sequence[dict], enc, block_size: int, where: str = "rows") -> EncodedPairs:
    """Tokenise preference rows; ValueError when a prompt + response + end token does not
    fit ``block_size`` or when chosen == rejected (naming the row and the fix), checked for
    every row before any use."""
    eot = eot_id(enc)
    prompts = [encode_prompt(enc, r["prompt"]) for r in rows]
    chosen = [ids + [eot] for ids in enc.encode_ordinary_batch([r["chosen"] for r in rows])]
    rejected = [ids + [eot] for ids in enc.encode_ordinary_batch([r["rejected"] for r in rows])]
    for i, (p, c, r) in enumerate(zip(prompts, chosen, rejected)):
        if rows[i]["chosen"] == rows[i]["rejected"]:
            raise ValueError(f"{where} row {i + 1}: {SAME_RESPONSE}")
        for name, resp in (("chosen", c), ("rejected", r)):
            if len(p) + len(resp) > block_size:
                raise ValueError(
                    f"{where} row {i + 1}: prompt ({len(p)} tokens) + {name} response "
                    f"({len(resp)} tokens with the end token) = {len(p) + len(resp)} tokens "
                    f"exceeds block_size {block_size}; shorten the row or drop it"
                )
    margins = [float(r.get("margin", 0.0) or 0.0) for r in rows]
    return EncodedPairs(prompts, chosen, rejected, margins)


def response_batch(
    prompts: Sequence[list[int]], responses: Sequence[list[int]], pad: int
) -> dict[str, torch.Tensor]:
    """Right-padded ``prompt + response`` rows: idx, attention_mask, and response_mask
    (1 on the response's tokens, aligned with idx)."""
    seqs = [p + r for p, r in zip(prompts, responses)]
    idx, mask = pad_sequences(seqs, pad, side="right")
    response_mask = torch.zeros_like(mask)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        response_mask[i, len(p) : len(p) + len(r)] = 1
    return {"idx": idx, "attention_mask": mask, "response_mask": response_mask}


def pair_batch(pairs: EncodedPairs, indices: Sequence[int], enc) -> dict[str, torch.Tensor]:
    """The chosen responses of ``indices`` then their rejected ones, as one batch of 2n rows
    (one forward pass scores both halves), plus each pair's margin."""
    prompts = [pairs.prompt[i] for i in indices]
    responses = [pairs.chosen[i] for i in indices] + [pairs.rejected[i] for i in indices]
    batch = response_batch(prompts + prompts, responses, pad_id(enc))
    batch["margin"] = torch.tensor([pairs.margin[i] for i in indices], dtype=torch.float32)
    return batch
