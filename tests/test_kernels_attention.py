"""Flash attention against its definition and against PyTorch's SDPA."""

import pytest
import torch
import torch.nn.functional as F
from minift.kernels import FlashAttentionFunction, attention, attention_reference, causal_mask
from minift.kernels.buffers import poisoned_outputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def qkv(b, h, tq, tk, d, dtype=torch.float32, device=DEVICE, transposed=False):
    """Fresh random q, k, v; ``transposed`` gives (B, T, H, D)-major views, as a model has."""

    def one(t):
        if transposed:
            return (
                torch.randn(b, t, h, d, dtype=dtype, device=device).transpose(1, 2).requires_grad_()
            )
        return torch.randn(b, h, t, d, dtype=dtype, device=device, requires_grad=True)

    return one(tq), one(tk), one(tk)


def run(fn, q, k, v, g, **kwargs):
    out = fn(q, k, v, **kwargs)
    return out, torch.autograd.grad(out, (q, k, v), g)


@pytest.fixture
def force_triton(monkeypatch):
    monkeypatch.setenv("MINIFT_KERNELS", "triton")


# (B, H, Tq, Tk, D, causal, transposed): lengths off the 16-wide tiles, batches of 1 and
# 3, a single query against a cache, Tk > Tq with a prefix that is not a multiple of the
# tile, head dims that are not powers of two (padded inside the kernel), strided inputs.
CASES = [
    (1, 2, 37, 37, 24, True, True),
    (3, 1, 20, 45, 16, True, False),
    (1, 1, 1, 33, 32, True, False),
    (2, 1, 33, 40, 20, False, False),
    (1, 2, 19, 19, 16, False, True),
]


@pytest.mark.parametrize("b,h,tq,tk,d,causal,transposed", CASES)
def test_triton_matches_reference(force_triton, b, h, tq, tk, d, causal, transposed):
    q, k, v = qkv(b, h, tq, tk, d, transposed=transposed)
    g = torch.randn(b, h, tq, d, device=DEVICE)
    with poisoned_outputs():  # every buffer the kernels write starts as NaN
        out, grads = run(attention, q, k, v, g, causal=causal, scale=0.3)
    ref, grads_ref = run(attention_reference, q, k, v, g, causal=causal, scale=0.3)
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < 1e-4
    for got, want in zip(grads, grads_ref):
        assert torch.isfinite(got).all()
        assert rel_err(got, want) < 1e-4


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("scale", [None, 0.2])
def test_reference_equals_sdpa(causal, scale):
    q, k, v = qkv(2, 3, 11, 11, 8, device="cpu")
    ref = attention_reference(q, k, v, causal=causal, scale=scale)
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    assert rel_err(ref, sdpa) < 1e-6
    dispatched = attention(q, k, v, causal=causal, scale=scale)  # the reference path on CPU
    assert rel_err(dispatched, sdpa) < 1e-6


def test_triton_equals_sdpa(force_triton):
    q, k, v = qkv(1, 2, 21, 21, 16)
    out = attention(q, k, v, causal=True)
    assert rel_err(out, F.scaled_dot_product_attention(q, k, v, is_causal=True)) < 1e-4


def test_causal_mask_is_aligned_to_the_end():
    """Two queries after three cached keys: query 0 sits at position 3, query 1 at 4."""
    expected = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(2, 5), expected)


def test_prefix_queries_match_full_attention():
    """The last Tq queries against all keys equal the last Tq rows of full attention."""
    q, k, v = qkv(1, 2, 9, 9, 8, device="cpu")
    full = attention_reference(q, k, v, causal=True)
    tail = attention_reference(q[:, :, -3:], k, v, causal=True)
    assert rel_err(tail, full[:, :, -3:]) < 1e-6


@pytest.mark.parametrize("causal,tq", [(True, 3), (False, 4)])
def test_reference_function_gradcheck(causal, tq):
    q, k, v = qkv(1, 2, tq, 5, 4, dtype=torch.float64, device="cpu")
    fn = lambda q, k, v: FlashAttentionFunction.apply(q, k, v, causal, 0.5, None, "torch")
    assert torch.autograd.gradcheck(fn, (q, k, v))
    assert rel_err(fn(q, k, v), attention_reference(q, k, v, causal=causal, scale=0.5)) < 1e-12


def test_bad_inputs_are_named():
    q, k, v = qkv(1, 2, 6, 6, 8, device="cpu")
    with pytest.raises(ValueError, match="at least as many"):
        attention(q, k[:, :, :4], v[:, :, :4])
    with pytest.raises(ValueError, match="disagree"):
        attention(q, k[..., :4], v[..., :4])
    with pytest.raises(ValueError, match=r"\(B, H, T, D\)"):
        attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="dtype"):
        attention(q, k.double(), v.double())


def test_triton_rejects_head_dims_over_128(force_triton):
    q, k, v = qkv(1, 1, 4, 4, 136)
    with pytest.raises(ValueError, match="head dims"):
        attention(q, k, v)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("causal", [True, False])
def test_gpu_realistic_shapes(dtype, d, causal):
    """B=2, H=8, T=1000 (ragged) in half precision: no worse than SDPA against fp32."""
    q, k, v = qkv(2, 8, 1000, 1000, d, dtype=dtype, device="cuda")
    g = torch.randn(2, 8, 1000, d, device="cuda", dtype=dtype)
    with poisoned_outputs():
        out, grads = run(attention, q, k, v, g, causal=causal)
    fp32 = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref, grads_ref = run(attention_reference, *fp32, g.float(), causal=causal)
    sdpa, grads_sdpa = run(F.scaled_dot_product_attention, q, k, v, g, is_causal=causal)
    assert rel_err(out, ref) <= 2 * rel_err(sdpa, ref) + 1e-3
    for got, theirs, want in zip(grads, grads_sdpa, grads_ref):
        assert rel_err(got, want) <= 2 * rel_err(theirs, want) + 1e-3


@requires_cuda
def test_gpu_fp32_with_kv_prefix():
    """fp32 on the GPU stays IEEE (no TF32), also with a prefix of cached keys."""
    q, k, v = qkv(2, 4, 300, 517, 64, device="cuda")
    g = torch.randn(2, 4, 300, 64, device="cuda")
    out, grads = run(attention, q, k, v, g, causal=True)
    ref, grads_ref = run(attention_reference, q, k, v, g, causal=True)
    assert rel_err(out, ref) < 1e-4
    for got, want in zip(grads, grads_ref):
        assert rel_err(got, want) < 1e-4


def test_triton_fp16_against_fp32_reference(force_triton):
    """Half-precision operands through the kernels' casts (the interpreter has fp16, not bf16)."""
    q, k, v = qkv(1, 2, 37, 37, 32, dtype=torch.float16)
    g = torch.randn_like(q)
    out, grads = run(attention, q, k, v, g)
    fp32 = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref, grads_ref = run(attention_reference, *fp32, g.float())
    assert out.dtype == torch.float16 and rel_err(out, ref) < 2e-3
    for got, want in zip(grads, grads_ref):
        assert got.dtype == torch.float16 and rel_err(got, want) < 2e-3
