"""Easy data augmentation (EDA): four word-level edits that keep a text's label.

Wei and Zou (2019), "EDA: easy data augmentation techniques for boosting performance on
text classification tasks". For a text of n words and a rate alpha:

- **synonym replacement** (SR): m = max(1, round(alpha n)) distinct words that have a
  synonym are each replaced by one of their synonyms;
- **random insertion** (RI): m times, a synonym of a random word is inserted at a random
  position;
- **random swap** (RS): m times, two random positions exchange their words (the multiset
  of words is unchanged);
- **random deletion** (RD): each word is deleted independently with probability alpha
  (expected alpha n deletions); a text is never emptied (one random word survives).

Their synonyms come from WordNet. Offline, with no thesaurus, a word's synonyms here are
its nearest neighbours in the base model's token-embedding space (cosine similarity), as
in embedding-based replacement (Wang and Yang 2015; Kobayashi 2018 uses a language
model instead): :class:`SynonymTable`. Only words that are one token of the tokenizer
(with their leading space) have an embedding of their own, so only those are replaced,
and function words (STOP_WORDS) are left alone, as EDA leaves its stop words.
Neighbours in an embedding space are words used alike, which are not always synonyms
("increase" and "decrease" sit close): that is the price of the offline stand-in, and why
the rate stays small.

Every function takes a ``random.Random``, so a seed reproduces the edits exactly.
"""

from __future__ import annotations

import random

import torch

from minift.errors import UserError

OPERATIONS = ("synonym", "insert", "swap", "delete")
# Function words get no synonyms (EDA does the same with its stop-word list): their
# embedding neighbours are other function words, which change the grammar, not the wording.
STOP_WORDS = frozenset(
    "the and for are but not you all any can had her was one our out has him his how its "
    "may new now see who did get let say she too use that with have this will your from they "
    "been than them then into only over such when what which there their these those would "
    "about other could should where while".split()
)


class SynonymTable:
    """word -> its k nearest word tokens by cosine similarity of the embedding rows."""

    def __init__(self, embedding: torch.Tensor, enc, k: int = 5, min_chars: int = 3) -> None:
        if k < 1:
            raise UserError(f"a synonym table needs k >= 1 neighbours, got {k}")
        words, ids = [], []
        for i in range(min(enc.n_vocab, embedding.shape[0])):
            try:
                piece = enc.decode_single_token_bytes(i).decode("utf-8")
            except (KeyError, UnicodeDecodeError):
                continue  # special tokens, byte pieces of multi-byte characters
            word = piece[1:]
            if piece.startswith(" ") and len(word) >= min_chars and word.isalpha() and word.lower() not in STOP_WORDS:  # fmt: skip
                words.append(word)
                ids.append(i)
        if len(words) <= k:
            raise UserError(f"only {len(words)} word tokens to draw {k} synonyms from")
        E = torch.nn.functional.normalize(embedding[ids].double(), dim=-1)
        sim = E @ E.T
        sim.fill_diagonal_(-2.0)  # a word is not its own synonym
        top = torch.topk(sim, k, dim=-1)
        self.k = k
        self.neighbours = {
            w: [words[j] for j in row.tolist()] for w, row in zip(words, top.indices)
        }
        self.similarity = {w: row.tolist() for w, row in zip(words, top.values)}

    def __call__(self, word: str) -> list[str]:
        """The word's synonyms, most similar first ([] for a word without a token)."""
        return self.neighbours.get(word, [])


def _count(n_words: int, alpha: float) -> int:
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"the EDA rate alpha must lie in [0, 1], got {alpha}")
    return max(1, round(alpha * n_words)) if alpha > 0 else 0


def synonym_replacement(words: list[str], alpha: float, synonyms: SynonymTable, rng: random.Random) -> list[str]:  # fmt: skip
    out = list(words)
    candidates = [i for i, w in enumerate(out) if synonyms(w)]
    rng.shuffle(candidates)
    for i in candidates[: _count(len(words), alpha)]:
        out[i] = rng.choice(synonyms(out[i]))
    return out


def random_insertion(words: list[str], alpha: float, synonyms: SynonymTable, rng: random.Random) -> list[str]:  # fmt: skip
    out = list(words)
    with_synonyms = [w for w in words if synonyms(w)]
    if not with_synonyms:
        return out  # nothing to insert: EDA inserts synonyms of the text's own words
    for _ in range(_count(len(words), alpha)):
        out.insert(rng.randint(0, len(out)), rng.choice(synonyms(rng.choice(with_synonyms))))
    return out


def random_swap(words: list[str], alpha: float, rng: random.Random) -> list[str]:
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(_count(len(words), alpha)):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], alpha: float, rng: random.Random) -> list[str]:
    _count(len(words), alpha)  # checks alpha
    if not words:
        return []
    kept = [w for w in words if rng.random() >= alpha]
    return kept if kept else [rng.choice(words)]


def eda(
    text: str,
    alpha: float,
    rng: random.Random,
    synonyms: SynonymTable | None = None,
    operation: str | None = None,
) -> str:
    """One augmented copy of ``text``: ``operation`` (one of OPERATIONS), or one drawn at
    random for each copy as the paper does (the synonym-based two only with a table)."""
    ops = [operation] if operation else [o for o in OPERATIONS if synonyms or o in ("swap", "delete")]  # fmt: skip
    op = rng.choice(ops)
    if op not in OPERATIONS:
        raise UserError(f"unknown EDA operation {op!r}; choose one of {', '.join(OPERATIONS)}")
    if op in ("synonym", "insert") and synonyms is None:
        raise UserError(f"EDA operation {op!r} needs a SynonymTable")
    words = text.split()
    if op == "synonym":
        words = synonym_replacement(words, alpha, synonyms, rng)
    elif op == "insert":
        words = random_insertion(words, alpha, synonyms, rng)
    elif op == "swap":
        words = random_swap(words, alpha, rng)
    else:
        words = random_deletion(words, alpha, rng)
    return " ".join(words)
