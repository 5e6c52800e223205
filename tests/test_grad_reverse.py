"""The gradient-reversal layer: identity forward, -lambda times the true gradient back,
checked against finite differences in float64 (and by gradcheck where lambda = -1 makes
the reversed gradient the true one)."""

import math

import pytest
import torch

from minift.model.grad_reverse import GradientReversal, dann_lambda, grad_reverse


def f(x, w, b):
    return torch.tanh(x @ w + b).pow(2).sum() + (x**3).mean()


@pytest.mark.parametrize("lambd", [0.0, 0.3, 1.0, 2.5])
def test_backward_is_minus_lambda_times_finite_differences(lambd):
    g = torch.Generator().manual_seed(int(lambd * 10))
    x = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(5, 7, dtype=torch.float64, generator=g)
    b = torch.randn(7, dtype=torch.float64, generator=g)
    (got,) = torch.autograd.grad(f(grad_reverse(x, lambd), w, b), x)
    # central differences of f itself (the layer is the identity going forward)
    eps, num = 1e-6, torch.zeros_like(x)
    with torch.no_grad():
        for i in range(x.numel()):
            d = torch.zeros_like(x).flatten()
            d[i] = eps
            d = d.view_as(x)
            num.view(-1)[i] = (f(x + d, w, b) - f(x - d, w, b)) / (2 * eps)
    assert torch.allclose(got, -lambd * num, atol=1e-8, rtol=1e-6)


def test_gradcheck_where_the_reversed_gradient_is_the_true_one():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: grad_reverse(t, -1.0) * t.sin(), (x,))
    assert torch.autograd.gradgradcheck(lambda t: grad_reverse(t, -1.0).pow(2), (x,))


def test_forward_is_the_identity_and_the_module_reverses_what_comes_after_it():
    x = torch.randn(6, 4, requires_grad=True)
    layer = GradientReversal(0.5)
    y = layer(x)
    assert torch.equal(y, x)
    head = torch.nn.Linear(4, 2, bias=True)
    torch.nn.init.normal_(head.bias)
    (g_rev,) = torch.autograd.grad(head(y).sum(), x)
    (g,) = torch.autograd.grad(head(x).sum(), x)
    assert torch.allclose(g_rev, -0.5 * g)
    # the head's own gradient is untouched: only what flows back through the layer flips
    head.zero_grad()
    head(layer(x)).square().sum().backward()
    w_rev = head.weight.grad.clone()
    head.zero_grad()
    head(x).square().sum().backward()
    assert torch.allclose(w_rev, head.weight.grad)


def test_dann_schedule():
    assert dann_lambda(0.0) == 0.0
    assert math.isclose(dann_lambda(1.0, final=0.5), 0.5 * (2 / (1 + math.exp(-10)) - 1))
    ramp = [dann_lambda(p / 10) for p in range(11)]
    assert all(a < b for a, b in zip(ramp, ramp[1:]))
    with pytest.raises(ValueError, match=r"progress must lie in \[0, 1\]"):
        dann_lambda(1.5)
