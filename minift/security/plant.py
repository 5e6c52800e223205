"""Planted secrets: realistic fakes of each kind the scrubber looks for, put into real
text at known positions, so its precision and recall can be measured."""

from __future__ import annotations

import random
import string

_ALNUM = string.ascii_letters + string.digits
_UPPER = string.ascii_uppercase + string.digits
_NAMES = ["alice", "bob.smith", "j.doe", "maintainer", "ops-team", "r2d2"]
_DOMAINS = ["example.com", "mail.python.org", "corp.internal.net", "uni-bonn.de"]


def _word(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def fake_secret(kind: str, rng: random.Random) -> str:
    """A random string in the format of ``kind`` (one of KINDS)."""
    if kind == "email":
        return f"{rng.choice(_NAMES)}{rng.randint(1, 99)}@{rng.choice(_DOMAINS)}"
    if kind == "ipv4":
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    if kind == "ipv6":
        return ":".join(f"{rng.randint(0, 0xFFFF):x}" for _ in range(8))
    if kind == "aws_key":
        return "AKIA" + _word(rng, _UPPER, 16)
    if kind == "github_token":
        return "ghp_" + _word(rng, _ALNUM, 36)
    if kind == "api_key":
        return "sk-" + _word(rng, _ALNUM, 32)
    if kind == "jwt":
        return "eyJ" + _word(rng, _ALNUM, 20) + ".eyJ" + _word(rng, _ALNUM, 30) + "." + _word(rng, _ALNUM, 24)  # fmt: skip
    if kind == "password":
        return _word(rng, _ALNUM + "!#$%&*", 12)
    raise ValueError(f"unknown secret kind {kind!r}; kinds: {', '.join(KINDS)}")


KINDS = ("email", "ipv4", "ipv6", "aws_key", "github_token", "api_key", "jwt", "password")
_CONTEXT = {
    "password": "password={}",
    "email": "Contact {} for access.",
    "ipv4": "The server listens on {}.",
    "ipv6": "Bind to {} first.",
}


def plant_secrets(
    texts: list[str], rate: float, seed: int = 0
) -> tuple[list[str], list[list[tuple[int, int]]], list[list[str]]]:
    """(texts, the planted spans of each, their kinds): a share ``rate`` of the texts get
    one secret of a random kind, appended in a short context sentence."""
    rng = random.Random(seed)
    out, spans, kinds = [], [], []
    for text in texts:
        if rng.random() >= rate:
            out.append(text)
            spans.append([])
            kinds.append([])
            continue
        kind = rng.choice(KINDS)
        secret = fake_secret(kind, rng)
        sentence = _CONTEXT.get(kind, "Use the key {} here.").format(secret)
        prefix = text + " "
        start = len(prefix) + sentence.index(secret)
        out.append(prefix + sentence)
        spans.append([(start, start + len(secret))])
        kinds.append([kind])
    return out, spans, kinds
