"""`minift personalize`: train one user's LoRA adapter on their preferences (DPO).

    minift feedback --user alice --rounds 20        # alice's answers -> users/alice.jsonl
    minift personalize --user alice                 # -> $MINIFT_HOME/adapters/alice
    minift personalize --user brief                 # a simulated user (minift.personal.users)
    minift generate --adapter alice --prompt Return

The job is minift.recipes.personalize (PersonalizeJob, run_personalize); every default
here is its config's.
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from minift.recipes.personalize import PersonalizeJob

    job = PersonalizeJob(user="default")
    s = sub.add_parser("personalize", help="train a user's own LoRA adapter from their preferences (DPO)")  # fmt: skip
    s.add_argument("--user", required=True, help="whose adapter: a name (or a simulated user: storage, text, net, brief, verbose)")  # fmt: skip
    s.add_argument("--data", default=None, help="preference JSONL (DPO) or the user's own prompt/response JSONL (SFT); default: what `minift feedback --user NAME` recorded")  # fmt: skip
    s.add_argument("--model", default=None, help="policy to adapt (minift model folder; default: the SFT'd base)")  # fmt: skip
    s.add_argument("--rank", type=int, default=job.rank)
    s.add_argument("--steps", type=int, default=job.steps)
    s.add_argument("--lr", type=float, default=job.lr)
    s.add_argument("--beta", type=float, default=job.beta, help="DPO's beta")
    s.add_argument("--save", default=None, help="folder for the adapter (default: $MINIFT_HOME/adapters/USER)")  # fmt: skip
    s.add_argument("--seed", type=int, default=job.seed)
    s.set_defaults(func=cmd_personalize)


def cmd_personalize(a: argparse.Namespace) -> None:
    from minift.recipes.personalize import PersonalizeJob, run_personalize

    run_personalize(
        PersonalizeJob(
            user=a.user,
            data=a.data,
            model=a.model,
            rank=a.rank,
            steps=a.steps,
            lr=a.lr,
            beta=a.beta,
            save=a.save,
            seed=a.seed,
        )  # fmt: skip
    )
