"""Random over- and under-sampling: change how often each class is seen, not the loss.

- **oversampling** repeats minority rows: each class is drawn with probability 1/K and a
  row uniformly within its class, so an epoch's worth of draws sees every class equally
  often (minority rows many times over, which is how it overfits them);
- **undersampling** keeps a random n_min rows of every class and drops the rest (the
  majority's information is thrown away, which is its cost).

Both are seeded: the same seed gives the same rows. Japkowicz and Stephen (2002) and
Buda, Maki and Mazurowski (2018) compare them on the same footing.
"""

from __future__ import annotations

import torch

from minift.errors import UserError
from minift.seeding import batch_generator


def _by_class(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    y = torch.as_tensor(labels, dtype=torch.long)
    groups = [torch.nonzero(y == c).flatten() for c in range(num_classes)]
    empty = [c for c, g in enumerate(groups) if len(g) == 0]
    if empty:
        raise UserError(f"classes {empty} have no row to resample")
    return groups


def oversample_indices(
    labels: torch.Tensor | list[int], num_classes: int, n: int, generator: torch.Generator
) -> torch.Tensor:
    """n row indices: a class uniformly at random, then one of its rows uniformly."""
    groups = _by_class(torch.as_tensor(labels), num_classes)
    cls = torch.randint(0, num_classes, (n,), generator=generator)
    pick = torch.rand(n, generator=generator, dtype=torch.float64)
    sizes = torch.tensor([len(g) for g in groups])
    within = (pick * sizes[cls]).long().clamp_max(sizes[cls] - 1)
    return torch.stack([groups[c][i] for c, i in zip(cls.tolist(), within.tolist())])


def undersample_indices(
    labels: torch.Tensor | list[int], num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """A random min_c n_c rows of every class, sorted (a fixed, smaller training set)."""
    groups = _by_class(torch.as_tensor(labels), num_classes)
    n_min = min(len(g) for g in groups)
    kept = [g[torch.randperm(len(g), generator=generator)[:n_min]] for g in groups]
    return torch.sort(torch.cat(kept)).values


def balanced_rows(
    labels: list[int], num_classes: int, batch_size: int, seed: int, step: int, micro: int = 0
) -> torch.Tensor:
    """The rows of one oversampled batch, a pure function of (seed, step, micro) like
    minift.seeding.sample_rows, so a resumed run draws the same batches."""
    return oversample_indices(labels, num_classes, batch_size, batch_generator(seed, step, micro))


def random_oversample(
    labels: torch.Tensor | list[int], num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """Every row once, plus rows of each smaller class drawn with replacement until it has
    as many as the largest (a fixed, larger training set; imbalanced-learn's
    RandomOverSampler)."""
    groups = _by_class(torch.as_tensor(labels), num_classes)
    top = max(len(g) for g in groups)
    extra = [g[torch.randint(0, len(g), (top - len(g),), generator=generator)] for g in groups]
    return torch.cat([torch.cat(groups), *extra])
