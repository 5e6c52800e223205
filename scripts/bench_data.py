"""Shifted, skewed and scarce data: the tables of issue 13, mean ± SD over seeds.

    python scripts/bench_data.py             # 3 seeds, the shipped base (minutes on 2 cores)
    python scripts/bench_data.py --quick     # 2 seeds, fast mode's tiny base
    python scripts/bench_data.py --only backbone --jobs 2 --seeds 6   # only table 2b

Tables 1, 2 and 3 run on the frozen base's pooled features (DAPT changes the base first);
table 2b fine-tunes the backbone:
1. imbalance: stdlib-package skewed 20:1, each remedy's linear head (minift.imbalance):
   balanced accuracy, macro-F1, the smallest class's recall, accuracy on a test set skewed
   like training (sum_c pi_c recall_c);
2. domain adaptation docstrings -> code comments (minift.recipes.adapt): target accuracy
   of source-only (floor), self-training, DANN, DAPT and the oracle (ceiling), the share
   of the gap closed, the proxy A-distance;
2b. the same shift with a LoRA-trained backbone (minift.recipes.adapt_backbone): floor,
   TAPT, DANN end to end, self-training with the fine-tuned model, their chains
   (minift.recipes.adapt.BACKBONE_DEFAULTS: settings chosen on the selection split),
   oracle, all with the same fine-tuning; the share of the gap closed per seed;
3. augmentation with 10%, 25%, 100% of stdlib-package's rows: EDA and paraphrase against
   the plain head, mixup against the same mini-batch loop without it.
Writes docs/results/data.json and docs/data.png (--out changes the folder).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import random
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def mean_sd(xs: list[float]) -> str:
    if any(x != x for x in xs):  # a NaN: e.g. the gap closed where floor == ceiling
        return "n/a"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def imbalance_table(base, enc, seeds: list[int]) -> dict:
    from minift.imbalance import BALANCES, class_priors, fit_head
    from minift.metrics import balanced_accuracy, f1, recall
    from minift.recipes.adapt import features_of
    from minift.recipes.finetune import FinetuneConfig, build_model
    from minift.recipes.tasks import get_task

    out: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        task = get_task("stdlib-package-skewed", seed=seed)
        model = build_model(base, task, enc, FinetuneConfig())
        X, y = features_of(model, task, enc, task.train, 24)
        Xv, yv = features_of(model, task, enc, task.val, 24)
        K, pi = task.num_labels, class_priors(y, task.num_labels)
        small = int(pi.argmin())
        for balance in BALANCES:
            W, b = fit_head(X, y, K, balance, l2=1e-3, seed=seed)
            pred = (Xv @ W.T + b).argmax(-1).numpy()
            per = recall(yv.numpy(), pred, average=None, labels=list(range(K)))
            row = out.setdefault(balance, {})
            row.setdefault("balanced_accuracy", []).append(balanced_accuracy(yv.numpy(), pred))
            row.setdefault("macro_f1", []).append(float(f1(yv.numpy(), pred, average="macro", labels=list(range(K)))))  # fmt: skip
            row.setdefault("smallest_recall", []).append(float(per[small]))
            row.setdefault("skewed_accuracy", []).append(float((pi.numpy() * per).sum()))
    print("\n1. imbalance (stdlib-package-skewed, 20:1; frozen features, linear head)")
    print(f"{'remedy':14s}{'balanced acc':>18s}{'macro-F1':>18s}{'smallest recall':>18s}{'skewed-test acc':>18s}")  # fmt: skip
    for name, row in out.items():
        print(f"{name:14s}" + "".join(f"{mean_sd(row[k]):>18s}" for k in ("balanced_accuracy", "macro_f1", "smallest_recall", "skewed_accuracy")))  # fmt: skip
    return out


def adapt_table(base, enc, seeds: list[int], dapt_steps: int) -> dict:
    from minift.recipes.adapt import AdaptConfig, run_adapt
    from minift.recipes.tasks import get_task

    out: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        task = get_task("stdlib-package", seed=seed)
        for method in ("source-only", "self-train", "dann", "dapt"):
            r = run_adapt(task, "pycode", base, enc, AdaptConfig(method=method, seed=seed, dapt_steps=dapt_steps))  # fmt: skip
            row = out.setdefault(method, {})
            row.setdefault("target_accuracy", []).append(r.target_accuracy)
            row.setdefault("a_distance_after", []).append(r.a_distance_after)
            out.setdefault("oracle", {}).setdefault("target_accuracy", []).append(r.oracle_target)
    out["oracle"]["target_accuracy"] = out["oracle"]["target_accuracy"][::4]
    floor = statistics.mean(out["source-only"]["target_accuracy"])
    ceiling = statistics.mean(out["oracle"]["target_accuracy"])
    print("\n2. domain adaptation (stdlib-package: docstrings -> code comments; frozen features)")
    print(f"{'method':14s}{'target acc':>18s}{'gap closed':>12s}{'A-distance':>18s}")
    for name, row in out.items():
        m = statistics.mean(row["target_accuracy"])
        closed = (m - floor) / (ceiling - floor) if ceiling != floor else float("nan")
        a = mean_sd(row["a_distance_after"]) if "a_distance_after" in row else ""
        print(f"{name:14s}{mean_sd(row['target_accuracy']):>18s}{closed:>12.0%}{a:>18s}")
    return out


BACKBONE_METHODS = (
    "tapt",
    "dann",
    "self-train",
    "tapt-self-train",
    "tapt-dann",
    "tapt-dann-self-train",
)


def backbone_seed(seed: int, steps: int, dapt_steps: int, quick: bool) -> dict:
    """One seed of the trained-backbone table (its own process under --jobs)."""
    if quick:
        os.environ["MINIFT_FAST"] = "1"
    import torch

    from minift.adapt import DANNConfig
    from minift.recipes.adapt import AdaptConfig, compare_backbones
    from minift.recipes.pretrain import load_base
    from minift.recipes.tasks import get_task

    torch.set_num_threads(1)
    base, enc = load_base(progress=False, verbose=False)
    config = AdaptConfig(**BACKBONE_SETTINGS, dann=DANNConfig(lambd=BACKBONE_DEFAULTS["lambd"]), steps=steps, dapt_steps=dapt_steps, seed=seed)  # fmt: skip
    return compare_backbones(
        get_task("stdlib-package", seed=seed), base, enc, config, BACKBONE_METHODS
    )


# minift.recipes.adapt.BACKBONE_DEFAULTS says how they were chosen (not on the test rows).
sys.path.insert(0, str(ROOT))
from minift.recipes.adapt import BACKBONE_DEFAULTS  # noqa: E402

BACKBONE_SETTINGS = dict(backbone="lora", max_len=48, threshold=BACKBONE_DEFAULTS["threshold"],
                         rounds=BACKBONE_DEFAULTS["rounds"], dapt_lr=BACKBONE_DEFAULTS["dapt_lr"])  # fmt: skip


def backbone_table(
    seeds: list[int], steps: int, dapt_steps: int, quick: bool, jobs: int, runs: dict | None = None
) -> dict:
    """Run ``seeds`` (in ``jobs`` processes), add them to ``runs`` (seed -> method -> row,
    from an earlier call with the same settings) and print the table over all of them:
    the mean ± SD over seeds, the share of the gap per seed, and the paired comparison
    with source-only over every seed's test rows (minift.metrics.compare)."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    import numpy as np

    from minift.metrics import compare

    run = partial(backbone_seed, steps=steps, dapt_steps=dapt_steps, quick=quick)
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as ex:
            per_seed = list(ex.map(run, seeds))
    else:
        per_seed = [run(s) for s in seeds]
    runs = {**(runs or {}), **{str(s): r for s, r in zip(seeds, per_seed)}}
    out: dict[str, dict[str, list]] = {}
    for r in runs.values():
        floor, ceiling = r["source-only"]["target_accuracy"], r["oracle"]["target_accuracy"]
        for method, row in r.items():
            o = out.setdefault(method, {})
            for k, v in row.items():
                o.setdefault(k, []).append(v)
            gap = (row["target_accuracy"] - floor) / (ceiling - floor) if ceiling != floor else float("nan")  # fmt: skip
            o.setdefault("gap_closed", []).append(gap)
    e = BACKBONE_DEFAULTS
    print(f"\n2b. domain adaptation with a LoRA-trained backbone ({steps} steps, lr 5e-3, 48 tokens; "
          f"DANN lambda {e['lambd']}, self-training threshold {e['threshold']} x {e['rounds']} rounds, "
          f"TAPT {dapt_steps} steps at {e['dapt_lr']:g}); seeds {sorted(runs, key=int)}")  # fmt: skip
    print(
        f"{'method':16s}{'target acc':>16s}{'gap closed':>16s}  per seed{'':14s}{'selection acc':>16s}"
    )
    floor_rows = np.concatenate(out["source-only"]["test_correct"])
    for name, row in out.items():
        per = " ".join(f"{g:+.0%}" for g in row["gap_closed"])
        sel = mean_sd(row["selection_accuracy"]) if name != "oracle" else "(trained on it)"
        print(f"{name:16s}{mean_sd(row['target_accuracy']):>16s}{mean_sd(row['gap_closed']):>16s}  [{per}]{sel:>16s}")  # fmt: skip
    for name, row in out.items():
        if name != "source-only":
            c = compare(name, np.concatenate(row["test_correct"]), "source-only", floor_rows)
            row["vs_source_only"] = str(c)
            print(" ", c)
    return {"runs": runs, "table": {n: {k: v for k, v in row.items() if k != "test_correct"} for n, row in out.items()}}  # fmt: skip


