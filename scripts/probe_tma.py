"""Run every TMA kernel candidate once, at the shapes the benchmarks time, before anything else
launches it on this device.

    python scripts/probe_tma.py            # on a CUDA GPU (sm_90+): the goal shapes, bf16
    python scripts/probe_tma.py --smoke    # tiny shapes on the CPU interpreter (fp16)

The TMA kernels (:mod:`minift.kernels.lora_tma_triton`, :mod:`minift.kernels.flash_fwd_tma_triton`)
are checked in Triton's interpreter and compiled for sm_90 on the CPU, but a fault on the
device (an illegal address from a wrong descriptor, a hang on a barrier) would leave the
process's CUDA context unusable: inside the autotuner it would spoil every later kernel the
benchmark times. This probe runs each candidate of the tuners' TMA spaces in its own process
(the fused LoRA forward with the weight in both memory orders, as the layer's forward and its
dx pass read it; the causal attention forward), compares the outputs with a float32
reference and prints one line per candidate. Exit status 0 when every candidate agrees (or
when no TMA kernel can run here: nothing would launch one), 1 otherwise; ``make gpu-check``
then runs the rest with ``MINIFT_TMA=0`` (:mod:`minift.kernels.tma`).

Compiles land in Triton's cache, so the benchmarks that follow do not pay them again.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

# The goal shapes of scripts/bench_kernels.py --quick (the same integer specializations, so
# the probe compiles the variants the tuner will launch: Triton specializes integer
# arguments, descriptor shapes included, on being 1 or a multiple of 16).
LORA_SHAPE = dict(M=4096, K=4096, N=4096, R=16)
ATTENTION_SHAPE = dict(B=4, H=32, T=4096, D=128)
SMOKE_LORA = dict(M=40, K=48, N=48, R=5)
SMOKE_ATTENTION = dict(B=1, H=2, T=40, D=32)
TOL = 1e-2  # relative error of a 16-bit output against float32 (bf16 epsilon 2^-8)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU interpreter")
    p.add_argument("--out", default=None, help="write probe_tma.json here (a folder)")
    return p.parse_args(argv)


def rel_err(got, want) -> float:
    got, want = got.double(), want.double()
    return ((got - want).norm() / want.norm()).item()


def lora_cases(torch, device, dtype, shape):
    """(name, run) per TMA candidate and weight order: run() returns (relative error, config)."""
    from minift.kernels.lora_tma_triton import tma_space
    from minift.kernels.lora_triton import fused_lora

    m, k, n, r = shape["M"], shape["K"], shape["N"], shape["R"]
    if k != n:
        raise ValueError("the probe's LoRA shape is square (the dx pass reuses x)")
    gen = torch.Generator(device=device).manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=gen, device=device).to(dtype)  # noqa: E731
    # No bias, as scripts/bench_kernels.py's layer (the same compiled variant).
    x = rand(m, k)
    weight, a, b = rand(n, k) / k**0.5, rand(r, k) / k**0.5, rand(n, r)
    # The layer's two launches (minift.kernels.lora), with their operands' memory orders:
    # y = x W^T + s (x A^T) B^T reads transposed views; dx = g W + s (g B) A reads W, B and
    # A as they are (the shape is square, so g's shape is x's).
    orders = {
        "forward, W^T view": (weight.t(), a.t(), b.t()),
        "dx pass, W": (weight, b, a),
    }
    for cfg in tma_space(dtype):
        for order, (w_t, a_t, b_t) in orders.items():

            def run(cfg=cfg, w_t=w_t, a_t=a_t, b_t=b_t):
                y, u = fused_lora(x, w_t, None, a_t, b_t, 0.5, **cfg)
                _ran_tma("fused_lora")
                xf = x.float()
                want_u = xf @ a_t.float()
                want = xf @ w_t.float() + 0.5 * want_u @ b_t.float()
                return max(rel_err(y, want), rel_err(u, want_u))

            yield f"lora {_describe(cfg)} ({order})", run


def attention_cases(torch, device, dtype, shape):
    from minift.kernels.flash_fwd_tma_triton import tma_space
    from minift.kernels.flash_triton import flash_forward

    b, h, t, d = shape["B"], shape["H"], shape["T"], shape["D"]
    gen = torch.Generator(device=device).manual_seed(1)
    q, k, v = (torch.randn(b, h, t, d, generator=gen, device=device).to(dtype) for _ in range(3))
    for cfg in tma_space(dtype):

        def run(cfg=cfg):
            o, _ = flash_forward(q, k, v, True, **cfg)
            _ran_tma("attention fwd")
            want = torch.nn.functional.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), is_causal=True
            )
            return rel_err(o, want)

        yield f"attention fwd {_describe(cfg)} (causal)", run


def _ran_tma(kernel: str) -> None:
    """The launch went through the TMA route (not a refusal turned into another route)."""
    from minift.kernels.launch import last_launch

    info = last_launch(kernel) or {}
    if not info.get("TMA"):
        raise RuntimeError(f"{kernel} did not launch its TMA kernel: {info}")


def _describe(cfg: dict) -> str:
    tiles = "x".join(str(cfg[key]) for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K") if key in cfg)
    persistent = " persistent" if cfg.get("PERSISTENT") else ""
    return f"{tiles} w{cfg['num_warps']} s{cfg['num_stages']}{persistent}"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton
    os.environ["MINIFT_AUTOTUNE"] = "0"  # each candidate exactly as given, nothing else tried
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    import torch
    from minift.kernels.tma import unavailable_on

    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float16 if args.smoke else torch.bfloat16  # interpreter: no bf16 TMA dots
    record = dict(device=str(device), dtype=str(dtype), cases=[], ok=True)
    if not args.smoke and not torch.cuda.is_available():
        why = "no CUDA device"
    else:
        why = unavailable_on(device)
    if why:
        record.update(skipped=why)
        print(f"no TMA kernel can run here ({why}): nothing to probe")
        return _finish(args, record, 0)
    torch.backends.cuda.matmul.allow_tf32 = False  # a float32 reference, not TF32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "Triton interpreter"
    print(f"TMA probe on {name}, {str(dtype).removeprefix('torch.')}")
    cases = [
        *lora_cases(torch, device, dtype, SMOKE_LORA if args.smoke else LORA_SHAPE),
        *attention_cases(torch, device, dtype, SMOKE_ATTENTION if args.smoke else ATTENTION_SHAPE),
    ]
    for label, run in cases:
        start = time.time()
        try:
            err = run()
            if device.type == "cuda":
                torch.cuda.synchronize()  # a fault surfaces here, not in the next case
        except Exception as exc:  # noqa: BLE001 - reported, then the probe stops
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            record["cases"].append(dict(name=label, error=f"{type(exc).__name__}: {line}"[:300]))
            record["ok"] = False
            print(f"  FAILED {label}: {type(exc).__name__}: {line}"[:300])
            print("  stopping: after a device fault nothing else on this context can be trusted")
            return _finish(args, record, 1)
        ok = err < TOL
        record["ok"] &= ok
        record["cases"].append(dict(name=label, rel_err=err, ok=ok, seconds=time.time() - start))
        state = "ok" if ok else f"MISMATCH (tolerance {TOL})"
        print(f"  {label}: rel err {err:.2e} {state} ({time.time() - start:.1f} s)")
    print(f"{sum(c.get('ok', False) for c in record['cases'])}/{len(cases)} TMA candidates agree")
    return _finish(args, record, 0 if record["ok"] else 1)


def _finish(args, record: dict, rc: int) -> int:
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "probe_tma.json").write_text(json.dumps(record, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main())
