"""Text cleaning: the normalisation every document goes through before dedup and training.

Pretraining pipelines (for example Raffel et al., 2020, C4; Rae et al., 2021, MassiveText)
normalise text and drop fragments too short to teach anything. Here that means:

- Unicode NFKC normalisation, so that visually identical strings (a full-width ``Ａ`` and
  ``A``, a ligature ``ﬁ`` and ``fi``) become the same bytes and the same tokens;
- tabs expanded to spaces and trailing whitespace removed, so whitespace runs do not waste
  vocabulary on layout;
- runs of blank lines collapsed to one blank line (paragraph breaks survive);
- leading and trailing blank space stripped.
"""

from __future__ import annotations

import re
import unicodedata

TAB_SIZE = 4
MIN_CHARS = 24
MIN_ALPHA = 0.25

_BLANK_RUNS = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Normalise ``text`` (NFKC, tabs, trailing spaces, blank-line runs, outer strip)."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.expandtabs(TAB_SIZE).rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


def is_useful(text: str, min_chars: int = MIN_CHARS, min_alpha: float = MIN_ALPHA) -> bool:
    """Keep ``text`` if it has at least ``min_chars`` characters and is mostly words.

    ``min_chars=24`` drops one-liners such as ``"Return self."`` or ``"Constructor."``
    that repeat across thousands of methods; ``min_alpha`` (the fraction of letters among
    non-space characters) drops tables of numbers and symbol art.
    """
    if len(text) < min_chars:
        return False
    visible = len(text) - sum(map(str.isspace, text))
    return visible > 0 and sum(map(str.isalpha, text)) >= min_alpha * visible
