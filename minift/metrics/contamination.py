"""Contamination: how much of an evaluation set the model may have read in pretraining.

A test example whose text (or long pieces of it) occurs in the pretraining corpus
measures memory as much as skill. The check here is the one GPT-3's authors ran (Brown et
al. 2020, appendix C; Radford et al. 2019 used 8-gram Bloom filters for GPT-2): split
both sides into word n-grams after normalisation (lowercase, alphanumeric runs), index
every n-gram of the corpus, and report for the evaluation set

- the share of examples with at least one n-gram found in the corpus ("dirty" examples,
  GPT-3's criterion, with n = 13 there; shorter texts need a smaller n),
- the share of all evaluation n-grams found in the corpus,

beside the scores, so that a reader can ask whether the dirty examples score higher
than the clean ones (:func:`split_by_contamination` gives the two groups).

An example shorter than n words has no n-gram and counts as clean: state n with the
result. The corpus index holds hashes of the n-grams (8 bytes each), so a few MB of text
fits in memory; a hash collision (probability ~ 2^-64 per pair) would count as a hit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _hash(gram: tuple[str, ...]) -> int:
    digest = hashlib.blake2b(" ".join(gram).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def ngram_hashes(text: str, n: int) -> set[int]:
    w = words(text)
    return {_hash(tuple(w[i : i + n])) for i in range(len(w) - n + 1)}


class NgramIndex:
    """Every word n-gram of a corpus, hashed."""

    def __init__(self, corpus: Iterable[str], n: int = 8):
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.n = n
        self.hashes: set[int] = set()
        for text in corpus:
            self.hashes |= ngram_hashes(text, n)
        if not self.hashes:
            raise ValueError(f"the corpus has no {n}-gram of words: nothing to check against")


@dataclass(frozen=True)
class Contamination:
    n: int
    examples: int
    dirty: list[bool]  # per example: some n-gram of it occurs in the corpus
    ngrams: int
    ngrams_found: int

    @property
    def dirty_share(self) -> float:
        return sum(self.dirty) / self.examples

    @property
    def ngram_share(self) -> float:
        return self.ngrams_found / self.ngrams if self.ngrams else 0.0

    def __str__(self) -> str:
        return (
            f"{sum(self.dirty)} of {self.examples} examples ({self.dirty_share:.1%}) share a "
            f"{self.n}-gram with the corpus; {self.ngram_share:.1%} of their {self.ngrams} "
            f"{self.n}-grams occur in it"
        )


def contamination(texts: Iterable[str], index: NgramIndex) -> Contamination:
    """The dirty examples and the n-gram overlap of ``texts`` against ``index``."""
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: nothing to check")
    dirty, total, found = [], 0, 0
    for t in texts:
        grams = ngram_hashes(t, index.n)
        hits = len(grams & index.hashes)
        dirty.append(hits > 0)
        total += len(grams)
        found += hits
    return Contamination(index.n, len(texts), dirty, total, found)


def split_by_contamination(scores, report: Contamination) -> tuple[list[float], list[float]]:
    """(scores of the clean examples, scores of the dirty ones), in order."""
    scores = list(scores)
    if len(scores) != report.examples:
        raise ValueError(f"scores has {len(scores)} values for {report.examples} checked examples")
    clean = [s for s, d in zip(scores, report.dirty) if not d]
    return clean, [s for s, d in zip(scores, report.dirty) if d]
