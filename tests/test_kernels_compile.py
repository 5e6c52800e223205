"""The kernels compile for real GPU targets, and the shared memory the compiler allocates
fits the device the stages were chosen for, checked on the CPU.

``triton.compile`` runs the whole GPU pipeline (TTIR, TTGIR, LLVM, PTX, ptxas) without a
GPU, given a target such as sm_90. That catches what the interpreter cannot (a kernel that
does not compile, a pipeline that needs more shared memory than the model of
:mod:`minift.kernels.launch` says) for three architectures this machine does not have:
sm_86 (99 KB, a consumer Ampere), sm_90 (227 KB, H100) and sm_120 (99 KB, a consumer
Blackwell). Compiled in a subprocess, because TRITON_INTERPRET (set for the other tests)
replaces the compiler.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

# Compiles a kernel for a GPU target and returns the shared memory it allocates (shared
# with tests/test_kernels_autotune.py, which compiles tuning candidates the same way).
COMPILER = r"""
import inspect, json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

params = inspect.signature(ASTSource).parameters
if "constexprs" not in params or "attrs" not in params:
    print(json.dumps({"skip": "this Triton's ASTSource takes other arguments"}))
    sys.exit(0)


def compile_shared(kernel, types, const, capability, warps, stages):
    return compile_kernel(kernel, types, const, capability, warps, stages).metadata.shared


def compile_kernel(kernel, types, const, capability, warps, stages):
    # As a launch specializes them: 16-byte aligned pointers, sizes and strides divisible
    # by 16, unit strides as the constant 1.
    sig, attrs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in const:
            sig[name] = "constexpr"
        else:
            sig[name] = types.get(name, "i32")
            if sig[name].startswith("*") or sig[name] == "i32":
                attrs[(i,)] = [["tt.divisibility", 16]]
    target = GPUTarget("cuda", capability[0] * 10 + capability[1], 32)
    options = triton.compiler.make_backend(target).parse_options(
        {"num_warps": warps, "num_stages": stages}
    )
    src = ASTSource(fn=kernel, signature=sig, constexprs=const, attrs=attrs)
    return triton.compile(src, target=target, options=options.__dict__)
"""

PROBE = (
    COMPILER
    + r"""
from minift.kernels import launch
from minift.kernels.flash_bwd_triton import attn_dkdv_kernel, attn_dq_kernel
from minift.kernels.flash_fwd_triton import attn_fwd_kernel
from minift.kernels.flash_triton import _tiles
from minift.kernels.lora_triton import _config, _fused_lora_kernel
import torch

