# %% [markdown]
# # Lesson 11: hand-written Triton kernels
#
# Fine-tuning spends its time in two places: matrix multiplications (every linear layer,
# LoRA's included) and attention. PyTorch runs each operation as its own kernel, and
# every kernel reads its inputs from GPU memory and writes its output back. When the
# arithmetic is cheap next to that traffic, *fusing* operations into one kernel, so the
# intermediates stay in registers, cuts the traffic; on a GPU that is where the speed of
# flash attention comes from (Dao et al. 2022 measure it). This lesson checks that the
# kernels compute the right numbers and *counts* the bytes fusion saves; it measures no
# GPU speed (`scripts/bench_kernels.py` does, on a GPU).
#
# This lesson walks through two of minift's kernels (`minift/kernels`, the folder
# `kernels/`):
#
# 1. **Fused LoRA** (Hu et al. 2021): y = x W^T + s (x A^T) B^T in one pass over x.
# 2. **Flash attention** (Dao et al. 2022; Dao 2023), whose heart is the **online
#    softmax** (Milakov & Gimelshein 2018): softmax over a row seen one block at a time.
#
# Triton (Tillet et al. 2019) programs are written per *tile*: one program instance
# computes one block of the output. Without a GPU, Triton's interpreter runs the same
# kernels on the CPU with NumPy, slowly, which is enough to check them on tiny shapes.
# It must be switched on before Triton is imported. Its wall times are printed below
# only to show what a check costs: a NumPy simulation's time says nothing about a GPU's.

# %%
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton
os.environ.setdefault("MINIFT_KERNELS", "triton")  # take the Triton path even on CPU tensors

import json
import math
import pathlib
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle
from minift.kernels import (
    attention,
    attention_reference,
    block_sparse_attention,
    block_sparse_attention_reference,
    lora_linear,
    lora_linear_reference,
    sliding_window_layout,
    triton_available,
)

from minift.claims import claim
from minift.utils import fast_mode, output_dir

torch.manual_seed(0)
FAST = fast_mode()
OUT = output_dir("lessons", "11")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
print(
    f"triton available: {triton_available()}, interpreter: {os.environ.get('TRITON_INTERPRET') == '1'}"
)
print(f"device: {DEVICE}, fast mode: {FAST}")
start = time.time()
TOL = 1e-4  # relative error; fp32 throughout (tl.dot in IEEE precision), so ~1e-7 expected
WHERE = "interpreter wall time, not GPU speed" if os.environ.get("TRITON_INTERPRET") == "1" else "wall time incl. compilation"  # fmt: skip


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# %% [markdown]
# ## 1. The fused LoRA linear layer
#
# Eager PyTorch computes a LoRA layer as three matmuls and an add:
# `base = x @ W.T`, `u = x @ A.T`, `low = u @ B.T`, `y = base + s * low`.
# x is read twice, and `base` and `low` (each as large as the output) are written to
# memory and read back. The kernel instead gives each program a (BLOCK_M, BLOCK_N) tile
# of y and walks along the input dimension K:
#
# - load an x tile (BLOCK_M, BLOCK_K) and a W tile; accumulate `acc += x_tile @ W_tile.T`;
# - with the *same* x tile and an A tile, accumulate `u += x_tile @ A_tile.T`, a small
#   (BLOCK_M, r) accumulator next to the big one;
# - after the loop (the *epilogue*), `acc += s * u @ B_tile.T`, then store y once.
#
# Here is that schedule in plain PyTorch, tile by tile, so each step can be printed.

# %%
M, K, N, R = (40, 48, 36, 4) if FAST else (96, 128, 80, 8)
BLOCK_M, BLOCK_N, BLOCK_K = 16, 16, 16
x = torch.randn(M, K)
W = torch.randn(N, K) / math.sqrt(K)
A = torch.randn(R, K) / math.sqrt(K)
B = torch.randn(N, R)  # random, not LoRA's zero init, so the low-rank term shows
s = 2.0


