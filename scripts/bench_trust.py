"""Trustworthy fine-tuning (issue 15): the robustness, backdoor and memorisation tables.

    python scripts/bench_trust.py               # 3 seeds, the shipped base (several minutes on 2 cores)
    python scripts/bench_trust.py --quick       # 1 seed, fast mode's tiny base, few steps

1. Robustness: doc-returns, full fine-tuning, standard vs FGM / PGD-3 / FreeLB-3 trained
   at L2 radius 0.2; clean accuracy, accuracy under PGD (10 steps) at radii 0.1-0.4 and
   under HotFlip with 2 swaps; mean ± sd over seeds.
2. Backdoor: the trigger "cf mn bb" -> class 0 at poison rates 0-0.1 (clean accuracy,
   attack success); at rate 0.1, ONION and spectral signatures: rows found, attack
   success after retraining without the flagged rows.
3. Memorisation: a canary, an API key "sk-..." whose last 6 digits are the secret, planted
   0, 1, 8 or 32 times in docstring text the base is fine-tuned on (as a language model);
   its exposure among 1000 sampled candidates (Carlini et al. 2019); then the 32-copy text
   after exact deduplication (one copy left) and after the secret scrubber (none left).
Writes docs/results/trust.json and docs/trust.png (--out changes the folder).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def mean_sd(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def robustness(base, enc, seeds, steps, quick):
    from minift.recipes.finetune import FinetuneConfig, train_config
    from minift.recipes.robust import AttackConfig, default_trainings, run_robust
    from minift.recipes.tasks import get_task

    attacks = AttackConfig(radii=(0.1, 0.2) if quick else (0.1, 0.2, 0.3, 0.4), steps=10, swaps=2)
    table: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        task = get_task("doc-returns", seed=seed)
        config = FinetuneConfig(method="full", train=train_config(steps=steps, seed=seed, eval_every=0, progress=False))  # fmt: skip
        for run in run_robust(task, base, enc, config, default_trainings(0.2, 3), attacks):
            for col, acc in run.accuracy().items():
                table.setdefault(run.training, {}).setdefault(col, []).append(acc)
            table[run.training].setdefault("seconds", []).append(run.seconds)
    cols = list(next(iter(table.values())))
    print(f"\n1. robustness (doc-returns, full, trained at r=0.2, {len(seeds)} seeds, mean ± sd)")
    print(f"{'training':10s}" + "".join(f"{c:>17s}" for c in cols))
    for name, row in table.items():
        print(f"{name:10s}" + "".join(f"{mean_sd(row[c]):>17s}" for c in cols))
    return table


def backdoor_table(base, enc, steps, rates):
    from minift.recipes.finetune import FinetuneConfig, train_config
    from minift.recipes.security import (
        backdoor,
        detection,
        onion_defence,
        spectral_defence,
        without,
    )
    from minift.recipes.tasks import get_task
    from minift.security import poison_rows

    task = get_task("doc-returns", seed=0)
    config = FinetuneConfig(method="full", train=train_config(steps=steps, eval_every=0, progress=False))  # fmt: skip
    out = {"rates": {}, "defences": {}}
    print("\n2. backdoor (doc-returns, full, seed 0; trigger 'cf mn bb' -> class 0)")
    for rate in rates:
        r = backdoor(task, base, enc, config, rate, 0, 0)
        out["rates"][str(rate)] = {"clean": r.clean_accuracy, "asr": r.attack_success, "rows": len(r.poisoned)}  # fmt: skip
        print(f"  rate {rate:5.2f} ({len(r.poisoned):3d} rows): clean {r.clean_accuracy:.3f}, attack success {r.attack_success:.3f}")  # fmt: skip
    attacked = backdoor(task, base, enc, config, max(rates), 0, 0)
    rows, _ = poison_rows(task.train, max(rates), 0, 0)
    flags = {
        "ONION": onion_defence(base, enc, task, rows, config.max_len),
        "spectral": spectral_defence(attacked.model, task, enc, rows, 0.2, config.max_len),
    }
    for name, flagged in flags.items():
        found = detection(flagged, attacked.poisoned)
        kept, left = without(rows, flagged, attacked.poisoned)
        again = backdoor(task, base, enc, config, 0.0, 0, 0, kept, left)
        out["defences"][name] = {**found, "clean": again.clean_accuracy, "asr": again.attack_success}  # fmt: skip
        print(f"  {name:8s} flagged {found['flagged']}, found {found['found']}/{len(attacked.poisoned)}; attack success {attacked.attack_success:.3f} -> {again.attack_success:.3f}, clean {again.clean_accuracy:.3f}")  # fmt: skip
    return out


def canary_table(base, enc, steps, copies_list, m=1000):
    """Exposure of a canary planted ``copies`` times, then of the most-copied text after
    each of the data-preparation defences: exact deduplication (what remains is one copy)
    and the secret scrubber (the canary is an API key, which it replaces by <SECRET>)."""
    import math

    from minift.data.dedup import exact_dedup
    from minift.data.tasks import Task
    from minift.recipes.finetune import FinetuneConfig, finetune, train_config
    from minift.recipes.tasks import get_task
    from minift.security import candidates, exposure, make_canary, perplexities, scrub

    texts = [r["text"] for r in get_task("doc-kind", seed=0, per_class=100).train]
    # a secret the scrubber's api_key rule knows: "sk-" and 20 characters, the last 6 secret
    canary, value = make_canary(6, seed=0, prefix="the api key is sk-q7Rm2xK9vLp3Wz")
    prefix = canary[: -len(value)]
    others = candidates(6, m, seed=0, exclude=value)
    out = {}

    def measure(name: str, train_texts: list[str]) -> None:
        train = [{"text": t} for t in train_texts]
        task = Task(name="canary-text", kind="text", train=train, val=[{"text": t} for t in texts[:50]])  # fmt: skip
        cfg = FinetuneConfig(method="full", max_len=64, train=train_config(steps=steps, eval_every=0, progress=False))  # fmt: skip
        model = finetune(task, base, enc, cfg, keep_model=True).model
        ppl = perplexities(model, enc, [canary] + [prefix + v for v in others])
        losses = [math.log(p) for p in ppl]
        out[name] = exposure(losses[0], losses[1:], 10**6)
        print(f"  {name:>18s}: exposure {out[name]:.2f} bits")

    print(f"\n3. canary exposure ({m} sampled candidates of 10^6; max measurable log2 {m} = {math.log2(m):.1f})")  # fmt: skip
    for copies in copies_list:
        measure(str(copies), texts + [canary] * copies)
    most = texts + [canary] * max(copies_list)
    kept = exact_dedup(most)
    measure(f"{max(copies_list)} deduplicated", [most[i] for i in kept])
    scrubbed = [scrub(t)[0] for t in most]
    if any(value in t for t in scrubbed):
        raise RuntimeError("the scrubber left the canary's secret in the training text")
    measure(f"{max(copies_list)} scrubbed", scrubbed)
    return out


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    rob = results["robustness"]
    radii = sorted(float(c.split("=")[1]) for c in next(iter(rob.values())) if c.startswith("pgd"))
    for name, row in rob.items():
        ys = [statistics.mean(row["clean"])] + [statistics.mean(row[f"pgd r={r:g}"]) for r in radii]
        axes[0].plot([0.0] + radii, ys, "o-", label=name)
    axes[0].set(xlabel="PGD radius", ylabel="accuracy", ylim=(0, 1), title="robust accuracy (mean over seeds)")  # fmt: skip
    axes[0].legend(fontsize=8)
    bd = results["backdoor"]["rates"]
    xs = [float(r) for r in bd]
    axes[1].plot(xs, [v["asr"] for v in bd.values()], "o-", label="attack success")
    axes[1].plot(xs, [v["clean"] for v in bd.values()], "s-", label="clean accuracy")
    axes[1].set(xlabel="poison rate", ylim=(0, 1.02), title="backdoor")
    axes[1].legend(fontsize=8)
    ca = results["canary"]
    axes[2].bar(list(ca), list(ca.values()))
    axes[2].tick_params(axis="x", labelsize=7)
    axes[2].set(
        xlabel="copies of the canary (then the most copies, deduplicated or scrubbed)",
        ylabel="exposure (bits)",
        title="memorisation",
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="1 seed, the tiny base, few steps")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "docs"), help="folder for results/trust.json and trust.png")  # fmt: skip
    args = p.parse_args()
    if args.quick:
        os.environ["MINIFT_FAST"] = "1"
    from minift.io import write_json
    from minift.recipes.pretrain import load_base

    t0 = time.perf_counter()
    base, enc = load_base(progress=False, verbose=False)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    steps = 10 if args.quick else 60
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {__import__('torch').get_num_threads()}",  # fmt: skip
        "load_at_start": os.getloadavg()[0],
        "robustness": robustness(base, enc, seeds, steps, args.quick),
        "backdoor": backdoor_table(
            base, enc, steps, (0.0, 0.1) if args.quick else (0.0, 0.01, 0.03, 0.1)
        ),  # fmt: skip
        "canary": canary_table(
            base,
            enc,
            20 if args.quick else 150,
            (0, 1, 8) if args.quick else (0, 1, 8, 32),
            m=200 if args.quick else 1000,
        ),  # fmt: skip
    }
    results["load_at_end"] = os.getloadavg()[0]
    results["seconds"] = time.perf_counter() - t0
    out = pathlib.Path(args.out)
    write_json(out / "results" / "trust.json", results)
    plot(results, out / "trust.png")
    print(f"\nwrote {out / 'results' / 'trust.json'} and {out / 'trust.png'} in {results['seconds']:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
