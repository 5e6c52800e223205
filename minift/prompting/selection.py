"""Which k labelled examples to show: at random, the most similar, or balanced by class.

- **random**: k training rows drawn without replacement (a fresh draw per query).
- **similar**: the k training rows nearest the query, by cosine similarity of TF-IDF word
  vectors, placed most similar last (next to the query). Liu et al., "What makes good
  in-context examples for GPT-3?", DeelIO 2022, chose neighbours in a sentence encoder's
  space; a bag of words is used here because the 1.3M-parameter base's own embeddings
  are a weak encoder, and it needs no model.
- **balanced**: k // K rows of each of the K classes (the remainder to classes drawn at
  random), shuffled: a prompt whose demonstrations are mostly one class pulls the answer
  towards it (the majority-label bias of Zhao et al. 2021).

Every choice is a function of (seed, query index): a run repeats exactly.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter

from minift.errors import UserError

STRATEGIES = ("random", "similar", "balanced")
_WORD = re.compile(r"[a-z0-9]+")


def check_shots(k: int, n_train: int) -> None:
    if k < 0:
        raise UserError(f"shots must be >= 0, got {k}")
    if k > n_train:
        raise UserError(
            f"shots={k} is larger than the training set ({n_train} labelled rows): "
            f"choose shots <= {n_train}"
        )


class TfIdf:
    """TF-IDF vectors of texts (sparse dicts), with idf_w = ln((1 + n) / (1 + df_w)) + 1."""

    def __init__(self, texts: list[str]):
        self.docs = [Counter(_WORD.findall(t.lower())) for t in texts]
        df = Counter(w for d in self.docs for w in d)
        n = len(texts)
        self.idf = {w: math.log((1 + n) / (1 + c)) + 1.0 for w, c in df.items()}
        self.vectors = [self._normalise(d) for d in self.docs]

    def _normalise(self, counts: Counter) -> dict[str, float]:
        v = {w: c * self.idf.get(w, math.log(1 + len(self.docs)) + 1.0) for w, c in counts.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        return {w: x / norm for w, x in v.items()}

    def nearest(self, text: str, k: int) -> list[int]:
        """Indices of the k most similar texts, most similar last (ties: lower index)."""
        q = self._normalise(Counter(_WORD.findall(text.lower())))
        sims = [sum(q.get(w, 0.0) * x for w, x in v.items()) for v in self.vectors]
        order = sorted(range(len(sims)), key=lambda i: (-sims[i], i))[:k]
        return order[::-1]


class Selector:
    """select(query_text, query_index) -> the indices of k training rows, in prompt order."""

    def __init__(self, train: list[dict], k: int, strategy: str = "random", seed: int = 0):
        if strategy not in STRATEGIES:
            raise UserError(
                f"unknown selection {strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        check_shots(k, len(train))
        self.train, self.k, self.strategy, self.seed = train, k, strategy, seed
        self.tfidf = TfIdf([r["text"] for r in train]) if strategy == "similar" and k else None
        self.by_class: dict[int, list[int]] = {}
        for i, r in enumerate(train):
            self.by_class.setdefault(int(r["label"]), []).append(i)

    def select(self, text: str, index: int) -> list[int]:
        if self.k == 0:
            return []
        rng = random.Random(self.seed * 1_000_003 + index)
        if self.strategy == "random":
            return rng.sample(range(len(self.train)), self.k)
        if self.strategy == "similar":
            return self.tfidf.nearest(text, self.k)
        classes = sorted(self.by_class)
        counts = {c: self.k // len(classes) for c in classes}
        for c in rng.sample(classes, self.k % len(classes)):
            counts[c] += 1
        chosen = []
        for c in classes:
            pool = self.by_class[c]
            chosen += rng.sample(pool, min(counts[c], len(pool)))
        short = self.k - len(chosen)  # a class with too few rows: fill from the rest
        if short:
            rest = sorted(set(range(len(self.train))) - set(chosen))
            chosen += rng.sample(rest, short)
        rng.shuffle(chosen)
        return chosen