def lora_tiled(x, W, A, B, s, verbose=False):
    y = torch.empty(x.shape[0], W.shape[0])
    for m0 in range(0, x.shape[0], BLOCK_M):  # each (m0, n0) pair is one Triton program
        for n0 in range(0, W.shape[0], BLOCK_N):
            acc = torch.zeros(min(BLOCK_M, x.shape[0] - m0), min(BLOCK_N, W.shape[0] - n0))
            u = torch.zeros(acc.shape[0], A.shape[0])
            for k0 in range(0, x.shape[1], BLOCK_K):
                x_tile = x[m0 : m0 + BLOCK_M, k0 : k0 + BLOCK_K]  # loaded once ...
                acc += x_tile @ W[n0 : n0 + BLOCK_N, k0 : k0 + BLOCK_K].T
                u += x_tile @ A[:, k0 : k0 + BLOCK_K].T  # ... used twice
            acc += s * u @ B[n0 : n0 + BLOCK_N].T  # the epilogue
            y[m0 : m0 + BLOCK_M, n0 : n0 + BLOCK_N] = acc
            if verbose and m0 == 0 and n0 == 0:
                print(
                    f"program (0, 0): acc {tuple(acc.shape)}, side accumulator u {tuple(u.shape)}"
                )
    return y


y_tiled = lora_tiled(x, W, A, B, s, verbose=True)
y_ref = lora_linear_reference(x, W, None, A, B, s)
print(f"tiled schedule vs definition: rel err {rel_err(y_tiled, y_ref):.1e}")

# %% [markdown]
# On a GPU, `tl.dot` tiles must be at least 16 in every dimension, but LoRA ranks are
# often 4 or 8. The kernel pads the rank to `BLOCK_R = max(16, next_pow2(r))` by loading A
# and B with a mask: the padded columns read as zeros and add exactly nothing. (The
# interpreter would accept a rank-4 tile, so minift's launcher checks the rule itself.)
#
# Now the real Triton kernel, forward and backward, through the interpreter. Its backward
# reuses the forward kernel: dx = dy W + s (dy B) A has the same shape of computation.

# %%
xg = x.clone().to(DEVICE).requires_grad_()
Ag, Bg = A.clone().to(DEVICE).requires_grad_(), B.clone().to(DEVICE).requires_grad_()
Wd = W.to(DEVICE)
t0 = time.time()
y_kernel = lora_linear(xg, Wd, None, Ag, Bg, s)
y_kernel.sum().backward()
print(f"Triton fused LoRA (fwd+bwd) in {time.time() - t0:.2f}s ({WHERE})")
xr, Ar, Br = (t.clone().to(DEVICE).requires_grad_() for t in (x, A, B))
lora_linear_reference(xr, Wd, None, Ar, Br, s).sum().backward()
print(f"forward rel err {rel_err(y_kernel.detach(), y_ref.to(DEVICE)):.1e}")
lora_errs = {"y": rel_err(y_kernel.detach(), y_ref.to(DEVICE))}
for name, got, want in (
    ("dx", xg.grad, xr.grad),
    ("dA", Ag.grad, Ar.grad),
    ("dB", Bg.grad, Br.grad),
):
    lora_errs[name] = rel_err(got, want)
    print(f"{name} rel err {lora_errs[name]:.1e}")

# %% [markdown]
# What fusion saves, counted in bytes of GPU memory traffic for a realistic layer
# (8192 tokens, 4096 -> 4096, r = 16, bf16), assuming each tensor is read or written
# once per kernel that touches it:

