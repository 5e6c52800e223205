r"""Combining the predictions of several models: averaging, fitted weights, stacking.

M members each give class probabilities p_m(y | x) for N examples (an (M, N, C) array).

- **Uniform averaging** p(y|x) = (1/M) sum_m p_m(y|x): the plain ensemble (Dietterich
  2000; Lakshminarayanan et al. 2017 for deep ensembles). Averaging probabilities, not
  logits, keeps the result a calibrated mixture.
- **Fitted weights** p(y|x) = sum_m w_m p_m(y|x), w on the simplex,
  chosen to minimise the validation negative log-likelihood -mean log p(y_i|x_i): the
  convex combination of Breiman's "stacked regressions" (1996) restricted to weights
  that sum to one. One weight per member, the same for every input.
- **Stacking** (Wolpert 1992): a second-level model learns the prediction from the
  members' outputs. Here multinomial logistic regression on the concatenated log
  probabilities z(x) = [log p_1(.|x); ...; log p_M(.|x)] (M C features), with an L2
  penalty, p(y|x) = softmax(W z(x) + b)_y, fitted on held-out predictions so that it
  learns how members err on data they were not trained on.

All three are fitted on a validation split and must be judged on another one.
"""

from __future__ import annotations

import numpy as np
import torch

from minift.errors import UserError

EPS = 1e-12  # floor on probabilities before a log: a member certain and wrong is not -inf


def check_probs(probs, labels=None) -> torch.Tensor:
    """(M, N, C) member probabilities as float64, checked; labels (N,) in [0, C)."""
    p = torch.as_tensor(np.asarray(probs), dtype=torch.float64)
    if p.dim() != 3 or min(p.shape) < 1:
        raise UserError(f"member probabilities must be (members, examples, classes), got {tuple(p.shape)}")  # fmt: skip
    if (p < 0).any() or not torch.allclose(p.sum(-1), torch.ones(()).double(), atol=1e-4):
        raise UserError("member probabilities must be non-negative and sum to 1 over classes")
    if labels is not None:
        y = torch.as_tensor(np.asarray(labels))
        if y.shape != (p.shape[1],):
            raise UserError(
                f"labels must be ({p.shape[1]},), one per example, got {tuple(y.shape)}"
            )
        if y.min() < 0 or y.max() >= p.shape[2]:
            raise UserError(f"labels must lie in [0, {p.shape[2] - 1}]")
    return p


def uniform_average(probs) -> torch.Tensor:
    """(N, C): the mean of the members' probabilities."""
    return check_probs(probs).mean(0)


def weighted_average(probs, weights) -> torch.Tensor:
    """(N, C): sum_m w_m p_m with one weight per member (w on the simplex)."""
    p = check_probs(probs)
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
    if w.shape != (p.shape[0],) or (w < 0).any() or abs(float(w.sum()) - 1) > 1e-6:
        raise UserError(f"weights must be {p.shape[0]} non-negative numbers summing to 1, got {w.tolist()}")  # fmt: skip
    return torch.einsum("m,mnc->nc", w, p)


def nll(probs: torch.Tensor, labels) -> float:
    """Mean negative log-likelihood of (N, C) probabilities at the labels."""
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return float(-(probs[torch.arange(len(y)), y].clamp_min(EPS)).log().mean())


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """The Euclidean projection of v onto {w >= 0, sum w = 1} (Duchi et al. 2008): shift
    by the threshold theta that makes the positive parts sum to one."""
    u, _ = torch.sort(v, descending=True)
    cumulative = torch.cumsum(u, 0) - 1
    k = torch.arange(1, len(v) + 1, dtype=v.dtype)
    rho = int((u - cumulative / k > 0).nonzero().max())
    return (v - cumulative[rho] / (rho + 1)).clamp_min(0)


