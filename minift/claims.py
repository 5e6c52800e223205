"""A lesson's claims, each checked against the lesson's own numbers as it runs.

A lesson states what its run shows through :func:`claim`, never as a sentence written
before the run: the claim prints as holding or not holding, with the numbers behind it,
and is recorded in ``claims.json`` in the lesson's output folder. Two kinds:

- a *claim* (``at_scale=False``) should hold on every base, the fast test base included
  (pretrained beats scratch; the merged model equals the unmerged one). The lesson tests
  run every lesson in fast mode and fail when one of these does not hold.
- a *scale claim* (``at_scale=True``) is what the literature reports at larger scale and
  may or may not show on a 1.3M-parameter base (LoRA matching full fine-tuning): it is
  printed as "holds here" or "does not hold here", and a failure is information, not a bug.

    claim("pretrained beats scratch", acc_pre > acc_scratch, f"{acc_pre:.3f} vs {acc_scratch:.3f}")
"""

from __future__ import annotations

import pathlib

from minift.io import write_json

_CLAIMS: dict[pathlib.Path, list[dict]] = {}


def claim(text: str, holds: bool, evidence: str = "", *, at_scale: bool = False, out=None) -> bool:
    """Print and record one claim; return whether it holds. ``out`` is the lesson's output
    folder (default: $MINIFT_OUT), where claims.json is rewritten after every claim."""
    from minift.utils import output_dir

    holds = bool(holds)
    if at_scale:
        mark = "holds here" if holds else "does not hold here"
    else:
        mark = "holds" if holds else "DOES NOT HOLD"
    print(f"[{mark}] {text}" + (f" ({evidence})" if evidence else ""))
    folder = pathlib.Path(out) if out is not None else output_dir()
    records = _CLAIMS.setdefault(folder.resolve(), [])
    records.append({"claim": text, "holds": holds, "evidence": evidence, "at_scale": at_scale})
    write_json(folder / "claims.json", records)
    return holds


def read_claims(folder) -> list[dict]:
    """The claims a run recorded under ``folder`` (any depth), in the order they were made."""
    import json

    found = []
    for path in sorted(pathlib.Path(folder).rglob("claims.json")):
        found.extend(json.loads(path.read_text()))
    return found
