"""Long-context tasks with exact answers: the label hangs on a few far-apart tokens.

``long-passkey``: a document of a few thousand to tens of thousands of tokens of real
standard-library prose (windows of the ``pydocs`` token stream, train split for training
rows, val split for validation rows) hides a passkey phrase,

    "... returns the value. passkey: Z. The default encoding is ..."

and the label is the key after the marker, one of ``keys``. Every key also appears a few
times *without* the marker (distractors), so noticing which keys occur is not enough: the
model has to bind the marker to the key next to it. With ``votes`` = 2m + 1 the document
holds 2m + 1 marked keys, m + 1 of them the label and m others, each somewhere else: the
answer then needs several far-apart tokens at once (a majority vote).

Where the marked keys sit is uniform over the document, so a model that reads only the
first block_size tokens finds one with probability about block_size / length, and is
otherwise left to guess: the gap between it and a model that reads everything is what
sparse and hierarchical attention buy. Rows carry ``marker_at`` for analysis: where each
marked phrase was inserted, as a token offset into the *source window*. In the final text
a marker sits later by the tokens of the phrases inserted before it (and re-tokenising
the seams can move it by a token more), so re-encode the text to locate it exactly.
"""

from __future__ import annotations

import random

import numpy as np

from minift.data.tasks import Task, register_task
from minift.utils import fast_mode

# Single letters: one token each in the default 4096-token BPE, and rare in the corpus.
KEYS = ("Q", "Z", "X", "J")
MARKER = "passkey:"


def word_start_table(enc) -> np.ndarray:
    """(n_vocab,) bool: the token begins with a space or newline, so a phrase inserted before
    it cuts neither a word nor a character."""
    table = np.zeros(enc.n_vocab, dtype=bool)
    for t in range(enc.n_vocab):
        try:
            table[t] = enc.decode_single_token_bytes(t)[:1] in (b" ", b"\n", b"\t")
        except KeyError:  # ids with no bytes (special tokens)
            pass
    return table


def _decode(window: np.ndarray, enc, eot: int) -> str:
    """Tokens to text, documents separated by blank lines instead of end-of-text tokens."""
    ids = window.tolist()
    pieces, start = [], 0
    for i, t in enumerate(ids + [eot]):
        if t == eot:
            pieces.append(enc.decode(ids[start:i]))
            start = i + 1
    return "\n\n".join(p for p in pieces if p)


def compose_document(window: np.ndarray, inserts: list[tuple[int, str]], enc, eot: int) -> str:
    """Insert phrases into a token window: inserts are (word-start offset, phrase) pairs."""
    text, last = [], 0
    for pos, phrase in sorted(inserts):
        text += [_decode(window[last:pos], enc, eot), phrase]
        last = pos
    return "".join(text + [_decode(window[last:], enc, eot)])


def _rows(stream, n_rows, lengths, keys, votes, distractors, rng, enc, eot) -> list[dict]:
    """n_rows documents from random windows of the token stream, labels balanced."""
    word_start = word_start_table(enc)
    labels = [i % len(keys) for i in range(n_rows)]
    rng.shuffle(labels)
    rows = []
    for label in labels:
        n = rng.randint(*lengths)
        if n >= len(stream):
            raise ValueError(f"document of {n} tokens exceeds the corpus ({len(stream)} tokens)")
        others = [k for k in range(len(keys)) if k != label]
        m = votes // 2
        marked = [label] * (m + 1) + [rng.choice(others) for _ in range(m)]
        rng.shuffle(marked)
        n_inserts = len(marked) + distractors * len(keys)
        for _ in range(100):  # a window of code may hold too few words: draw another
            start = rng.randrange(len(stream) - n)
            window = stream[start : start + n]
            starts = sorted({n} | set(np.flatnonzero(word_start[window]).tolist()))
            if len(starts) >= n_inserts:
                break
        else:
            raise ValueError(f"windows of {n} tokens hold too few words for {n_inserts} phrases")
        where = rng.sample(starts, n_inserts)  # distinct places, in random order
        phrases = [f" {MARKER} {keys[k]}." for k in marked]
        phrases += [f" {keys[k]}" for k in range(len(keys)) for _ in range(distractors)]
        text = compose_document(window, list(zip(where, phrases)), enc, eot)
        marker_at = sorted(where[: len(marked)])  # the first phrases are the marked ones
        rows.append({"text": text, "label": label, "n_tokens": n, "marker_at": marker_at})
    return rows


def _check(n_train, n_val, min_tokens, max_tokens, keys, votes, distractors) -> None:
    """One ValueError listing every bad argument of long_passkey_task."""
    problems = []
    if votes < 1 or votes % 2 == 0:
        problems.append(f"votes must be a positive odd number (a majority exists), got {votes}")
    if len(set(keys)) < 2 or any(not k.strip() or " " in k for k in keys):
        problems.append(f"keys must be at least two distinct single words, got {keys}")
    if not 0 < min_tokens <= max_tokens:
        problems.append(f"need 0 < min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")
    if distractors < 0 or n_train < 1 or n_val < 1:
        problems.append(
            f"need distractors >= 0 and rows >= 1, got {distractors}, {n_train}, {n_val}"
        )
    if problems:
        raise ValueError("long-passkey: " + "; ".join(problems))


@register_task("long-passkey")
def long_passkey_task(
    seed: int = 0,
    n_train: int | None = None,
    n_val: int | None = None,
    min_tokens: int | None = None,
    max_tokens: int | None = None,
    keys: tuple[str, ...] = KEYS,
    votes: int = 1,
    distractors: int = 2,
    enc=None,
) -> Task:
    """Which key follows the marker (or: which key do most markers name)?

    Documents of min_tokens .. max_tokens tokens of ``enc`` (default: minift's default
    encoding): 2,000 .. 20,000 (fast mode: 200 .. 800), n_train / n_val rows (fast mode:
    192 / 64; else 512 / 128). ``votes`` marked keys (odd), ``distractors`` unmarked
    mentions of every key.
    """
    from minift.data.encoding import default_encoding
    from minift.data.tokens import corpus_tokens
    from minift.tokenizer import eot_id

    fast = fast_mode()
    n_train = n_train if n_train is not None else (192 if fast else 512)
    n_val = n_val if n_val is not None else (64 if fast else 128)
    min_tokens = min_tokens if min_tokens is not None else (200 if fast else 2000)
    max_tokens = max_tokens if max_tokens is not None else (800 if fast else 20000)
    _check(n_train, n_val, min_tokens, max_tokens, keys, votes, distractors)
    enc = enc or default_encoding()
    eot = eot_id(enc)
    rng = random.Random(seed)
    lengths = (min_tokens, max_tokens)
    train = _rows(
        corpus_tokens("pydocs", "train", enc), n_train, lengths, keys, votes, distractors,
        rng, enc, eot,
    )  # fmt: skip
    val = _rows(
        corpus_tokens("pydocs", "val", enc), n_val, lengths, keys, votes, distractors,
        rng, enc, eot,
    )  # fmt: skip
    return Task(
        name="long-passkey",
        kind="classification",
        train=train,
        val=val,
        labels=list(keys),
        description=f"name the key after '{MARKER}' in a long document ({votes} marked)",
        template=f" The {MARKER}",
        verbalizer=[f" {k}" for k in keys],
    )
