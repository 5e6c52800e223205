"""Benchmark the hybrid pipeline against its ingredients at equal compute.

    python scripts/bench_hybrid.py            # the shipped base, stdlib-package (~1-2 min)
    python scripts/bench_hybrid.py --smoke    # the fast-mode base, few steps (~20 s)

Rows (minift.recipes.hybrid): the teacher (the base fully fine-tuned), then one student
(every other teacher block) trained the same steps four ways: fully on labels, fully on
the teacher's soft targets, LoRA on labels, and the hybrid (LoRA on soft targets, then
merged). Prints the table (metric, trainable parameters, seconds); writes
docs/results/hybrid.json and hybrid.png (or --out DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="the fast-mode base, few steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    args = p.parse_args(argv)
    if args.smoke:
        os.environ["MINIFT_FAST"] = "1"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minift.recipes.hybrid import HybridJob, format_table, run_hybrid

    job = HybridJob(seed=args.seed, **({"teacher_steps": 40, "steps": 30} if args.smoke else {}))
    rows = run_hybrid(job)
    print(format_table(rows))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"job": vars(job), "rows": rows, "load": os.getloadavg(), "argv": sys.argv[1:]}
    (out / "hybrid.json").write_text(json.dumps(record, indent=1))
    names = list(rows)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh(names, [rows[n]["metric"] for n in names])
    for i, n in enumerate(names):
        ax.text(rows[n]["metric"], i, f" {rows[n]['trainable']:,} trained", va="center", fontsize=8)
    ax.set(xlabel="validation accuracy", xlim=(0, 1.2), title=f"hybrid vs ingredients ({job.steps} steps each)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(out / "hybrid.png", dpi=110)
    print(f"wrote {out / 'hybrid.json'} and {out / 'hybrid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