def fit_weights(probs, labels, steps: int = 500) -> np.ndarray:
    """Simplex weights minimising the validation NLL of the weighted average.

    Projected gradient descent with backtracking, float64: the objective
    -mean log(sum_m w_m p_m(y_i|x_i)) is convex in w, and the projection lets a weight
    reach exactly 0 (a softmax parametrisation never does), so a useless member is dropped.
    """
    p = check_probs(probs, labels)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    picked = p[:, torch.arange(len(y)), y].clamp_min(EPS)  # (M, N): each member's p(truth)

    def loss(w: torch.Tensor) -> torch.Tensor:
        return -(w @ picked).clamp_min(EPS).log().mean()

    w = torch.full((p.shape[0],), 1 / p.shape[0], dtype=torch.float64)
    step = 1.0
    for _ in range(steps):
        w.requires_grad_(True)
        value = loss(w)
        (grad,) = torch.autograd.grad(value, w)
        w = w.detach()
        while step > 1e-12:  # backtracking: accept the first step that decreases the loss
            trial = project_simplex(w - step * grad)
            if loss(trial) <= value - 1e-4 * float(grad @ (w - trial)):
                break
            step /= 2
        if torch.equal(trial, w) or step <= 1e-12:
            break
        w, step = trial, step * 2
    return w.numpy()


class Stacker:
    """Multinomial logistic regression on the members' log-probabilities (stacking).

    The loss is sum_i -log softmax(W z_i + b)_{y_i} + (l2 / 2) ||W||^2 (b unpenalised),
    the objective of scikit-learn's LogisticRegression with C = 1 / l2, minimised by
    L-BFGS in float64."""

    def __init__(self, l2: float = 1.0, steps: int = 500) -> None:
        if not l2 > 0:
            raise UserError(f"stacking's l2 must be > 0, got {l2}")
        self.l2, self.steps = l2, steps
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    @staticmethod
    def features(probs) -> torch.Tensor:
        p = check_probs(probs)
        return p.clamp_min(EPS).log().permute(1, 0, 2).reshape(p.shape[1], -1)  # (N, M C)

    def fit(self, probs, labels) -> Stacker:
        p = check_probs(probs, labels)
        z = self.features(p)
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        w = torch.zeros(p.shape[2], z.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(p.shape[2], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=self.steps, tolerance_grad=1e-10,
                                tolerance_change=1e-14, line_search_fn="strong_wolfe")  # fmt: skip

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(z @ w.t() + b, y, reduction="sum")
            loss = loss + 0.5 * self.l2 * (w**2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.weight, self.bias = w.detach(), b.detach()
        return self

    def predict_proba(self, probs) -> torch.Tensor:
        if self.weight is None:
            raise UserError("the stacker is not fitted yet: call fit(probs, labels) first")
        z = self.features(probs)
        if z.shape[1] != self.weight.shape[1]:
            raise UserError(f"the stacker was fitted on {self.weight.shape[1]} features, got {z.shape[1]}")  # fmt: skip
        return torch.softmax(z @ self.weight.t() + self.bias, -1)


def choose_l2(probs, labels, grid=(0.1, 1.0, 10.0, 100.0), folds: int = 3, seed: int = 0) -> float:
    """The stacker's L2 strength with the lowest k-fold cross-validated NLL on (probs,
    labels): a few hundred validation rows and M C features overfit easily, so the
    penalty is chosen on held-out folds rather than fixed."""
    p = check_probs(probs, labels)
    y = np.asarray(labels)
    n = p.shape[1]
    if n < folds:
        raise UserError(f"{folds}-fold cross-validation needs at least {folds} rows, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    losses = []
    for l2 in grid:
        total = 0.0
        for k in range(folds):
            held = order[k::folds]
            kept = np.setdiff1d(order, held)
            fit = Stacker(l2, steps=60).fit(p[:, kept], y[kept])  # close enough to rank l2s
            total += nll(fit.predict_proba(p[:, held]), y[held]) * len(held)
        losses.append(total / n)
    return float(grid[int(np.argmin(losses))])
