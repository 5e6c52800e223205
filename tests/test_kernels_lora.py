"""The fused LoRA kernel against its definition (Triton through the interpreter on CPU)."""

import pytest
import torch
from minift.kernels import LoRALinearFunction, lora_linear, lora_linear_reference
from minift.kernels.buffers import poisoned_outputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def make_inputs(lead, k, n, r, bias=True, frozen=False, dtype=torch.float32, device=DEVICE):
    """Fresh random inputs (B random too, unlike LoRA's zero init, so every term counts)."""
    g = dict(dtype=dtype, device=device)
    x = torch.randn(*lead, k, **g, requires_grad=True)
    weight = (torch.randn(n, k, **g) / k**0.5).requires_grad_(not frozen)
    b = torch.randn(n, **g, requires_grad=not frozen) if bias else None
    a = (torch.randn(r, k, **g) / k**0.5).requires_grad_()
    bm = torch.randn(n, r, **g, requires_grad=True)
    return x, weight, b, a, bm


def grads_of(fn, inputs, g):
    y = fn(*inputs, 0.75)
    wrt = [t for t in inputs if t is not None and t.requires_grad]
    return y, torch.autograd.grad(y, wrt, g)


@pytest.fixture
def force_triton(monkeypatch):
    monkeypatch.setenv("MINIFT_KERNELS", "triton")


# Shapes that are not multiples of the 16-wide interpreter tiles: batches of 1 and 3, a
# single row, rank 1 and a rank (20) padded to 32 inside the kernel.
CASES = [
    dict(lead=(3, 7), k=45, n=29, r=5),
    dict(lead=(1,), k=33, n=18, r=1, bias=False),
    dict(lead=(1, 37), k=16, n=17, r=20),
    dict(lead=(2, 9), k=40, n=35, r=8, frozen=True),  # LoRA's case: no dW, no db
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['lead']}x{c['k']}->{c['n']}r{c['r']}")
def test_triton_matches_reference(force_triton, case):
    inputs = make_inputs(**case)
    g = torch.randn(*case["lead"], case["n"], device=DEVICE)
    with poisoned_outputs():  # every buffer the kernels write starts as NaN
        y, grads = grads_of(lora_linear, inputs, g)
    y_ref, grads_ref = grads_of(lora_linear_reference, inputs, g)
    assert y.shape == y_ref.shape
    assert torch.isfinite(y).all()
    assert rel_err(y, y_ref) < 1e-4
    assert len(grads) == len(grads_ref) == (3 if case.get("frozen") else 4 + case.get("bias", True))
    for got, want in zip(grads, grads_ref):
        assert torch.isfinite(got).all()
        assert rel_err(got, want) < 1e-4


def test_gradients_only_for_what_requires_grad(force_triton):
    """dW and db are skipped for a frozen base; dx alone skips the adapters' gradients."""
    x, weight, b, a, bm = make_inputs((5,), 20, 19, 4, frozen=True)
    a.requires_grad_(False)
    bm.requires_grad_(False)
    (dx,) = torch.autograd.grad(lora_linear(x, weight, b, a, bm, 0.5).sum(), [x])
    (dx_ref,) = torch.autograd.grad(lora_linear_reference(x, weight, b, a, bm, 0.5).sum(), [x])
    assert rel_err(dx, dx_ref) < 1e-4
    x.requires_grad_(False)
    a.requires_grad_(True)
    (da,) = torch.autograd.grad(lora_linear(x, weight, b, a, bm, 0.5).sum(), [a])
    (da_ref,) = torch.autograd.grad(lora_linear_reference(x, weight, b, a, bm, 0.5).sum(), [a])
    assert rel_err(da, da_ref) < 1e-4


@pytest.mark.parametrize("bias,frozen", [(True, False), (False, True)])
def test_reference_function_gradcheck(bias, frozen):
    inputs = make_inputs(
        (2, 3), 6, 5, 2, bias=bias, frozen=frozen, dtype=torch.float64, device="cpu"
    )
    fn = lambda *t: LoRALinearFunction.apply(*t, 0.75, "torch")
    x, *rest = inputs
    assert torch.autograd.gradcheck(fn, (x.reshape(6, 6).detach().requires_grad_(), *rest))
    y = fn(x.reshape(6, 6), *rest)
    assert rel_err(y, lora_linear_reference(x.reshape(6, 6), *rest, 0.75)) < 1e-12