# %%
m, k, n, r, size = 8192, 4096, 4096, 16, 2
x_b, w_b, y_b, u_b = m * k * size, n * k * size, m * n * size, m * r * size
adapters = (r * k + n * r) * size
eager = (
    (x_b + w_b + y_b)  # base = x W^T
    + (x_b + r * k * size + u_b)  # u = x A^T
    + (u_b + n * r * size + y_b)  # low = u B^T
    + (2 * y_b + y_b)  # y = base + s * low
)
fused = x_b + w_b + adapters + y_b + u_b  # read x, W, A, B once; write y and u
print(f"eager LoRA moves {eager / 2**20:.0f} MiB, fused {fused / 2**20:.0f} MiB")
print(f"fusion saves {(eager - fused) / 2**20:.0f} MiB per forward ({1 - fused / eager:.0%})")
print("(a count under that assumption, not a measurement: caches and the GPU's scheduling decide the real traffic)")  # fmt: skip


# %% [markdown]
# The tiling, drawn: the grid of programs over y, the x row panel and W column panel that
# one program reads, and its small (BLOCK_M, r) side accumulator for x A^T.


# %%
def draw_lora_tiling(path):
    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    nm, nn = math.ceil(M / BLOCK_M), math.ceil(N / BLOCK_N)
    for i in range(nm):
        for j in range(nn):
            hit = (i, j) == (1, 1)
            ax[0].add_patch(
                Rectangle(
                    (j, i), 1, 1, fill=hit, color="tab:orange", ec="k", alpha=0.7 if hit else 1
                )
            )
            ax[0].text(j + 0.5, i + 0.5, f"({i},{j})", ha="center", va="center", fontsize=8)
    ax[0].set(xlim=(0, nn), ylim=(nm, 0), title=f"y: {nm}x{nn} programs of {BLOCK_M}x{BLOCK_N}")
    nk = math.ceil(K / BLOCK_K)
    for kk in range(nk):
        ax[1].add_patch(
            Rectangle((kk, 1), 1, 1, color="tab:blue", ec="k", alpha=0.3 + 0.7 * kk / nk)
        )
        ax[1].add_patch(
            Rectangle((kk, 3), 1, 1, color="tab:green", ec="k", alpha=0.3 + 0.7 * kk / nk)
        )
        ax[1].add_patch(
            Rectangle((kk, 5), 1, 0.5, color="tab:purple", ec="k", alpha=0.3 + 0.7 * kk / nk)
        )
    ax[1].text(0, 0.8, "x row panel (tiles along K)")
    ax[1].text(0, 2.8, "W column panel -> acc += x W^T")
    ax[1].text(0, 4.8, "A panel (rank padded to 16) -> u += x A^T")
    ax[1].set(xlim=(0, nk), ylim=(6, 0), title="what program (1,1) streams")
    ax[2].add_patch(Rectangle((0, 0), BLOCK_N, BLOCK_M, color="tab:orange", alpha=0.6))
    ax[2].add_patch(Rectangle((BLOCK_N + 2, 0), 16, BLOCK_M, color="tab:purple", alpha=0.25))
    ax[2].add_patch(Rectangle((BLOCK_N + 2, 0), R, BLOCK_M, color="tab:purple", alpha=0.8))
    ax[2].text(1, BLOCK_M / 2, "acc\n(BLOCK_M, BLOCK_N)")
    ax[2].text(
        BLOCK_N + R + 3, BLOCK_M / 2, f"u (BLOCK_M, 16):\n{R} real ranks,\n{16 - R} zero pads"
    )
    ax[2].set(
        xlim=(0, BLOCK_N + 20), ylim=(BLOCK_M + 2, -2), title="registers: epilogue acc += s u B^T"
    )
    for a in ax:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


draw_lora_tiling(OUT / "lora_tiling.png")
print(f"saved {OUT / 'lora_tiling.png'}")

# %% [markdown]
# ## 2. The online softmax
#
# Attention needs softmax over each row of S = Q K^T / sqrt(D), a row as long as the
# sequence. Flash attention never holds a whole row: it sees the row one block of keys
# at a time. The online softmax keeps a running max m and a running sum l of
# exp(s - m); when a new block raises the max, the old sum is rescaled by exp(m - m'):
#
#     m' = max(m, max(block)),   l' = l exp(m - m') + sum(exp(block - m')).
#
# At the end softmax(s) = exp(s - m) / l, exactly. Step by step on one row:

# %%
T_ROW, BLOCK = (24, 8) if FAST else (64, 16)
row = torch.randn(T_ROW) * 3
m, l_sum = float("-inf"), 0.0
for j in range(0, T_ROW, BLOCK):
    block = row[j : j + BLOCK]
    m_new = max(m, block.max().item())
    l_sum = l_sum * math.exp(m - m_new) + torch.exp(block - m_new).sum().item()
    print(
        f"keys {j:2d}..{j + len(block) - 1:2d}: block max {block.max():6.3f} -> m = {m_new:6.3f}, l = {l_sum:8.4f}"
    )
    m = m_new
online = torch.exp(row - m) / l_sum
online_err = (online - torch.softmax(row, 0)).abs().max().item()
print(f"online vs torch.softmax: max abs err {online_err:.1e}")

# %% [markdown]
# Why subtract a max at all? exp overflows float32 past about 88. Softmax does not change
# when every score moves by the same amount, but the naive exp(s) / sum(exp(s)) does:
# shifted by 100 it overflows, while the max-subtracting versions never see a large exp.

# %%
shifted = row + 100
naive = torch.exp(shifted) / torch.exp(shifted).sum()
m_shift = shifted.max()
stable = torch.exp(shifted - m_shift) / torch.exp(shifted - m_shift).sum()
ref64 = torch.softmax(row.double(), 0)
naive_nan = int(torch.isnan(naive).sum())
stable_err = (stable.double() - ref64).abs().max().item()
print(f"naive softmax of scores + 100: {naive_nan} NaN of {T_ROW}")
print(f"max-subtracted softmax:        max abs err vs float64 {stable_err:.1e}")

# %% [markdown]
# Flash attention applies the same rescaling to the output accumulator,
# a' = a exp(m - m') + exp(S_block - m') V_block, and saves lse = m + log l per row so
# the backward can recompute each probability as exp(s - lse) instead of storing the
# (T, T) matrix. Here is the Triton kernel, causal, against the definition:

# %%
bsz, heads, t_len, dim = (1, 2, 40, 16) if FAST else (2, 2, 96, 32)
q, k, v = (torch.randn(bsz, heads, t_len, dim, device=DEVICE, requires_grad=True) for _ in range(3))
t0 = time.time()
out = attention(q, k, v, causal=True)
out.sum().backward()
print(f"Triton flash attention (fwd+bwd) in {time.time() - t0:.2f}s ({WHERE})")
qr, kr, vr = (t.detach().clone().requires_grad_() for t in (q, k, v))
ref = attention_reference(qr, kr, vr, causal=True)
ref.sum().backward()
flash_errs = {"out": rel_err(out.detach(), ref.detach())}
flash_errs.update({f"d{n}": rel_err(a.grad, b.grad) for n, a, b in zip("qkv", (q, k, v), (qr, kr, vr))})  # fmt: skip
print("vs the definition (autograd through attention_reference): " + ", ".join(f"{n} rel err {e:.1e}" for n, e in flash_errs.items()))  # fmt: skip
T_LONG, D_LONG = 16384, 128
print(
    f"at T={T_LONG}, one head's score matrix is {T_LONG**2 * 2 / 2**20:.0f} MiB in bf16; "
    f"flash attention keeps {T_LONG * 4 * 2 / 2**10:.0f} KiB of lse and row sums instead"
)

# %% [markdown]
# Causal attention lets whole tiles be skipped (above the diagonal) and only the diagonal
# tiles need a mask. A block-sparse layout skips more: here a sliding window of 2 blocks,
# which the block-sparse kernel visits and nothing else.

# %%
layout = sliding_window_layout(64, 16, window=2, causal=True)
qs, ks, vs = (torch.randn(1, 1, 64, 16, device=DEVICE) for _ in range(3))
sparse_out = block_sparse_attention(qs, ks, vs, layout, 16)
sparse_err = rel_err(sparse_out, block_sparse_attention_reference(qs, ks, vs, layout, 16))
print(
    f"sliding-window kernel visits {int(layout.sum())} of {layout[0].numel()} blocks; output {tuple(sparse_out.shape)}, rel err vs dense attention under the mask {sparse_err:.1e}"
)  # fmt: skip