out = []
for capability, smem in json.loads(sys.argv[1]):
    capability = tuple(capability)
    # the LoRA kernel, bf16, 4096 -> 4096, r=16: the GPU tile table
    cfg = {**_config(torch.bfloat16), "BLOCK_R": 16}
    per_stage, fixed = launch.lora_smem(cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"], 16, 2)
    stages = launch.pick_stages(per_stage, fixed, smem, cfg["num_stages"], capability)
    types = {n: "*bf16" for n in ("x_ptr", "w_ptr", "bias_ptr", "a_ptr", "b_ptr", "y_ptr", "xa_ptr")}
    types["scaling"] = "fp32"
    const = dict(stride_xk=1, stride_wk=1, stride_ak=1, stride_yn=1, stride_xar=1,
                 HAS_BIAS=False, STORE_XA=True, PRECISION="tf32", WIDE=False,
                 **{k: cfg[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_R", "GROUP_M")})
    shared = compile_shared(_fused_lora_kernel, types, const, capability, cfg["num_warps"], stages)
    out.append(dict(kernel="lora", capability=capability, limit=smem, stages=stages,
                    estimate=launch.smem_bytes(per_stage, fixed, stages, capability), shared=shared))
    # flash attention passes, bf16, head dim 128, causal
    for pass_, kernel in (("fwd", attn_fwd_kernel), ("dkdv", attn_dkdv_kernel), ("dq", attn_dq_kernel)):
        cfg = _tiles(torch.bfloat16, 128, pass_, capability)
        per_stage, fixed = launch.attention_smem(pass_, cfg["BLOCK_M"], cfg["BLOCK_N"], 128, 2)
        stages = launch.pick_stages(per_stage, fixed, smem, cfg["num_stages"], capability)
        types = {n: "*bf16" for n in ("q_ptr", "k_ptr", "v_ptr", "o_ptr", "do_ptr", "dk_ptr", "dv_ptr", "dq_ptr")}
        types.update(lse_ptr="*fp32", delta_ptr="*fp32", cols_ptr="*i32", counts_ptr="*i32",
                     rows_ptr="*i32", qk_scale="fp32", sm_scale="fp32")
        const = dict(CAUSAL=True, SPARSE=False, PRECISION="tf32", WIDE=False, BLOCK_D=128,
                     LAYOUT_BLOCK=16, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"])
        shared = compile_shared(kernel, types, const, capability, cfg["num_warps"], stages)
        out.append(dict(kernel=pass_, capability=capability, limit=smem, stages=stages,
                        estimate=launch.smem_bytes(per_stage, fixed, stages, capability),
                        shared=shared))
print(json.dumps(out))
"""
)

TARGETS = [((12, 0), 101_376), ((8, 6), 101_376), ((9, 0), 232_448)]


def run_probe(script: str, argument) -> list:
    """Run a compile probe in a subprocess without the interpreter; its last line of output
    (JSON) is the result. Skips where this Triton cannot compile on the CPU."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(argument)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if done.returncode != 0 and "ptxas" in done.stderr and "not found" in done.stderr:
        pytest.skip("this Triton has no ptxas to compile with")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    if isinstance(rows, dict):
        pytest.skip(rows["skip"])
    return rows


def test_compiled_shared_memory_fits_the_chosen_stages():
    """sm_120 and sm_86 with 99 KB (consumer GPUs), sm_90 with 227 KB (H100)."""
    rows = run_probe(PROBE, TARGETS)
    assert len(rows) == 4 * len(TARGETS)
    for row in rows:
        print(row)
        assert row["shared"] <= row["limit"], row  # the launch would fail on that device
        assert row["shared"] <= row["estimate"], row  # the model is on the safe side
    # Every kernel keeps its table's stages on all three (3; 2 for Hopper's dK/dV and dQ
    # entries): on sm_90 the LoRA tiles take 102 KB (fine in 227 KB), on the 99 KB GPUs 68 KB
    # (one buffer fewer); Hopper's 128 x 128 forward tiles take 224 KB, within its 227 KB.
    for row in rows:
        hopper_two = row["kernel"] in ("dkdv", "dq") and row["capability"] == [9, 0]
        assert row["stages"] == (2 if hopper_two else 3), row
    lora_h100 = next(r for r in rows if r["kernel"] == "lora" and r["capability"] == [9, 0])
    assert lora_h100["shared"] > 101_376  # what would not have fitted a consumer GPU


TMA_PROBE = (
    COMPILER
    + r"""
import re
from minift.kernels import launch
from minift.kernels.lora_tma_triton import _lora_tma_kernel
from minift.kernels.lora_tma_triton import TMA_SPACE
capability, smem = (9, 0), json.loads(sys.argv[1])
out = []
for bm, bn, bk, warps, stages, _ in TMA_SPACE:
    for w_nk in (True, False):  # the forward reads the weight (N, K); the dx pass (K, N)
        w_block = f"[{bn}, {bk}]" if w_nk else f"[{bk}, {bn}]"
        types = dict(x_desc=f"tensordesc<bf16[{bm}, {bk}]>", w_desc=f"tensordesc<bf16{w_block}>",
                     y_desc=f"tensordesc<bf16[{bm}, {bn}]>", u_ptr="*bf16", b_ptr="*bf16",
                     bias_ptr="*bf16", scaling="fp32")
        const = dict(stride_ur=1, stride_br=1, HAS_BIAS=True, W_NK=w_nk, PRECISION="tf32",
                     WIDE=False, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, BLOCK_R=16, GROUP_M=8)
        compiled = compile_kernel(_lora_tma_kernel, types, const, capability, warps, stages)
        ptx = compiled.asm["ptx"]
        per_stage, fixed = launch.lora_tma_smem(bm, bn, bk, 16, 2)
        out.append(dict(tiles=[bm, bn, bk, warps, stages], w_nk=w_nk, limit=smem,
                        shared=compiled.metadata.shared,
                        estimate=launch.smem_bytes(per_stage, fixed, stages, capability),
                        bulk_loads=len(re.findall(r"cp\.async\.bulk\.tensor\.2d\.shared", ptx)),
                        bulk_stores=len(re.findall(r"cp\.async\.bulk\.tensor\.2d\.global", ptx)),
                        pointer_copies=len(re.findall(r"cp\.async\.c[ag]", ptx)),
                        wgmma=len(re.findall(r"wgmma\.mma_async", ptx))))
print(json.dumps(out))
"""
)


def test_the_tma_lora_kernel_compiles_to_bulk_copies_for_sm90():
    """Every TMA candidate, both weight layouts, for an H100: tiles arrive by bulk tensor
    copies (no per-thread cp.async), the products run on wgmma, Y leaves by a bulk store, and
    the compiler's shared memory fits sm_90 within the model that prunes the candidates."""
    from minift.kernels.lora_tma_triton import TMA_SPACE

    rows = run_probe(TMA_PROBE, 232_448)
    assert len(rows) == 2 * len(TMA_SPACE)
    for row in rows:
        print(row)
        assert row["bulk_loads"] >= 2 and row["bulk_stores"] >= 1 and row["pointer_copies"] == 0, (
            row
        )
        assert row["wgmma"] >= 2, row  # the main loop's and the epilogue's products
        assert row["shared"] <= row["limit"] and row["shared"] <= row["estimate"], row


ATTENTION_TMA_PROBE = (
    COMPILER
    + r"""
import re
from minift.kernels import launch
from minift.kernels.flash_fwd_tma_triton import TMA_SPACE, attn_fwd_tma_kernel
capability, smem = (9, 0), json.loads(sys.argv[1])
out = []
for bm, bn, warps, stages in TMA_SPACE:
    types = dict(q_desc=f"tensordesc<bf16[1, 1, {bm}, 128]>", k_desc=f"tensordesc<bf16[1, 1, {bn}, 128]>",
                 v_desc=f"tensordesc<bf16[1, 1, {bn}, 128]>", o_ptr="*bf16", lse_ptr="*fp32",
                 qk_scale="fp32")
    const = dict(CAUSAL=True, PRECISION="tf32", BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=128)
    compiled = compile_kernel(attn_fwd_tma_kernel, types, const, capability, warps, stages)
    ptx = compiled.asm["ptx"]
    per_stage, fixed = launch.attention_smem("fwd", bm, bn, 128, 2)
    out.append(dict(tiles=[bm, bn, warps, stages], limit=smem, shared=compiled.metadata.shared,
                    estimate=launch.smem_bytes(per_stage, fixed, stages, capability),
                    bulk_loads=len(re.findall(r"cp\.async\.bulk\.tensor\.4d\.shared", ptx)),
                    pointer_copies=len(re.findall(r"cp\.async\.c[ag]", ptx)),
                    wgmma=len(re.findall(r"wgmma\.mma_async", ptx))))
print(json.dumps(out))
"""
)


def test_the_tma_attention_forward_compiles_to_bulk_copies_for_sm90():
    """Both TMA candidates, bf16, head dim 128, causal, for an H100: Q, K and V arrive by
    4-D bulk tensor copies (no per-thread cp.async), the products run on wgmma, and the
    compiler's shared memory fits sm_90 within the model that prunes the candidates."""
    from minift.kernels.flash_fwd_tma_triton import TMA_SPACE

    rows = run_probe(ATTENTION_TMA_PROBE, 232_448)
    assert len(rows) == len(TMA_SPACE)
    for row in rows:
        print(row)
        assert row["bulk_loads"] >= 3 and row["pointer_copies"] == 0 and row["wgmma"] >= 2, row
        assert row["shared"] <= row["limit"] and row["shared"] <= row["estimate"], row