def test_reference_mode_never_touches_triton(monkeypatch):
    import minift.kernels.lora as lora

    def boom(*args):
        raise AssertionError("triton path taken")

    monkeypatch.setattr(lora, "_BACKENDS", {**lora._BACKENDS, "triton": (boom, boom)})
    monkeypatch.setenv("MINIFT_KERNELS", "reference")
    inputs = make_inputs((3,), 8, 5, 2, device="cpu")
    y = lora_linear(*inputs, 2.0)
    assert rel_err(y, lora_linear_reference(*inputs, 2.0)) < 1e-6


def test_bad_shapes_are_named():
    x, weight, b, a, bm = make_inputs((4,), 8, 6, 2, device="cpu")
    with pytest.raises(ValueError, match="features"):
        lora_linear(x[:, :7], weight, b, a, bm, 1.0)
    with pytest.raises(ValueError, match="lora_A"):
        lora_linear(x, weight, b, a[:, :7], bm, 1.0)
    with pytest.raises(ValueError, match="lora_B"):
        lora_linear(x, weight, b, a, bm[:, :1], 1.0)
    with pytest.raises(ValueError, match="bias"):
        lora_linear(x, weight, b[:5], a, bm, 1.0)
    with pytest.raises(ValueError, match="dtype"):
        lora_linear(x.double(), weight, b, a, bm, 1.0)


def test_float64_is_named_when_triton_is_forced(force_triton):
    """The kernels accumulate in float32; a float64 call must not quietly lose precision."""
    inputs = make_inputs((3,), 20, 9, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="float16, bfloat16 or float32, not torch.float64"):
        lora_linear(*inputs, 0.5)


@requires_cuda
def test_gpu_float64_takes_the_reference_by_default(monkeypatch):
    monkeypatch.delenv("MINIFT_KERNELS", raising=False)
    inputs = make_inputs((3,), 20, 9, 4, dtype=torch.float64)
    y = lora_linear(*inputs, 0.5)
    assert rel_err(y, lora_linear_reference(*inputs, 0.5)) < 1e-12


def test_tiles_below_16_are_rejected_even_in_the_interpreter():
    """tl.dot on a GPU needs tiles >= 16; the interpreter would not notice, the launcher does."""
    pytest.importorskip("triton")
    from minift.kernels.lora_triton import fused_lora

    x, weight, b, a, bm = (t.detach() for t in make_inputs((4,), 8, 6, 2))
    with pytest.raises(ValueError, match="BLOCK_M=8"):
        fused_lora(x, weight.t(), b, a.t(), bm.t(), 1.0, BLOCK_M=8)


def test_autocast_casts_inputs_like_linear():
    x, weight, b, a, bm = make_inputs((3,), 8, 5, 2, device="cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lora_linear(x, weight, b, a, bm, 1.0)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert a.grad is not None and a.grad.dtype == torch.float32


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_realistic_shapes(dtype):
    """8 x 512 tokens, 1024 -> 1536, r=16 in half precision, against the fp32 reference."""
    inputs = make_inputs((8, 512), 1024, 1536, 16, dtype=dtype, device="cuda")
    g = torch.randn(8, 512, 1536, device="cuda", dtype=dtype)
    with poisoned_outputs():
        y, grads = grads_of(lora_linear, inputs, g)
    fp32 = [
        t.detach().float().requires_grad_(t.requires_grad) if t is not None else None
        for t in inputs
    ]
    y_ref, grads_ref = grads_of(lora_linear_reference, fp32, g.float())
    assert rel_err(y, y_ref) < 2e-2
    for got, want in zip(grads, grads_ref):
        assert rel_err(got, want) < 2e-2


@requires_cuda
def test_gpu_fp32_is_not_tf32():
    """The GPU's default fp32 tl.dot is TF32 (1e-3 errors); the kernel asks for IEEE fp32."""
    inputs = make_inputs((300,), 512, 384, 16, device="cuda")
    assert rel_err(lora_linear(*inputs, 0.5), lora_linear_reference(*inputs, 0.5)) < 1e-5


def test_triton_fp16_against_fp32_reference(force_triton):
    """Half-precision operands through the kernels' casts (the interpreter has fp16, not bf16)."""
    inputs = make_inputs((20,), 40, 30, 4, frozen=True, dtype=torch.float16)
    g = torch.randn(20, 30, device=DEVICE, dtype=torch.float16)
    y, grads = grads_of(lora_linear, inputs, g)
    fp32 = [t.detach().float().requires_grad_(t.requires_grad) for t in inputs]
    y_ref, grads_ref = grads_of(lora_linear_reference, fp32, g.float())
    assert y.dtype == torch.float16 and rel_err(y, y_ref) < 2e-3
    for got, want in zip(grads, grads_ref):
        assert got.dtype == torch.float16 and rel_err(got, want) < 2e-3
