"""The flash attention forward through TMA descriptors (Hopper; Triton's interpreter
emulates descriptors on the CPU, in fp32 and fp16: its dot reads bf16 descriptor tiles as
raw bits) against the pointer kernel and the definition."""

import math

import pytest
import torch
from minift.kernels import attention_reference
from minift.kernels.buffers import poisoned_outputs
from minift.kernels.launch import last_launch

flash_triton = pytest.importorskip("minift.kernels.flash_triton")
from minift.kernels.flash_fwd_tma_triton import tma_ready  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)
TILES = dict(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=1)
if DEVICE == "cuda":
    TILES = dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)
LOG2E = 1.0 / math.log(2.0)

# (B, H, Tq, Tk, D, causal, dtype): queries fewer than keys (a prefix that is not a multiple
# of the tile), lengths that are not multiples of the tiles, both masks.
CASES = [
    (2, 3, 27, 38, 16, True, torch.float32),
    (1, 2, 40, 40, 32, False, torch.float32),
    (1, 2, 33, 50, 16, True, torch.float16),
]
if DEVICE == "cuda":  # one compile per case on a GPU (gpu-check has a time cap)
    CASES = [(2, 4, 300, 420, 128, True, torch.bfloat16)]


def lse_reference(q, k, causal):
    s = (q.double() @ k.double().transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if causal:
        tq, tk = q.shape[2], k.shape[2]
        visible = torch.arange(tk)[None, :] <= torch.arange(tk - tq, tk)[:, None]
        s = s.masked_fill(~visible.to(s.device), float("-inf"))
    return torch.logsumexp(s, -1) * LOG2E


@pytest.mark.skipif(DEVICE == "cuda" and not HOPPER, reason="TMA needs sm_90 or later")
@pytest.mark.parametrize(
    "case",
    CASES,
    ids=lambda c: (
        "x".join(map(str, c[:5])) + ("-causal-" if c[5] else "-") + str(c[6]).removeprefix("torch.")
    ),
)
def test_tma_forward_matches_the_definition(case):
    b, h, tq, tk, d, causal, dtype = case
    gen = torch.Generator().manual_seed(tq + tk)
    q, k, v = (torch.randn(b, h, t, d, generator=gen).to(DEVICE, dtype) for t in (tq, tk, tk))
    with poisoned_outputs():  # every element of O and lse must be written
        o, lse = flash_triton.flash_forward(q, k, v, causal, **TILES, TMA=1)
    assert last_launch("attention fwd")["TMA"] == 1
    want = attention_reference(q.double(), k.double(), v.double(), causal)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert ((o.double() - want).norm() / want.norm()).item() < tol
    torch.testing.assert_close(lse.double(), lse_reference(q, k, causal), rtol=tol, atol=tol)
    o_ptr, lse_ptr = flash_triton.flash_forward(q, k, v, causal, **TILES)  # the pointer kernel
    assert last_launch("attention fwd").get("TMA") is None
    torch.testing.assert_close(o, o_ptr, rtol=tol, atol=tol)


@pytest.mark.skipif(DEVICE == "cuda" and not HOPPER, reason="TMA needs sm_90 or later")
def test_a_transposed_layout_reads_each_head_on_its_own():
    """q, k, v as (B, T, H, D) memory seen as (B, H, T, D): the 4-D descriptors follow the
    strides, and a tile never reads the next head's rows."""
    dtype, d = (torch.float32, 32) if DEVICE == "cpu" else (torch.bfloat16, 128)
    gen = torch.Generator().manual_seed(3)
    q, k, v = (
        torch.randn(2, 29, 3, d, generator=gen).to(DEVICE, dtype).transpose(1, 2) for _ in range(3)
    )
    assert tma_ready(q, k, v, sparse=False) is None
    o, _ = flash_triton.flash_forward(q, k, v, True, **TILES, TMA=1)
    want = attention_reference(q.double(), k.double(), v.double(), True)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert ((o.double() - want).norm() / want.norm()).item() < tol


def test_what_tma_cannot_describe_is_named():
    q = torch.randn(1, 2, 20, 32, device=DEVICE)
    if DEVICE == "cpu":
        from minift.kernels.dispatch import interpreting

        if not interpreting():
            assert "CUDA" in tma_ready(q, q, q, sparse=False)
            return
    elif not HOPPER:
        assert "sm_90" in tma_ready(q, q, q, sparse=False)
        return
    assert tma_ready(q, q, q, sparse=False) is None
    assert "block lists" in tma_ready(q, q, q, sparse=True)
    odd = torch.randn(1, 2, 20, 24, device=DEVICE)
    assert "power of two" in tma_ready(odd, odd, odd, sparse=False)
    ragged = torch.randn(1, 2, 20, 33, device=DEVICE)[..., :32]  # rows 132 bytes apart
    assert "16-byte aligned" in tma_ready(ragged, q, q, sparse=False)


def test_the_environment_switch_turns_tma_off(monkeypatch):
    """MINIFT_TMA=0 (make gpu-check's answer to a failed TMA probe): not offered, and a
    launch that names the TMA kernel is refused."""
    from minift.kernels.tma import TMA_ENV

    q = torch.randn(1, 2, 20, 32, device=DEVICE)
    monkeypatch.setenv(TMA_ENV, "0")
    assert f"{TMA_ENV}=0" in tma_ready(q, q, q, sparse=False)
    with pytest.raises(ValueError, match=f"TMA attention kernel cannot run: .*{TMA_ENV}=0"):
        flash_triton.flash_forward(q, q, q, True, **TILES, TMA=1)
