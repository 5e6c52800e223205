"""RLHF on the embedded default: the speed of a PPO iteration, and what each method reaches.

    python scripts/bench_rlhf.py                 # speed (CPU, and CUDA when present) + goals
    python scripts/bench_rlhf.py --quick         # fast-mode models, few iterations (~1 minute)
    python scripts/bench_rlhf.py --speed-only    # only the timing table
    python scripts/bench_rlhf.py --threads 1     # steadier on a CPU shared with other jobs

Speed: a PPO iteration has three phases, timed separately (minift.rlhf.trainer):
generation (sampling the batch of responses with the KV cache), scoring (one forward
pass each of the policy with its value head, the reference and the reward model), and
optimisation (ppo_epochs passes over the batch in minibatches, forward + backward +
AdamW). Samples per second of a phase = rollouts per iteration / the phase's median time
over the timed iterations (after one warm-up iteration). The models are the cached SFT
policy and reward model of the ``file-words`` task.

Goals: from the same SFT policy, on held-out prompts, the hidden ground truth, the
reward model's score and the KL to the reference of: the reference itself, PPO with the
KL penalty, PPO without it (reward hacking), DPO on the same comparisons, and best-of-n;
plus the reward model's held-out pairwise accuracy. Curves of both PPO runs in
ppo_curves.png and the PPO dashboard in ppo_dashboard.png.

The tables go to stdout, results.json and the plots to --out (default runs/bench_rlhf).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import time

import torch

from minift.io import write_json
from minift.recipes.rlhf_methods import run_ppo
from minift.recipes.rlhf_stages import default_policy, default_reward_model, task_prompts
from minift.rlhf.dpo import DPOConfig, train_config, train_dpo
from minift.rlhf.evaluate import evaluate_best_of_n, evaluate_policy
from minift.rlhf.plots import plot_ppo
from minift.rlhf.tasks import truth_score
from minift.rlhf.trainer import PPOConfig


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def warn_if_busy(when: str) -> None:
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cores:
        print(f"warning ({when}): load average {load:.1f} on {cores} cores; CPU timings are noisy")


# ------------------------------------------------------------------------ speed
def speed(device: str, batch: int, iterations: int, fast: bool) -> dict:
    policy, enc = default_policy(fast, verbose=False)
    reward_model, _ = default_reward_model(fast, verbose=False)
    config = PPOConfig(
        iterations=iterations + 1, batch_size=batch, num_minibatches=4, ppo_epochs=2, seed=0
    )
    policy, reward_model = policy.to(device), reward_model.to(device)
    run = run_ppo(policy, enc, reward_model, task_prompts("train"), config)
    rows = run.result.history[1:]  # the first iteration warms up
    med = {k: statistics.median(r[k] for r in rows) for k in ("t_generate", "t_score", "t_optimise")}  # fmt: skip
    total = sum(med.values())
    return {
        "device": device, "batch": batch, "iterations": iterations,
        "length": statistics.fmean(r["length"] for r in rows),
        **{k + "_s": v for k, v in med.items()},
        "generate_per_s": batch / med["t_generate"], "score_per_s": batch / med["t_score"],
        "optimise_per_s": batch / med["t_optimise"], "total_per_s": batch / total,
    }  # fmt: skip


def speed_table(rows: list[dict]) -> str:
    head = (
        f"{'device':6s} {'batch':>5s} {'resp len':>8s} {'gen s':>7s} {'score s':>7s} {'opt s':>7s} "
        f"{'gen/s':>7s} {'score/s':>8s} {'opt/s':>7s} {'total/s':>8s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['device']:6s} {r['batch']:5d} {r['length']:8.1f} {r['t_generate_s']:7.3f} "
            f"{r['t_score_s']:7.3f} {r['t_optimise_s']:7.3f} {r['generate_per_s']:7.0f} "
            f"{r['score_per_s']:8.0f} {r['optimise_per_s']:7.0f} {r['total_per_s']:8.1f}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------ goals
def goals(args, out: pathlib.Path) -> dict:
    fast = args.quick
    policy, enc = default_policy(fast)
    reward_model, rm_report = default_reward_model(fast)
    val_prompts, train_prompts = task_prompts("val"), task_prompts("train")
    n_eval = 128 if fast else args.eval_samples
    results: dict[str, dict] = {}
    seconds: dict[str, float] = {}

    def evaluate(model, name: str) -> None:
        m = evaluate_policy(model, enc, val_prompts, n_eval, reward_model, policy)
        results[name] = {k: v for k, v in m.items()}
        print(f"{name:24s} truth {m['truth']:+.3f}  reward {m['rm_score']:+.3f}  KL {m['kl']:6.2f}", flush=True)  # fmt: skip

    print(f"reward model: held-out pairwise accuracy {rm_report['val_accuracy']:.3f}")
    evaluate(policy, "reference (SFT)")
    histories = {}
    for name, beta in (("PPO beta=0.2", 0.2), ("PPO no KL penalty", 0.0)):
        config = PPOConfig(
            iterations=6 if fast else args.ppo_iterations, batch_size=16 if fast else 64,
            num_minibatches=4, ppo_epochs=2, lr=3e-4, kl_coef=beta, seed=args.seed,
        )  # fmt: skip
        t0 = time.perf_counter()
        run = run_ppo(policy, enc, reward_model, train_prompts, config, truth=truth_score)
        seconds[name] = time.perf_counter() - t0
        histories[name] = run.result.history
        evaluate(run.model.policy, name)
    from minift.recipes.tasks import get_task

    task = get_task("file-words")
    train = (
        train_config(steps=15, lr=3e-3, seed=args.seed) if fast else train_config(seed=args.seed)
    )
    dpo_config = DPOConfig(batch_size=16 if fast else 32, beta=0.1, train=train)
    t0 = time.perf_counter()
    dpo = train_dpo(policy, enc, task.train[:256] if fast else task.train, None, dpo_config)
    seconds["DPO beta=0.1"] = time.perf_counter() - t0
    evaluate(dpo.model, "DPO beta=0.1")
    for n in (4, 16):
        t0 = time.perf_counter()
        m = evaluate_best_of_n(policy, enc, reward_model, val_prompts, n, n_eval // 2, truth=truth_score)  # fmt: skip
        seconds[f"best-of-{n}"] = time.perf_counter() - t0
        results[f"best-of-{n}"] = m
        print(f"{'best-of-' + str(n):24s} truth {m['truth']:+.3f}  reward {m['rm_score']:+.3f}  KL <= {m['kl']:.2f}")  # fmt: skip

    plot_ppo(histories, out / "ppo_dashboard.png", title="PPO: beta 0.2 (solid), no KL penalty (dashed)")  # fmt: skip
    plot_curves(histories, out / "ppo_curves.png")
    return {
        "reward_model_val_accuracy": rm_report["val_accuracy"], "eval_samples": n_eval,
        "methods": results, "seconds": seconds, "ppo_history": histories,
    }  # fmt: skip


def plot_curves(histories: dict[str, list[dict]], path: pathlib.Path) -> None:
    """Reward-model score and truth per iteration, and truth against KL, for each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, rows) in enumerate(histories.items()):
        it = [r["iteration"] for r in rows]
        ax1.plot(it, [r["score"] for r in rows], "-", color=f"C{i}", label=f"{name}: reward model")
        ax1.plot(it, [r["truth"] for r in rows], "--", color=f"C{i}", label=f"{name}: truth")
        ax2.plot([r["kl"] for r in rows], [r["truth"] for r in rows], "o-", ms=3, color=f"C{i}", label=name)  # fmt: skip
    ax1.set_xlabel("PPO iteration")
    ax1.set_ylabel("mean per batch")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("KL to the reference (nats per response)")
    ax2.set_ylabel("truth")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def goals_table(g: dict) -> str:
    lines = [f"{'method':24s} {'truth':>7s} {'RM score':>9s} {'KL':>7s} {'seconds':>8s}"]
    lines.append("-" * len(lines[0]))
    for name, m in g["methods"].items():
        kl = f"<={m['kl']:.2f}" if name.startswith("best") else f"{m['kl']:.2f}"
        secs = g["seconds"].get(name)
        lines.append(
            f"{name:24s} {m['truth']:+7.3f} {m['rm_score']:+9.3f} {kl:>7s} "
            + (f"{secs:8.1f}" if secs is not None else f"{'':8s}")
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------ main
def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": os.getloadavg()[0],
    }  # fmt: skip
    print(f"machine: {machine}")
    results: dict = {"machine": machine, "quick": args.quick}
    if not args.goals_only:
        warn_if_busy("before timing")
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])
        batches = (16,) if args.quick else (32, 64)
        rows = []
        for device in devices:
            for batch in batches + ((256,) if device == "cuda" else ()):
                rows.append(speed(device, batch, 2 if args.quick else args.iterations, args.quick))
                print(speed_table(rows[-1:]).splitlines()[-1], flush=True)
        print("\nPPO iteration, median over the timed iterations (samples per second per phase)")
        print(speed_table(rows))
        results["speed"] = rows
    if not args.speed_only:
        print("\ngoals on held-out prompts:")
        results["goals"] = goals(args, out)
        print("\n" + goals_table(results["goals"]))
    write_json(out / "results.json", results)
    print(f"\nresults.json and plots in {out}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench_rlhf", help="folder for results.json and plots")
    p.add_argument("--quick", action="store_true", help="fast-mode models, few iterations")
    p.add_argument("--speed-only", action="store_true")
    p.add_argument("--goals-only", action="store_true")
    p.add_argument("--iterations", type=int, default=5, help="timed PPO iterations per speed row")
    p.add_argument("--ppo-iterations", type=int, default=50, help="PPO iterations for the goals")
    p.add_argument("--eval-samples", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--cpu-only", action="store_true", help="skip CUDA even when present")
    return p.parse_args()


if __name__ == "__main__":
    main()
