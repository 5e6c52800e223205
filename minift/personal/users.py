"""Simulated users: the same prompts, different hidden preferences.

Personalization is only measurable when each user's taste is known exactly. Each
simulated user here is a scoring function of a response, hidden from every method: three
like a topic (responses that mention storage, text, or networking words), two like a
length (``brief`` prefers fewer words, ``verbose`` more). ``brief`` and ``verbose``
disagree on every pair they share, so one model shared by everyone cannot please both:
the case for per-user models.

A user's preference pairs come from the docstring summary lines of the ``file-words``
task (:mod:`minift.rlhf.tasks`): two lines that open with the same word (the prompt) and
that the user scores differently; the higher one is ``chosen``. Lines are split into
train and validation before pairing, so held-out pairs share no response with training
pairs, and every user draws from the same lines, so users differ only in what they like.
A user holds a few dozen training pairs, as a person answering ``minift feedback`` would.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass

from minift.data.tasks import Task, register_task
from minift.errors import UserError
from minift.rlhf.tasks import STORAGE_WORDS, demonstrations

_WORD = re.compile(r"[a-z]+")
TOPICS = {
    "storage": STORAGE_WORDS,
    "text": frozenset(
        "string strings text character characters unicode line lines word words".split()
    ),
    "net": frozenset("socket server client connection request url address host http".split()),
}
MIN_LENGTH_GAP = 4  # words: a length user only compares responses that clearly differ


@dataclass(frozen=True)
class User:
    """A simulated user: ``score(response)`` is their hidden taste, ``profile`` what they
    would write about themselves (for contextual adaptation in the prompt)."""

    name: str
    profile: str
    kind: str  # "topic" or "length"

    def score(self, response: str) -> float:
        words = _WORD.findall(response.lower())
        if self.kind == "topic":
            return float(len(set(words) & TOPICS[self.name]))
        sign = -1.0 if self.name == "brief" else 1.0
        return sign * len(response.split())

    def prefers(self, a: str, b: str) -> bool | None:
        """True if the user prefers a to b, False if b to a, None if they do not care."""
        sa, sb = self.score(a), self.score(b)
        gap = MIN_LENGTH_GAP if self.kind == "length" else 1
        if abs(sa - sb) < gap:
            return None
        return sa > sb


USERS = {
    "storage": User("storage", "I work with files, paths and directories on disk.", "topic"),
    "text": User("text", "I care about strings, characters, words and lines of text.", "topic"),
    "net": User("net", "I write servers and clients: sockets, connections and URLs.", "topic"),
    "brief": User("brief", "Keep it short.", "length"),
    "verbose": User("verbose", "Give me long, detailed descriptions.", "length"),
}


def get_user(name: str) -> User:
    """The simulated user called ``name``; an unknown name lists the valid ones."""
    if name not in USERS:
        raise UserError(f"unknown simulated user {name!r}; choose one of {', '.join(USERS)}")
    return USERS[name]


def user_pairs(user: User | str, split: str = "train", n: int = 48, seed: int = 0) -> list[dict]:
    """Up to ``n`` preference pairs (prompt, chosen, rejected) of one user from one split.

    For every prompt whose lines the user scores differently, pairs are drawn at random
    among the ordered (better, worse) lines, at most two per prompt, so no frequent opening
    word ("Return") dominates. Deterministic for a seed.
    """
    user = get_user(user) if isinstance(user, str) else user
    if n < 1:
        raise UserError(f"need at least one pair per user, got n={n}")
    groups: dict[str, list[str]] = defaultdict(list)
    for row in demonstrations(split, seed):
        groups[row["prompt"]].append(row["response"])
    rng = random.Random(f"{seed}:{user.name}:{split}")
    pairs = []
    for prompt in sorted(groups):
        # 40 lines at most per prompt: all pairs of "Return"'s 785 lines would be 300k.
        responses = rng.sample(groups[prompt], min(40, len(groups[prompt])))
        ordered = [
            (a, b)
            for i, a in enumerate(responses)
            for b in responses[i + 1 :]
            if user.prefers(a, b) is not None
        ]
        for a, b in rng.sample(ordered, min(2, len(ordered))):
            chosen, rejected = (a, b) if user.prefers(a, b) else (b, a)
            pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    rng.shuffle(pairs)
    return pairs[:n]


def agreement(user: User, rows: list[dict]) -> float:
    """Fraction of preference rows whose choice ``user`` shares (1.0 on their own pairs)."""
    votes = [user.prefers(r["chosen"], r["rejected"]) for r in rows]
    return sum(v is True for v in votes) / max(1, len(votes))


def _register(name: str) -> None:
    @register_task(f"user-{name}")
    def build(seed: int = 0, n_train: int = 48, n_val: int = 64) -> Task:
        return Task(
            name=f"user-{name}",
            kind="preference",
            train=user_pairs(name, "train", n_train, seed),
            val=user_pairs(name, "val", n_val, seed),
            description=f"simulated user {name!r}'s preferences: {USERS[name].profile}",
        )


for _name in USERS:  # user-storage, user-text, user-net, user-brief, user-verbose
    _register(_name)
