"""How far apart two domains are, as seen by a classifier: the proxy A-distance.

Ben-David, Blitzer, Crammer and Pereira (2007), "Analysis of representations for domain
adaptation"; Ben-David et al. (2010), "A theory of learning from different domains". The
target error of a classifier is bounded by its source error plus the H-divergence of the
two domains' feature distributions (plus the error of the best joint classifier). The
divergence is estimated by training a classifier to tell the domains apart: with its
held-out error eps,

    d_A = 2 (1 - 2 eps)

which is 0 when the domains cannot be told apart (eps = 0.5) and 2 when they are
perfectly separable. Ganin et al. (2016) use it to show that DANN's features are harder
to tell apart than the source-only ones. Here the classifier is linear (an L2-penalised
logistic regression, fitted to convergence), trained on half of each domain's rows and
tested on the other half; eps is clamped to 0.5 (a classifier worse than chance says
the domains look alike, not that they are "negatively" apart).
"""

from __future__ import annotations

import torch

from minift.errors import UserError
from minift.train.features import fit_linear_head


def proxy_a_distance(
    source: torch.Tensor, target: torch.Tensor, seed: int = 0, l2: float = 1e-2
) -> float:
    """2 (1 - 2 eps), eps the held-out error of a linear source-vs-target classifier."""
    if len(source) < 4 or len(target) < 4:
        raise UserError(f"the A-distance needs >= 4 rows a domain, got {len(source)} and {len(target)}")  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    # the same number from each domain, so that a majority guess scores exactly 0.5
    n = min(len(source), len(target))
    s = source[torch.randperm(len(source), generator=g)[:n]].double()
    t = target[torch.randperm(len(target), generator=g)[:n]].double()
    half = n // 2
    X_fit = torch.cat([s[:half], t[:half]])
    y_fit = torch.cat([torch.zeros(half), torch.ones(half)]).long()
    X_test = torch.cat([s[half:], t[half:]])
    y_test = torch.cat([torch.zeros(n - half), torch.ones(n - half)]).long()
    W, b = fit_linear_head(X_fit, y_fit, 2, l2=l2)
    err = float(((X_test @ W.T + b).argmax(-1) != y_test).double().mean())
    return 2.0 * (1.0 - 2.0 * min(err, 0.5))
