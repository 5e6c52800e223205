"""Block-sparse flash attention against dense attention under the same token mask."""

import pytest
import torch
import torch.nn.functional as F
from minift.kernels import (
    FlashAttentionFunction,
    attention,
    attention_reference,
    bigbird_layout,
    block_sparse_attention,
    block_sparse_attention_reference,
    dense_layout,
    layout_to_mask,
    sliding_window_layout,
)
from minift.kernels.block_sparse import block_index
from minift.kernels.buffers import poisoned_outputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def qkv(b, h, tq, tk, d, dtype=torch.float32, device=DEVICE):
    return tuple(
        torch.randn(b, h, t, d, dtype=dtype, device=device, requires_grad=True)
        for t in (tq, tk, tk)
    )


def run(fn, q, k, v, g, *args, **kwargs):
    out = fn(q, k, v, *args, **kwargs)
    return out, torch.autograd.grad(out, (q, k, v), g)


def assert_close(got, want):
    out, grads = got
    ref, grads_ref = want
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < 1e-4
    for a, b in zip(grads, grads_ref):
        assert torch.isfinite(a).all()
        assert rel_err(a, b) < 1e-4


@pytest.fixture
def force_triton(monkeypatch):
    monkeypatch.setenv("MINIFT_KERNELS", "triton")


def padded(t, bs):
    return -(-t // bs) * bs


@pytest.mark.parametrize(
    "b,h,tq,tk,causal",
    [(1, 2, 37, 37, True), (3, 1, 20, 45, True), (1, 1, 33, 33, False), (1, 2, 1, 45, True)],
)
def test_all_true_layout_is_dense_attention(force_triton, b, h, tq, tk, causal):
    q, k, v = qkv(b, h, tq, tk, 16)
    g = torch.randn_like(q)
    layout = dense_layout(padded(tk, 16), 16)
    with poisoned_outputs():
        got = run(block_sparse_attention, q, k, v, g, layout, 16, causal=causal)
    assert_close(got, run(attention_reference, q, k, v, g, causal=causal))


# block 32 with the interpreter's 16-wide tiles: each layout block is cut into two tiles.
@pytest.mark.parametrize("block_size,window,tk", [(16, 2, 45), (32, 1, 70)])
def test_sliding_window_equals_masked_dense_attention(force_triton, block_size, window, tk):
    q, k, v = qkv(1, 2, tk - 5, tk, 24)  # 5 cached keys: query blocks offset from key blocks
    g = torch.randn_like(q)
    layout = sliding_window_layout(padded(tk, block_size), block_size, window, causal=True)
    mask = layout_to_mask(layout, block_size, tk - 5, tk).to(DEVICE)
    with poisoned_outputs():
        got = run(block_sparse_attention, q, k, v, g, layout, block_size, causal=True)
    want = run(attention_reference, q, k, v, g, causal=True, mask=mask)
    assert_close(got, want)
    assert rel_err(got[0], attention(q, k, v).detach()) > 1e-2  # the layout did restrict it


def test_per_head_layouts_and_empty_rows(force_triton):
    """Different layouts per head; a query block that sees nothing outputs zeros."""
    q, k, v = qkv(2, 2, 40, 40, 16)
    g = torch.randn_like(q)
    layout = bigbird_layout(48, 16, window=1, n_global=1, n_random=1, seed=0, n_heads=2)
    layout[1, 2] = False  # head 1, query block 2: no key block at all
    with poisoned_outputs():
        got = run(block_sparse_attention, q, k, v, g, layout, 16, causal=False)
    assert_close(got, run(block_sparse_attention_reference, q, k, v, g, layout, 16, causal=False))
    assert got[0][:, 1, 32:].abs().max() == 0
    assert got[1][0][:, 1, 32:].abs().max() == 0  # and no gradient reaches those queries


def test_reference_function_gradcheck_with_sparse_mask():
    q, k, v = qkv(1, 2, 6, 8, 4, dtype=torch.float64, device="cpu")
    layout = torch.tensor(
        [[[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1]]], dtype=torch.bool
    )
    mask = layout_to_mask(layout, 2, 6, 8)
    fn = lambda q, k, v: FlashAttentionFunction.apply(q, k, v, True, 0.5, (mask, None), "torch")
    assert torch.autograd.gradcheck(fn, (q, k, v))
    ref = attention_reference(q, k, v, causal=True, scale=0.5, mask=mask)
    assert rel_err(fn(q, k, v), ref) < 1e-12


def test_index_lists_by_hand():
    layout = torch.tensor([[[1, 0, 1], [0, 1, 1], [1, 1, 1]]], dtype=torch.bool)
    index = block_index(layout, 16, 48, 48, causal=True)  # causal drops blocks above the diagonal
    assert index.col_counts.tolist() == [[1, 1, 3]]
    assert index.cols[0, 2].tolist() == [0, 1, 2] and index.cols[0, 1, 0] == 1
    assert index.row_counts.tolist() == [[2, 2, 1]]
    assert index.rows[0, 0, :2].tolist() == [0, 2] and index.rows[0, 2, 0] == 2
    # Two cached blocks before the queries: query blocks 0 and 1 hold no query, so drop them.
    assert block_index(layout, 16, 16, 48, causal=False).col_counts.tolist() == [[0, 0, 3]]


def test_reference_path_agrees_with_masked_sdpa():
    q, k, v = qkv(1, 2, 32, 32, 8, device="cpu")
    layout = sliding_window_layout(32, 8, 2, causal=True)
    mask = layout_to_mask(layout, 8) & torch.ones(32, 32, dtype=torch.bool).tril()
    out = block_sparse_attention(q, k, v, layout, 8, causal=True)
    assert rel_err(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask)) < 1e-5


def test_bad_layouts_are_named(force_triton):
    q, k, v = qkv(1, 2, 40, 40, 16)
    with pytest.raises(ValueError, match="does not match 40 keys in blocks of 16"):
        block_sparse_attention(q, k, v, dense_layout(32, 16), 16)
    with pytest.raises(ValueError, match="expected \\(1 or 2 heads"):
        block_sparse_attention(q, k, v, dense_layout(48, 16, n_heads=3), 16)
    with pytest.raises(ValueError, match="bool"):
        block_sparse_attention(q, k, v, dense_layout(48, 16).int(), 16)
    with pytest.raises(ValueError, match="power of two >= 16"):
        block_sparse_attention(q, k, v, dense_layout(40, 8), 8)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_size", [64, 128])
def test_gpu_realistic_shapes(dtype, block_size):
    """T=2048, D=64, BigBird and a sliding window, against the fp32 masked reference."""
    t = 2048
    q, k, v = qkv(2, 4, t, t, 64, dtype=dtype, device="cuda")
    g = torch.randn_like(q)
    fp32 = [x.detach().float().requires_grad_() for x in (q, k, v)]
    for layout in (
        sliding_window_layout(t, block_size, 4, causal=True, n_heads=4),
        bigbird_layout(t, block_size, window=2, n_global=1, n_random=2, causal=True, n_heads=4),
    ):
        with poisoned_outputs():
            out, grads = run(block_sparse_attention, q, k, v, g, layout, block_size, causal=True)
        ref, grads_ref = run(
            block_sparse_attention_reference, *fp32, g.float(), layout, block_size, causal=True
        )
        assert rel_err(out, ref) < 2e-2
        for got, want in zip(grads, grads_ref):
            assert rel_err(got, want) < 2e-2
