"""Counterfactual texts: the same sentence with the protected attribute swapped.

A word-level swap along given pairs (he <-> she, his <-> her, a name of one group <-> a
name of the other), keeping each word's capitalisation and punctuation. Used two ways:
to test a model (does the prediction move when only the attribute does? Huang et al.
2020) and to train it (counterfactual data augmentation adds every training row's swap
with the same label, Lu et al. 2020).
"""

from __future__ import annotations

import re

GENDER_PAIRS = (("he", "she"), ("him", "her"), ("his", "her"), ("himself", "herself"),
                ("man", "woman"), ("men", "women"), ("boy", "girl"), ("father", "mother"),
                ("son", "daughter"), ("brother", "sister"), ("mr", "mrs"))  # fmt: skip
_WORD = re.compile(r"[A-Za-z]+")


def swap_map(pairs) -> dict[str, str]:
    """Both directions of each pair; the first pair to name a word wins ("her" -> "him"
    comes before "her" -> "his": her is ambiguous, as in every such list)."""
    out: dict[str, str] = {}
    for a, b in pairs:
        out.setdefault(a.lower(), b.lower())
        out.setdefault(b.lower(), a.lower())
    return out


def swap_attribute(text: str, pairs=GENDER_PAIRS) -> str:
    """``text`` with every word of a pair replaced by its partner, case kept."""
    table = swap_map(pairs)

    def repl(m: re.Match) -> str:
        w = m.group(0)
        new = table.get(w.lower())
        if new is None:
            return w
        if w.isupper() and len(w) > 1:
            return new.upper()
        return new.capitalize() if w[0].isupper() else new

    return _WORD.sub(repl, text)


def counterfactual_rows(
    rows: list[dict], pairs=GENDER_PAIRS, group_swap: dict | None = None
) -> list[dict]:
    """Counterfactual data augmentation: each row's swap, same label (rows with nothing to
    swap are left out, they would be duplicates); ``group_swap`` maps a row's ``group``
    to its counterpart's, e.g. {0: 1, 1: 0}."""
    out = []
    for r in rows:
        swapped = swap_attribute(r["text"], pairs)
        if swapped != r["text"]:
            row = {**r, "text": swapped}
            if group_swap is not None and "group" in r:
                row["group"] = group_swap[r["group"]]
            out.append(row)
    return out
