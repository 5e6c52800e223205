r"""Model soups: average the weights of fine-tuned models instead of their predictions
(Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models
improves accuracy without increasing inference time").

Models fine-tuned from the same pretrained weights with different hyperparameters or
seeds often lie in one basin of the loss, where the average of their weights

    theta_soup = (1/K) sum_k theta_k

is itself a good model: an ensemble's benefit at the inference cost of one model.
- **Uniform soup**: all K models averaged.
- **Greedy soup**: models sorted by validation score, each added to the soup only if the
  soup's validation score does not drop (the paper's recipe; never worse than the best
  single model on validation).

Adapters average the same way: for LoRA the model's weight is W + s B A, so merging each
adapter into its copy of W and averaging the merged weights averages the updates s B_k A_k
(averaging A and B separately would not: the mean of products is not the product of means).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from minift.errors import UserError


def average_state(
    states: Sequence[dict[str, torch.Tensor]], weights=None
) -> dict[str, torch.Tensor]:
    """The (weighted) mean of state dicts with the same keys and shapes; non-float tensors
    (counters, masks) must agree and are taken from the first."""
    if not states:
        raise UserError("a soup needs at least one model")
    keys = list(states[0])
    w = torch.full((len(states),), 1 / len(states), dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)  # fmt: skip
    if w.shape != (len(states),) or (w < 0).any() or abs(float(w.sum()) - 1) > 1e-6:
        raise UserError(f"soup weights must be {len(states)} non-negative numbers summing to 1")
    out = {}
    for i, s in enumerate(states):
        if list(s) != keys:
            raise UserError(f"model {i} has other parameters than model 0: only fine-tunes of one architecture can be souped")  # fmt: skip
    for k in keys:
        first = states[0][k]
        if any(s[k].shape != first.shape for s in states):
            raise UserError(f"{k!r} has different shapes across the models")
        if not first.is_floating_point():
            if any(not torch.equal(s[k], first) for s in states):
                raise UserError(f"{k!r} is not a float tensor and differs across the models")
            out[k] = first.clone()
            continue
        acc = sum(wi * s[k].double() for wi, s in zip(w.tolist(), states))
        out[k] = acc.to(first.dtype)
    return out


def uniform_soup(models: Sequence[nn.Module]) -> nn.Module:
    """A copy of models[0] holding the mean of all the models' weights."""
    soup = copy.deepcopy(models[0]) if models else None
    if soup is None:
        raise UserError("a soup needs at least one model")
    soup.load_state_dict(average_state([m.state_dict() for m in models]))
    return soup.eval()


def greedy_soup(
    models: Sequence[nn.Module], score: Callable[[nn.Module], float]
) -> tuple[nn.Module, list[int]]:
    """(soup, indices of the models in it): Wortsman et al.'s greedy recipe, higher score
    better, ``score`` on held-out validation data."""
    if not models:
        raise UserError("a soup needs at least one model")
    order = sorted(range(len(models)), key=lambda i: -score(models[i]))
    chosen = [order[0]]
    best = score(models[order[0]])
    for i in order[1:]:
        trial = uniform_soup([models[j] for j in [*chosen, i]])
        s = score(trial)
        if s >= best:
            chosen, best = [*chosen, i], s
    return uniform_soup([models[j] for j in chosen]), chosen
