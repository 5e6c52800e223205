"""LoRA's share of full fine-tuning against the base's pretraining compute.

    python scripts/bench_base_compute.py                       # 0, 225, 450, 900, 1800 steps
    python scripts/bench_base_compute.py --steps 0,450,1800 --finetune-steps 80

Hu et al. (2021) report LoRA matching full fine-tuning on GPT-3 and RoBERTa: bases that
know a great deal, where the task needs a small change. A base that has learned little
needs large changes, which a rank-8 update of the attention matrices cannot make. This
script measures where between the two the embedded bases sit: the same 4 x 128 GPT
pretrained on pydocs for 0 (random init), 225, 450 ("small"), 900 and 1800 ("base",
shipped) steps of 16 x 128 tokens, each fine-tuned on the default task by full
fine-tuning, LoRA r=8 on the attention matrices (1.9% of the parameters) and the
converged linear probe, with the demo's steps, seed, head start (LP-FT: every head from
the probe; ``--head words`` for the label words) and learning rates.

Pretraining compute is counted as C = 6 N D FLOPs (forward and backward, Kaplan et al.
2020; N the parameters, embeddings included here, D the tokens seen). The bases are cached (the first run
pretrains those not yet built: about 10 minutes on 2 cores). Writes
docs/results/base_compute.json (lesson 10 and the README read it), prints a table and
draws docs/base_compute.png.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from minift.data.tasks import DEFAULT_TASK  # noqa: E402
from minift.io import read_json  # noqa: E402
from minift.metrics import accuracy_se, compare  # noqa: E402
from minift.model import GPT  # noqa: E402
from minift.recipes.demo import DEFAULT_HEAD, DEFAULT_STEPS, demo_config  # noqa: E402
from minift.recipes.finetune import HEAD_STARTS, finetune  # noqa: E402
from minift.recipes.pretrain import (  # noqa: E402
    SIZES,
    PretrainRecipe,
    base_dir,
    built_base_dir,
    size_encoding,
)
from minift.recipes.tasks import get_task  # noqa: E402

METHODS = ("full", "lora", "probe")


def recipe_for(steps: int) -> PretrainRecipe:
    """The base recipe at ``steps`` (the warm-up rule gives "small" at 450, "base" at 1800)."""
    return PretrainRecipe(steps=steps, warmup_steps=max(30, steps // 30))


def base_for(steps: int, enc) -> tuple[GPT, dict]:
    recipe = recipe_for(steps)
    if steps == 0:
        torch.manual_seed(recipe.seed)
        model = GPT(recipe.config(enc.n_vocab)).eval()
        return model, {"val_loss": float("nan"), "tokens_seen": 0, "params": model.num_params()}
    named = [n for n, r in SIZES.items() if r == recipe]
    folder = base_dir(named[0]) if named else built_base_dir(recipe, enc, progress=False)
    return GPT.load(folder).eval(), read_json(folder / "report.json", "base report")


def plot(rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = [max(r["pretrain_flops"], 1e12) for r in rows]  # random init drawn at the left edge
    for method, style in (("full", "o-"), ("lora", "s-"), ("probe", "^:")):
        y = [r[method] for r in rows]
        se = [r[f"{method}_se"] for r in rows]
        ax1.errorbar(x, y, yerr=se, fmt=style, capsize=3, label=method)
    ax1.set_xscale("log")
    ax1.set_ylim(0, 1)
    ax1.set_xlabel("pretraining compute, 6ND FLOPs (log; random init at the left)")
    ax1.set_ylabel("validation accuracy (+- 1 s.e.)")
    ax1.set_title("fine-tuned accuracy against the base's pretraining")
    ax1.legend(loc="lower right")
    ax2.plot(x, [100 * r["lora_share"] for r in rows], "s-", color="C1", label="LoRA / full")
    ax2.axhline(95, color="grey", linestyle="--", linewidth=1, label="95%")
    ax2.set_xscale("log")
    ax2.set_ylim(0, 110)
    ax2.set_xlabel("pretraining compute, 6ND FLOPs (log)")
    ax2.set_ylabel("% of full fine-tuning's accuracy")
    ax2.set_title("LoRA r=8's share of full fine-tuning")
    ax2.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default="0,225,450,900,1800", help="pretraining steps per base")
    p.add_argument("--finetune-steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--head", default=DEFAULT_HEAD, choices=HEAD_STARTS,
                   help="where each head starts (default: the demo's)")  # fmt: skip
    p.add_argument("--json", default=str(ROOT / "docs" / "results" / "base_compute.json"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "base_compute.png"))
    p.add_argument(
        "--quick", action="store_true",
        help="random and shipped bases only, 10 fine-tuning steps, results under runs/",
    )  # fmt: skip
    args = p.parse_args()
    if args.quick:  # a smoke run: nothing to pretrain, and the stored results untouched
        args.steps, args.finetune_steps = "0,1800", 10
        args.json, args.plot = (
            "runs/bench_base_compute/quick.json",
            "runs/bench_base_compute/quick.png",
        )
    enc = size_encoding("base")
    task = get_task(DEFAULT_TASK)
    rows = []
    t0 = time.perf_counter()
    head = f"{'steps':>6}{'tokens':>11}{'6ND FLOPs':>11}{'val loss':>9}"
    head += "".join(f"{m:>13}" for m in METHODS) + "  LoRA/full  LoRA vs full"
    print(head)
    for steps in [int(s) for s in args.steps.split(",")]:
        base, report = base_for(steps, enc)
        row = {
            "pretrain_steps": steps,
            "tokens": report["tokens_seen"],
            "pretrain_flops": 6 * report["params"] * report["tokens_seen"],
            "base_val_loss": report["val_loss"],
        }
        scores = {}
        for method in METHODS:
            config = demo_config(method, args.head, steps=args.finetune_steps, progress=False)
            r = finetune(task, base, enc, config)
            row[method], row[f"{method}_se"] = r.metric, accuracy_se(r.metric, len(r.val_scores))
            scores[method] = r.val_scores
        row["lora_share"] = row["lora"] / row["full"]
        verdict = compare("lora", scores["lora"], "full", scores["full"])
        row["lora_vs_full"] = str(verdict)
        row["lora_within_noise_of_full"] = verdict.within_noise
        rows.append(row)
        cells = "".join(f"{row[m]:>7.3f}+-{row[m + '_se']:.3f}" for m in METHODS)
        print(
            f"{steps:>6}{row['tokens']:>11,}{row['pretrain_flops']:>11.1e}{row['base_val_loss']:>9.3f}"
            f"{cells}  {100 * row['lora_share']:>8.0f}%  {verdict.difference:+.3f} "
            f"[{verdict.low:+.3f}, {verdict.high:+.3f}]",
            flush=True,
        )
    out = {
        "task": task.name,
        "finetune_steps": args.finetune_steps,
        "head": args.head,
        "lora": "r=8, alpha=16, c_attn + attn.c_proj",
        "seconds": round(time.perf_counter() - t0),
        "rows": rows,
    }
    path = pathlib.Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # keep the stored rows of other bases measured the same way
        old = json.loads(path.read_text())
        same = (old.get("finetune_steps"), old.get("task"), old.get("head", "words"))
        if same == (args.finetune_steps, task.name, args.head):
            done = {r["pretrain_steps"] for r in rows}
            rows += [r for r in old["rows"] if r["pretrain_steps"] not in done]
            out["seconds"] += old.get("seconds", 0)
    rows.sort(key=lambda r: r["pretrain_steps"])
    path.write_text(json.dumps(out, indent=1) + "\n")
    pathlib.Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    plot(rows, pathlib.Path(args.plot))
    print(f"\n{out['seconds']} s; results {path}, plot {args.plot}")


if __name__ == "__main__":
    main()
