"""Scrub secrets and personal data out of training text before it is trained on.

Language models memorise rare strings from their training data and can be made to
repeat them (Carlini et al. 2019, 2021), so e-mail addresses, IP addresses, API keys,
tokens, passwords and private keys are replaced by a placeholder (<EMAIL>, <IP>,
<SECRET>) in data preparation. Each kind is a pattern for its documented format:

- e-mail: local@domain.tld (RFC 5322's common form, not its full grammar);
- IPv4: four dot-separated numbers 0-255; IPv6: eight groups of hex, or a '::' form;
- keys and tokens with a known prefix: AWS access keys (AKIA + 16), GitHub tokens
  (ghp_/gho_/ghu_/ghs_/ghr_ + 36), Slack tokens (xox?-), OpenAI-style keys (sk-...),
  JSON Web Tokens (three base64url parts, the first two starting "eyJ");
- PEM private-key blocks (-----BEGIN ... PRIVATE KEY----- to -----END ...-----);
- an assignment of a credential: password=..., api_key: "...", token=... (the value).

Patterns miss secrets of unknown formats (recall) and catch look-alikes, e.g. a version
number such as 1.2.3.4 (precision); score_scrubber measures both on planted examples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
PATTERNS: dict[str, tuple[str, re.Pattern]] = {
    "private_key": (
        "<SECRET>",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    ),
    "jwt": ("<SECRET>", re.compile(r"\beyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}")),
    "aws_key": ("<SECRET>", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    "github_token": ("<SECRET>", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b")),
    "slack_token": ("<SECRET>", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    "api_key": ("<SECRET>", re.compile(r"\bsk-[A-Za-z0-9_-]{20,}")),
    "credential": (
        "<SECRET>",
        re.compile(
            r"(?i)\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)"
            r"\s*[:=]\s*[\"']?(?P<value>[^\s\"']{6,})"
        ),
    ),
    "email": (
        "<EMAIL>",
        re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    ),
    "ipv6": (
        "<IP>",
        re.compile(
            r"(?<![\w:])(?:(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}"
            r"|(?:[0-9a-fA-F]{1,4}:){1,6}(?::[0-9a-fA-F]{1,4}){1,6})(?![\w:])"
        ),
    ),
    # not inside a longer dotted number (a version 1.2.3.4.5), but a sentence's full stop
    # may follow
    "ipv4": ("<IP>", re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")),
}


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int


def find_secrets(text: str) -> list[Finding]:
    """Every match, earlier kinds first where two overlap (a key inside a PEM block is
    one private key), sorted by position."""
    taken: list[Finding] = []
    for kind, (_, pattern) in PATTERNS.items():
        for m in pattern.finditer(text):
            start, end = m.span("value") if "value" in pattern.groupindex else m.span()
            if not any(start < f.end and f.start < end for f in taken):
                taken.append(Finding(kind, start, end))
    return sorted(taken, key=lambda f: f.start)


def scrub(text: str) -> tuple[str, list[Finding]]:
    """``text`` with every finding replaced by its kind's placeholder, and the findings
    (positions in the original text)."""
    findings = find_secrets(text)
    out, pos = [], 0
    for f in findings:
        out += [text[pos : f.start], PATTERNS[f.kind][0]]
        pos = f.end
    return "".join(out + [text[pos:]]), findings


def score_scrubber(texts: list[str], planted: list[list[tuple[int, int]]]) -> dict[str, float]:
    """Precision and recall of find_secrets against the planted spans of each text: a
    planted secret is found when a finding overlaps it; a finding is right when it
    overlaps a planted secret."""
    if len(texts) != len(planted):
        raise ValueError(f"{len(texts)} texts but {len(planted)} lists of planted spans")
    hit = n_planted = right = n_found = 0
    for text, spans in zip(texts, planted):
        found = find_secrets(text)
        n_found += len(found)
        n_planted += len(spans)
        right += sum(any(f.start < e and s < f.end for s, e in spans) for f in found)
        hit += sum(any(f.start < e and s < f.end for f in found) for s, e in spans)
    precision = right / n_found if n_found else 1.0
    recall = hit / n_planted if n_planted else 1.0
    return {"precision": precision, "recall": recall, "planted": n_planted, "found": n_found}