def draw_attention_tiling(path, n=8):
    fig, ax = plt.subplots(1, 2, figsize=(9, 4.5))
    window = sliding_window_layout(n, 1, window=3, causal=True)[0]
    for panel, title in (
        (0, "causal: full / masked / skipped tiles"),
        (1, "sliding window: visited tiles"),
    ):
        for i in range(n):
            for j in range(n):
                if panel == 0:
                    color = "tab:blue" if j < i else "tab:orange" if j == i else "white"
                else:
                    color = ("tab:orange" if j == i else "tab:blue") if window[i, j] else "white"
                ax[panel].add_patch(Rectangle((j, i), 1, 1, color=color, ec="k"))
        ax[panel].set(
            xlim=(0, n), ylim=(n, 0), title=title, xlabel="key block", ylabel="query block"
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


draw_attention_tiling(OUT / "attention_tiling.png")
print(f"saved {OUT / 'attention_tiling.png'}")

# %% [markdown]
# ## 3. Which tiles on a GPU: autotuning
#
# Everything above ran with small fixed tiles, the interpreter's. On a GPU the tile sizes,
# the warps per program and the pipeline stages decide the speed, and the best choice moves
# with the shape (a 40-token batch wants small row tiles, 4096 tokens large ones), the dtype
# and the chip. `minift.kernels.autotune` measures it: the first call of a shape bucket
# tries the kernel's fixed table entry and a short list of alternatives, drops those whose
# stages do not fit the device's shared memory (the model in `kernels/launch.py`) and those
# whose output differs from the fixed entry's, times the rest between CUDA events, and caches
# the fastest in `$MINIFT_HOME/autotune.json`. `MINIFT_AUTOTUNE=0` keeps the fixed table;
# `make gpu-check` prints the configuration each shape chose. docs/kernels.md lists the space
# of each kernel and why each dimension is in it.

# %% [markdown]
# ## 4. What one H100 measured (a stored run)
#
# The interpreter says nothing about speed. `make gpu-check` ran once on an NVIDIA H100
# (2026-11-28, Triton 3.6); its results are stored in docs/gpu/2026-11-28-h100/ and read
# back here. Two things to look for: how far each kernel sits from the chip's peak (989
# TFLOP/s in bf16), and what the autotuner gained over the fixed tile table, shape by shape.

# %%
GPU_RUN = pathlib.Path(__file__).resolve().parent.parent / "docs" / "gpu" / "2026-11-28-h100" / "results.json"  # fmt: skip
gpu_run = json.loads(GPU_RUN.read_text())
env, kern = gpu_run["environment"], gpu_run["bench_kernels"]
print(f"{env['gpu']} ({env['sm_count']} SMs), torch {env['torch']}, Triton {env['triton']}")
for row in kern["roofline"]:
    print(f"  {row['kernel']:<42} {row['tflops']:6.1f} TFLOP/s = {row['of_peak']:.0%} of peak")
for goal in kern["goals"]:
    print(f"  {goal['goal']:<70} {goal['value']:7.3f}  target {goal['target']:<8} {'met' if goal['met'] else 'NOT met'}")  # fmt: skip
timed = [d for d in kern["autotune"] if d["speedup"]]
for d in timed:
    print(f"  tuned {d['kernel'].split(' [')[0]:<15} {d['shape']:<32} fixed {d['fixed_us']:6.1f} us -> {d['config']:<34} {d['best_us']:6.1f} us (x{d['speedup']:.2f})")  # fmt: skip
goals = {g["goal"]: g for g in kern["goals"]}
lora_goal = goals["LoRA r=16 fwd+bwd: fused / base"]
attn_tflops = next(g for name, g in goals.items() if name.endswith("TFLOP/s"))

# %% [markdown]
# ## What the numbers say
# Every statement below is checked against this run's numbers. Correctness holds on any
# machine (fp32, relative error under 1e-4); the only speed-like statement is the byte
# count, an arithmetic consequence of its stated assumption. Whether fusion makes a GPU
# faster is measured by `scripts/bench_kernels.py` on a GPU, not here: the last three
# claims read the stored H100 run, the same on every machine.

# %%
worst = max(lora_errs.values())
claim("the tile-by-tile schedule in plain PyTorch computes the LoRA layer's definition", rel_err(y_tiled, y_ref) < TOL, f"rel err {rel_err(y_tiled, y_ref):.1e}")  # fmt: skip
claim(f"the Triton fused LoRA kernel matches the reference, forward and all three gradients, within rel err {TOL:g}", worst < TOL, ", ".join(f"{n} {e:.1e}" for n, e in lora_errs.items()))  # fmt: skip
claim("the online softmax, one block at a time, equals torch.softmax", online_err < 1e-6, f"max abs err {online_err:.1e}")  # fmt: skip
claim("on scores shifted by 100 the naive softmax overflows to NaN and the max-subtracted one does not", naive_nan > 0 and stable_err < 1e-6, f"{naive_nan} NaN; max-subtracted err {stable_err:.1e}")  # fmt: skip
claim(f"the Triton flash attention kernel matches the definition, output and dq, dk, dv, within rel err {TOL:g}", max(flash_errs.values()) < TOL, ", ".join(f"{n} {e:.1e}" for n, e in flash_errs.items()))  # fmt: skip
claim(f"the block-sparse kernel matches dense attention under its layout's mask within rel err {TOL:g}", sparse_err < TOL, f"rel err {sparse_err:.1e}")  # fmt: skip
claim("counted once per kernel that touches a tensor, fusing the LoRA layer moves fewer bytes than eager PyTorch", fused < eager, f"{fused / 2**20:.0f} vs {eager / 2**20:.0f} MiB for 8192 x 4096 -> 4096, r = 16, bf16")  # fmt: skip
claim("on the stored H100 run, every shape the tuner timed ran faster with its winner than with the fixed table", all(d["speedup"] > 1 for d in timed), ", ".join(f"x{d['speedup']:.2f}" for d in timed))  # fmt: skip
claim("on the stored H100 run the flash attention forward reached 400 TFLOP/s at T=4096, D=128, causal", attn_tflops["met"], f"{attn_tflops['value']:.0f} TFLOP/s")  # fmt: skip
claim("on the stored H100 run the fused LoRA layer missed its goal: forward+backward took more than 1.10x the frozen layer's", not lora_goal["met"], f"{lora_goal['value']:.2f}x")  # fmt: skip
print(f"lesson ran in {time.time() - start:.1f}s")

# %% [markdown]
# ## Exercises
#
# 1. In `kernels/lora.py` the docstring derives dA = s (dy B)^T x. Check it numerically
#    on the tiny shapes above with `torch.autograd.grad` of `lora_linear_reference`.
# 2. Call `minift.kernels.lora_triton.fused_lora` with `BLOCK_M=8`: why does minift refuse,
#    even though the interpreter could run it?
# 3. Change `BLOCK` in the online softmax cell to 1 and to `T_ROW`. What are m and l after
#    each step, and why is the result the same?
# 4. Run `scripts/bench_kernels.py --smoke`, then read its table: which numbers mean
#    something on the interpreter, and which only on a GPU? (Only the error columns mean
#    anything on the interpreter: its times measure NumPy, not the kernel.)
# 5. In the stored H100 run the attention shapes the tuner timed have 4 heads (BH=4), the
#    correctness check's shape, while the TFLOP/s rows were measured at 128. Read
#    docs/gpu/2026-11-28-h100/results.md: which configuration did the 128-head rows run,
#    and why does `bench_kernels.py` now run its checks inside `autotune.paused()`?
