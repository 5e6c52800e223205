"""`minift rate`, `minift agreement` and `minift ratings-to-prefs`: human evaluation.

    minift rate --rater ana                        # 20 outputs of the SFT'd base, scored 1-5
    minift rate --rater ana --mode pair --by-uncertainty
    minift agreement ratings.jsonl [--scores auto.jsonl]
    minift ratings-to-prefs ratings.jsonl --out prefs.jsonl   # then minift rlhf --method dpo --data prefs.jsonl

The job is minift.recipes.rate; the measures are minift.rating.
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from minift.recipes.rate import MODES, RateJob

    job = RateJob(rater="-")  # the defaults
    r = sub.add_parser("rate", help="rate a model's outputs (1-5, or the better of two) to JSONL, resumable")  # fmt: skip
    r.add_argument("--rater", required=True, help="your name: ratings, resuming and agreement are per rater")  # fmt: skip
    r.add_argument("--mode", choices=MODES, default=job.mode, help="single: score one output 1-5; pair: pick the better of two")  # fmt: skip
    r.add_argument("--out", default=job.out, help="ratings JSONL to append to (re-run to resume)")  # fmt: skip
    r.add_argument("--answers", help="file of answers (1-5 or 1/2, s, q per line) instead of asking")  # fmt: skip
    r.add_argument("--model", help="policy to sample from (default: the SFT'd base)")
    r.add_argument("--prompts", help="text file, one prompt per line (default: file-words held-out)")  # fmt: skip
    r.add_argument("--items", type=int, default=job.items, help="how many items to draw")
    r.add_argument("--by-uncertainty", action="store_true", help="least sure first (pairs: reward-model margin; single: the policy's log-probability)")  # fmt: skip
    r.add_argument("--max-new-tokens", type=int, default=job.max_new_tokens)
    r.add_argument("--temperature", type=float, default=job.temperature)
    r.add_argument("--seed", type=int, default=job.seed, help="which items (the same seed resumes)")  # fmt: skip
    r.set_defaults(func=cmd_rate)

    a = sub.add_parser("agreement", help="agreement between raters (kappa, alpha) and correlation with automatic scores")  # fmt: skip
    a.add_argument("ratings", help="ratings JSONL written by `minift rate`")
    a.add_argument("--scores", help="JSONL of automatic scores: item plus one or more numeric fields")  # fmt: skip
    a.set_defaults(func=cmd_agreement)

    p = sub.add_parser("ratings-to-prefs", help="pairwise ratings -> preference JSONL for `minift rlhf --method dpo`")  # fmt: skip
    p.add_argument("ratings", help="ratings JSONL of pairs (`minift rate --mode pair`)")
    p.add_argument("--out", required=True, help="preference JSONL to append to")
    p.set_defaults(func=cmd_ratings_to_prefs)


def cmd_rate(a: argparse.Namespace) -> None:
    from minift.recipes.rate import RateJob, run_rate

    run_rate(RateJob(
        rater=a.rater, mode=a.mode, out=a.out, answers=a.answers, model=a.model,
        prompts=a.prompts, items=a.items, by_uncertainty=a.by_uncertainty,
        max_new_tokens=a.max_new_tokens, temperature=a.temperature, seed=a.seed,
    ))  # fmt: skip


def cmd_agreement(a: argparse.Namespace) -> None:
    from minift.rating.records import rating_kind, read_ratings, read_scores
    from minift.rating.report import agreement_table, correlations, format_table

    rows = read_ratings(a.ratings)
    raters = sorted({r["rater"] for r in rows})
    print(f"{a.ratings}: {len(rows)} {rating_kind(rows)} rating(s) by {len(raters)} rater(s): {', '.join(raters)}")  # fmt: skip
    print(format_table(agreement_table(rows)))
    if a.scores:
        print()
        print(format_table(correlations(rows, read_scores(a.scores))))


def cmd_ratings_to_prefs(a: argparse.Namespace) -> None:
    from minift.recipes.rate import export_preferences

    n, ties = export_preferences(a.ratings, a.out)
    print(f"appended {n} preference(s) to {a.out} ({ties} tied item(s) dropped); "
          f"train on them with `minift rlhf --method dpo --data {a.out}`")  # fmt: skip
