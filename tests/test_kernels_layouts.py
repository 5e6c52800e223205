"""Sparse-attention block layouts against hand-checked matrices and their definitions."""

import pytest
import torch
from minift.kernels import (
    PATTERNS,
    bigbird_layout,
    dense_layout,
    fixed_layout,
    global_layout,
    layout_to_mask,
    make_layout,
    sliding_window_layout,
    strided_layout,
)


def grid(rows):
    return torch.tensor(rows, dtype=torch.bool)


def by_rule(n, rule, causal):
    """A layout written element by element from a pattern's definition."""
    out = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            out[i, j] = rule(i, j) and (j <= i or not causal)
    return out


def test_sliding_window_by_hand():
    both = grid([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]])
    assert torch.equal(sliding_window_layout(8, 2, window=2)[0], both)
    assert torch.equal(sliding_window_layout(8, 2, window=2, causal=True)[0], both.tril())
    dilated = grid(
        [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [0, 0, 1, 0, 1]]
    )
    assert torch.equal(sliding_window_layout(10, 2, window=2, dilation=2, causal=True)[0], dilated)


def test_strided_by_hand():
    expected = grid(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [1, 0, 1, 1, 1]]
    )
    assert torch.equal(strided_layout(5, 1, stride=2)[0], expected)


def test_fixed_by_hand():
    expected = grid(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 1, 0, 1, 1]]
    )
    assert torch.equal(fixed_layout(10, 2, stride=2, n_summary=1)[0], expected)


def test_global_by_hand():
    expected = grid([[1, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]])
    assert torch.equal(global_layout(4, 1, n_global=1)[0], expected)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("param", [1, 2, 3])
def test_patterns_match_their_definitions(causal, param):
    n = 9
    cases = [
        (sliding_window_layout(n, 1, param, causal=causal), lambda i, j: abs(i - j) < param),
        (
            sliding_window_layout(n, 1, 2, dilation=param, causal=causal),
            lambda i, j: abs(i - j) < 2 * param and (i - j) % param == 0,
        ),
        (
            strided_layout(n, 1, param, causal=causal),
            lambda i, j: abs(i - j) < param or (i - j) % param == 0,
        ),
        (
            fixed_layout(n, 1, param + 1, n_summary=param, causal=causal),
            lambda i, j: i // (param + 1) == j // (param + 1) or j % (param + 1) >= 1,
        ),
        (global_layout(n, 1, param, causal=causal), lambda i, j: i < param or j < param),
        (dense_layout(n, 1, causal=causal), lambda i, j: True),
    ]
    for layout, rule in cases:
        assert layout.shape == (1, n, n) and layout.dtype == torch.bool
        assert torch.equal(layout[0], by_rule(n, rule, causal))


@pytest.mark.parametrize("causal", [False, True])
def test_bigbird_is_window_global_and_random(causal):
    n, n_random = 12, 2
    layout = bigbird_layout(
        n * 4, 4, window=2, n_global=1, n_random=n_random, seed=3, causal=causal, n_heads=2
    )
    base = sliding_window_layout(n * 4, 4, 2, causal=causal) | global_layout(
        n * 4, 4, 1, causal=causal
    )
    assert layout.shape == (2, n, n)
    assert (layout >= base).all()  # window and global blocks all present
    extra = (layout & ~base).sum(-1)
    available = (
        (~base).sum(-1)
        if not causal
        else (~base & torch.ones(n, n, dtype=torch.bool).tril()).sum(-1)
    )
    assert torch.equal(extra, available.clamp(max=n_random).expand(2, n))  # r random where possible
    if causal:
        assert not layout.triu(1).any()
    again = bigbird_layout(
        n * 4, 4, window=2, n_global=1, n_random=n_random, seed=3, causal=causal, n_heads=2
    )
    other = bigbird_layout(
        n * 4, 4, window=2, n_global=1, n_random=n_random, seed=4, causal=causal, n_heads=2
    )
    assert torch.equal(layout, again)  # seeded
    assert not torch.equal(layout, other)
    assert not torch.equal(layout[0], layout[1])  # heads draw independently


def test_layout_to_mask_by_hand():
    layout = grid([[1, 0], [1, 1]])
    expected = grid([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(layout_to_mask(layout, 2)[0], expected)
    # One query at position 2 (after two cached keys) sees keys 0..2.
    assert torch.equal(layout_to_mask(layout, 2, tq=1, tk=3)[0], grid([[1, 1, 1]]))


def test_make_layout_by_name():
    assert torch.equal(make_layout("strided", 32, 8, stride=2), strided_layout(32, 8, 2))
    assert set(PATTERNS) >= {"sliding_window", "strided", "fixed", "global", "bigbird"}
    assert make_layout("dense", 32, 8, n_heads=3).shape == (3, 4, 4)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown sparse attention pattern 'swa'"):
        make_layout("swa", 64, 16)
    with pytest.raises(ValueError, match="window must be at least 1"):
        sliding_window_layout(64, 16, window=0)
    with pytest.raises(ValueError, match="does not divide seq_len 100"):
        sliding_window_layout(100, 16, window=1)
    with pytest.raises(ValueError, match="n_summary"):
        fixed_layout(64, 16, stride=2, n_summary=3)
    with pytest.raises(ValueError, match="n_global"):
        global_layout(64, 16, n_global=5)
    with pytest.raises(ValueError, match="cannot cover"):
        layout_to_mask(dense_layout(32, 16), 16, tq=4, tk=40)
