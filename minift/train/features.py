"""Pooled features of a frozen classifier, computed once for methods that train on them.

A classification model (minift.model.heads.SequenceClassifier) maps a text to one pooled
vector before its head. With the backbone frozen that vector never changes, so techniques
that work on features (SMOTE, mixup, a domain classifier, a head fitted in closed form)
compute it once for every row and train on the (n, C) matrix instead of the texts.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


@torch.no_grad()
def pooled_features(
    model: torch.nn.Module, batches: Iterable[dict], dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The pooled features (n, C) of every row of ``batches`` (dicts with ``idx`` and
    ``attention_mask``, as minift.data.batching.classification_batch makes them) and their
    labels (n,), or None when the batches carry none. The model's mode is restored."""
    if not hasattr(model, "features"):
        raise ValueError(f"{type(model).__name__} has no pooled features; use a SequenceClassifier")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats, labels = [], []
    for b in batches:
        x = model.features(b["idx"].to(device), attention_mask=b["attention_mask"].to(device))
        feats.append(x.to(dtype).cpu())
        if "labels" in b:
            labels.append(b["labels"].cpu())
    model.train(was_training)
    if not feats:
        raise ValueError("no batches to extract features from")
    return torch.cat(feats), (torch.cat(labels) if labels else None)