def augment_table(base, enc, seeds: list[int]) -> dict:
    from minift.augment import SynonymTable, eda, paraphrase, train_head
    from minift.recipes.adapt import features_of
    from minift.recipes.finetune import FinetuneConfig, build_model
    from minift.recipes.tasks import get_task
    from minift.train.features import fit_linear_head

    syn = SynonymTable(base.transformer.wte.weight.detach(), enc, k=5)
    out: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        task = get_task("stdlib-package", seed=seed)
        K = task.num_labels
        model = build_model(base, task, enc, FinetuneConfig())
        feats = lambda rows, m=model, t=task: features_of(m, t, enc, rows, 24)  # noqa: E731
        X, y = feats(task.train)
        Xv, yv = feats(task.val)
        copies = [{"text": eda(r["text"], 0.1, random.Random(f"{seed}:{k}:{r['text']}"), syn), "label": r["label"]} for r in task.train for k in range(4)]  # fmt: skip
        Xe, ye = feats(copies)
        Xp, yp = feats([{"text": t, "label": r["label"]} for t, r in zip(paraphrase(base, enc, [r["text"] for r in task.train], seed=seed), task.train)])  # fmt: skip
        for fraction in (0.1, 0.25, 1.0):
            by = {c: [i for i, r in enumerate(task.train) if r["label"] == c] for c in range(K)}
            keep = torch.tensor(sorted(i for ix in by.values() for i in ix[: max(3, round(fraction * len(ix)))]))  # fmt: skip
            ke = (keep[:, None] * 4 + torch.arange(4)).flatten()
            heads = {
                "none": fit_linear_head(X[keep], y[keep], K, l2=1e-2),
                "EDA": fit_linear_head(
                    torch.cat([X[keep], Xe[ke]]), torch.cat([y[keep], ye[ke]]), K, l2=1e-2
                ),  # fmt: skip
                "paraphrase": fit_linear_head(
                    torch.cat([X[keep], Xp[keep]]), torch.cat([y[keep], yp[keep]]), K, l2=1e-2
                ),  # fmt: skip
                "sgd": train_head(X[keep], y[keep], K, alpha=None, seed=seed),
                "mixup": train_head(X[keep], y[keep], K, alpha=0.4, seed=seed),
            }
            for name, (W, b) in heads.items():
                acc = float(((Xv @ W.T + b).argmax(-1) == yv).double().mean())
                out.setdefault(f"{fraction:g}", {}).setdefault(name, []).append(acc)
    print("\n3. augmentation (stdlib-package; frozen features): gain over each baseline")
    print(f"{'rows':>6s}{'plain head':>16s}{'EDA - plain':>18s}{'paraphrase - plain':>20s}{'mixup - same loop':>20s}")  # fmt: skip
    for fraction, row in out.items():
        gains = [[a - b for a, b in zip(row[m], row[base_])] for m, base_ in (("EDA", "none"), ("paraphrase", "none"), ("mixup", "sgd"))]  # fmt: skip
        print(f"{float(fraction):>6.0%}{mean_sd(row['none']):>16s}" + "".join(f"{mean_sd(g):>19s}" for g in gains))  # fmt: skip
    return out


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("imbalance", "adapt", "adapt_backbone", "augment") if k in results]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.4), squeeze=False)
    for ax, key in zip(axes[0], panels):
        rows = results[key]["table"] if key == "adapt_backbone" else results[key]
        if key == "augment":
            for m in ("none", "EDA", "paraphrase", "sgd", "mixup"):
                ax.plot([100 * float(f) for f in rows], [statistics.mean(rows[f][m]) for f in rows], marker="o", label=m)  # fmt: skip
            ax.set(xscale="log", xlabel="% of training rows", ylabel="val accuracy", title="augmentation")  # fmt: skip
            ax.legend(fontsize=8)
            continue
        metric = "balanced_accuracy" if key == "imbalance" else "target_accuracy"
        names = list(rows)
        ax.bar(names, [statistics.mean(rows[n][metric]) for n in names],
               yerr=[statistics.stdev(rows[n][metric]) if len(rows[n][metric]) > 1 else 0 for n in names])  # fmt: skip
        title = {"imbalance": "imbalance remedies, 20:1", "adapt": "docstrings -> comments, frozen",
                 "adapt_backbone": "docstrings -> comments, LoRA backbone"}[key]  # fmt: skip
        ax.set(ylabel=f"{metric.replace('_', ' ')} (mean ± SD over seeds)", title=title)
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 seeds, tiny base, short DAPT")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--dapt-steps", type=int, default=100)
    p.add_argument("--out", default=None, help="folder for results/data.json and data.png")
    p.add_argument("--only", choices=("frozen", "backbone"), default=None,
                   help="frozen: the three frozen-feature tables; backbone: the LoRA UDA table")  # fmt: skip
    p.add_argument("--backbone-steps", type=int, default=100)
    p.add_argument("--tapt-steps", type=int, default=None,
                   help="the backbone table's TAPT steps (default: BACKBONE_DEFAULTS')")  # fmt: skip
    p.add_argument("--seed-start", type=int, default=0,
                   help="first seed; the backbone table adds these seeds to those already in data.json")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="processes for the backbone table's seeds")
    args = p.parse_args()
    if args.quick:
        os.environ["MINIFT_FAST"] = "1"
    sys.path.insert(0, str(ROOT))
    global torch
    import torch

    from minift.io import read_json, write_json
    from minift.recipes.pretrain import load_base

    t0 = time.perf_counter()
    seeds = list(range(args.seed_start, args.seed_start + (2 if args.quick else args.seeds)))
    base, enc = load_base()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; seeds {seeds}")  # fmt: skip
    dapt_steps = 10 if args.quick else args.dapt_steps
    out = pathlib.Path(args.out) if args.out else ROOT / "docs"
    results = read_json(out / "results" / "data.json") if (out / "results" / "data.json").exists() else {}  # fmt: skip
    if args.only != "backbone":
        results.update(
            imbalance=imbalance_table(base, enc, seeds),
            adapt=adapt_table(base, enc, seeds, dapt_steps),
            augment=augment_table(base, enc, seeds),
        )
    if args.only != "frozen":
        steps = 4 if args.quick else args.backbone_steps
        tapt_steps = 10 if args.quick else args.tapt_steps or BACKBONE_DEFAULTS["dapt_steps"]
        previous = results.get("adapt_backbone", {})
        settings = {
            "steps": steps,
            "dapt_steps": tapt_steps,
            "quick": args.quick,
            **BACKBONE_SETTINGS,
        }
        runs = previous.get("runs") if previous.get("settings") == settings else None
        results["adapt_backbone"] = {**backbone_table(seeds, steps, tapt_steps, args.quick, args.jobs, runs), "settings": settings}  # fmt: skip
    if args.only != "backbone":
        results.update(seeds=seeds, quick=args.quick)
    results["seconds"] = None
    results["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "results" / "data.json", results)
    plot(results, out / "data.png")
    print(
        f"\nwrote {out / 'results' / 'data.json'} and {out / 'data.png'} ({results['seconds']:.0f}s)"
    )


if __name__ == "__main__":
    main()
