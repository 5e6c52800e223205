"""Greedy generation with the KV cache: minift's GPT against transformers' generate.

    python scripts/bench_generate.py               # the shipped base's shape and weights
    python scripts/bench_generate.py --threads 1   # steadier on a shared CPU

The same weights in both models (the shipped base copied into GPT2LMHeadModel by
bench_train.hf_model's mapping), the same prompts, greedy decoding (temperature 0 /
do_sample=False), both with their KV cache, the same number of new tokens (no early stop:
no end-of-text id is given). Before timing, both must produce the same tokens. Each
configuration runs in a fresh subprocess; the median of the timed repeats after one
warm-up. Tokens per second = batch x new tokens / median seconds. Table to stdout and
results.json to --out.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_train import CONV1D_SUFFIXES, cpu_name, hf_config, warn_if_busy  # noqa: E402

from minift.model import GPT  # noqa: E402
from minift.recipes.pretrain import base_dir  # noqa: E402

CASES = ((1, 16, 100), (8, 16, 100))  # (batch, prompt tokens, new tokens): within block 128


def models():
    """minift's shipped base and the transformers model holding the same weights."""
    from transformers import GPT2LMHeadModel

    ours = GPT.load(base_dir("base")).eval()
    theirs = GPT2LMHeadModel(hf_config(ours.config))
    state = {
        n: (t.t() if n.endswith(CONV1D_SUFFIXES) else t).contiguous()
        for n, t in ours.state_dict().items()
    }
    theirs.load_state_dict(state, strict=False)
    theirs.config.use_cache = True
    return ours, theirs.eval()


def prompts(batch: int, length: int, vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab - 1, (batch, length), generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def run(impl: str, model, idx: torch.Tensor, new: int) -> torch.Tensor:
    if impl == "minift":
        return model.generate(idx, new, temperature=0)
    mask = torch.ones_like(idx)
    return model.generate(
        idx, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
        use_cache=True, pad_token_id=model.config.eos_token_id,
    )  # fmt: skip


def worker(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, theirs = models()
    batch, length, new = args.case
    idx = prompts(batch, length, ours.config.vocab_size)
    same = torch.equal(run("minift", ours, idx, new), run("hf", theirs, idx, new))
    model = ours if args.impl == "minift" else theirs
    run(args.impl, model, idx, new)  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run(args.impl, model, idx, new)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return {"impl": args.impl, "batch": batch, "prompt": length, "new": new,
            "seconds": seconds, "tokens_per_s": batch * new / seconds, "same_tokens": same}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_generate")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="batch 1 only, one timed repeat")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", default="minift", help=argparse.SUPPRESS)
    p.add_argument("--case", type=int, nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.repeats = 1
    if args.worker:
        print(json.dumps(worker(args)))
        return
    warn_if_busy("before the generation benchmark")
    rows = []
    for case in CASES[:1] if args.quick else CASES:
        for impl in ("minift", "hf"):
            cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--case", *map(str, case),
                   "--repeats", str(args.repeats), "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"greedy generation, KV cache, shipped base (4 x 128), CPU: {cpu_name()}")
    print(
        f"{'batch':>6}{'prompt':>7}{'new':>5}{'minift tok/s':>14}{'HF tok/s':>10}{'ratio':>7}  same tokens"
    )
    for a, b in zip(rows[::2], rows[1::2]):
        print(
            f"{a['batch']:>6}{a['prompt']:>7}{a['new']:>5}{a['tokens_per_s']:>14,.0f}"
            f"{b['tokens_per_s']:>10,.0f}{a['tokens_per_s'] / b['tokens_per_s']:>6.2f}x  {a['same_tokens']}"
        )
    folder = pathlib.Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=1))
    print(f"results: {folder / 'results.json'}")


if __name__ == "__main__":
    main()
