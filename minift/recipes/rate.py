"""`minift rate`: sample a model's outputs and ask a person to rate them, and turn pairwise
ratings into DPO preferences.

    items    = N prompts (a file, or the file-words task's held-out prompts) drawn with a
               seed, each with one sampled output (rated 1-5) or two (which is better?);
               the same seed gives the same items, so a second session resumes
    order    = as drawn, or least sure first (--by-uncertainty): for pairs the reward
               model's margin |r_1 - r_2|, for single outputs the policy's own mean
               log-probability per token (minift.rating.uncertainty)
    asking   = minift.ask's loop (the one `minift feedback` uses): terminal or a file of
               answers, atomic appends, Ctrl-C and EOF keep everything, resumable per rater
    output   = a ratings JSONL (minift.rating.records): rater, item, prompt, outputs,
               score or preferred

    run_rate(RateJob(rater="ana", mode="pair", out="ratings.jsonl"))

:func:`ratings_to_preferences` turns the pairwise ratings into ``prompt, chosen,
rejected`` rows, one per item, by majority over the raters (a tie is dropped): the file
`minift rlhf --method dpo --data` trains on.
"""

from __future__ import annotations

import os
import pathlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from minift import ask
from minift.rating.panel import Item
from minift.rating.records import SCALE, append_ratings, rated_items, read_ratings
from minift.rating.uncertainty import margin_order
from minift.rlhf.preference import append_preferences, encode_pairs, encode_prompt
from minift.rlhf.rollout import response_logprobs, sample_responses
from minift.tokenizer import eot_id, pad_id

MODES = ("single", "pair")
SCORE_ANSWERS = {str(v): f"score {v}" for v in range(SCALE[0], SCALE[1] + 1)} | ask.CONTROL
PAIR_ANSWERS = {"1": "the first is better", "2": "the second is better"} | ask.CONTROL
QUESTIONS = {
    "single": f"Rate it {SCALE[0]} (bad) to {SCALE[1]} (good) [s = skip, q = quit] ",
    "pair": "Which output is better? [1/2, s = skip, q = quit] ",
}


def answer_choices(mode: str) -> dict[str, str]:
    return SCORE_ANSWERS if mode == "single" else PAIR_ANSWERS


@dataclass
class RateJob:
    rater: str = ""  # who is rating (required): resuming and agreement are per rater
    mode: str = "single"  # single: one output, a score 1-5; pair: two outputs, a preference
    out: str = "ratings.jsonl"
    answers: str | None = None  # a file of answers instead of the terminal
    model: str | None = None  # a minift model folder; None: the SFT'd base of `minift rlhf`
    prompts: str | None = None  # a text file, one prompt a line; None: file-words held-out
    items: int = 20
    by_uncertainty: bool = False
    max_new_tokens: int = 24
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.rater.strip() or any(c in self.rater for c in "\n\t"):
            raise ValueError("give the rater's name with --rater NAME (ratings are kept per rater)")  # fmt: skip
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.items < 1 or self.max_new_tokens < 1 or not self.temperature > 0:
            raise ValueError(f"need items >= 1, max_new_tokens >= 1, temperature > 0: {self.items}, {self.max_new_tokens}, {self.temperature}")  # fmt: skip


def read_prompts(path: str | os.PathLike) -> list[str]:
    lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    prompts = [p for p in lines if p.strip()]
    if not prompts:
        raise ValueError(f"{path}: no prompts (one per line)")
    return prompts


@torch.no_grad()
def make_items(policy, enc, prompts: Sequence[str], job: RateJob) -> tuple[list[Item], list[float]]:  # fmt: skip
    """The job's items, drawn with its seed, and each one's certainty (higher: surer) for
    single outputs (the policy's mean log-probability per token); pairs whose two outputs
    are the same are dropped (nothing to choose)."""
    g = torch.Generator().manual_seed(job.seed)
    picks = torch.randint(0, len(prompts), (job.items,), generator=g).tolist()
    per = 1 if job.mode == "single" else 2
    ids = [encode_prompt(enc, prompts[i]) for i in picks for _ in range(per)]
    rollout = sample_responses(policy, ids, job.max_new_tokens, eot_id(enc), pad_id(enc), job.temperature, g)  # fmt: skip
    texts = rollout.texts(enc)
    lp, _ = response_logprobs(policy, rollout.sequences, rollout.attention_mask, rollout.prompt_len, job.temperature)  # fmt: skip
    mask = rollout.response_mask.float()
    certainty = ((lp * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist()
    items, sure = [], []
    for k, i in enumerate(picks):
        outputs = tuple(texts[k * per : (k + 1) * per])
        if len(set(outputs)) == per:
            items.append(Item(prompts[i], outputs))
            sure.append(certainty[k])
    return items, sure


def uncertainty_order(items: Sequence[Item], certainty: Sequence[float], mode: str, enc) -> list[int]:  # fmt: skip
    """Least sure first: pairs by the default reward model's |margin|, single outputs by
    the policy's mean log-probability per token (lowest first)."""
    if mode == "single":
        return sorted(range(len(items)), key=lambda i: certainty[i])
    from minift.recipes.rlhf_stages import default_reward_model
    from minift.rlhf.reward import score_pairs

    rm, _ = default_reward_model()
    rows = [{"prompt": it.prompt, "chosen": it.outputs[0], "rejected": it.outputs[1]} for it in items]  # fmt: skip
    first, second = score_pairs(rm, encode_pairs(rows, enc, rm.config.block_size), enc)
    return margin_order((first - second).tolist()).tolist()


def _render(mode: str, total: int) -> Callable[[tuple[int, Item]], str]:
    def render(numbered: tuple[int, Item]) -> str:
        k, it = numbered
        head = f"\n[{k + 1}/{total}] Prompt: {it.prompt}"
        if mode == "single":
            return f"{head}\n  {it.prompt}{it.outputs[0]}"
        return f"{head}\n  [1] {it.prompt}{it.outputs[0]}\n  [2] {it.prompt}{it.outputs[1]}"

    return render


def run_rate(job: RateJob, answers: Iterable[str] | None = None, show: Callable[[str], None] = print) -> ask.LoopResult:  # fmt: skip
    """Ask about the job's items (module doc); ``answers`` (an iterator, for tests) stand in
    for the terminal or the job's answers file. Every check on the answers file and on the
    ratings file already there runs before any model is loaded."""
    choices = answer_choices(job.mode)
    if answers is None and job.answers:
        answers = ask.read_answers(job.answers, choices)
    done = rated_items(job.out, job.rater)  # a torn or broken file stops here, untouched
    prompts = read_prompts(job.prompts) if job.prompts else None
    from minift.recipes.rlhf import load_policy
    from minift.recipes.rlhf_stages import task_prompts

    policy, enc = load_policy(job.model)
    items, certainty = make_items(policy, enc, prompts or task_prompts("val"), job)
    order = uncertainty_order(items, certainty, job.mode, enc) if job.by_uncertainty else range(len(items))  # fmt: skip
    todo = sum(it.id not in done for it in items)
    show(f"{len(items)} item(s), {len(items) - todo} already rated by {job.rater} in {job.out}"
         + (", least sure first" if job.by_uncertainty else ""))  # fmt: skip

    def record(numbered: tuple[int, Item], answer: str) -> dict:
        it = numbered[1]
        row = {"rater": job.rater, "item": it.id, "prompt": it.prompt, "outputs": list(it.outputs)}  # fmt: skip
        row["score" if job.mode == "single" else "preferred"] = int(answer)
        return row

    result = ask.ask_loop(
        [(k, items[i]) for k, i in enumerate(order)], _render(job.mode, len(items)),
        answers if answers is not None else ask.terminal_answers(QUESTIONS[job.mode], choices),
        record, job.out, key=lambda numbered: numbered[1].id, done=done, show=show,
        append=append_ratings,
    )  # fmt: skip
    show("\n" + ask.summary(result, "rating(s)") + f"; agreement: `minift agreement {job.out}`")
    return result


def ratings_to_preferences(rows: Sequence[dict]) -> tuple[list[dict], int]:
    """(preference rows, items dropped as ties): one ``prompt, chosen, rejected`` row per
    pairwise item, the output most raters preferred as chosen, with ``margin`` the share of
    raters who agreed minus one half (0.5 when unanimous)."""
    votes: dict[str, Counter] = defaultdict(Counter)
    shown: dict[str, dict] = {}
    for r in rows:
        if "preferred" not in r:
            raise ValueError(f"rater {r['rater']!r}, item {r['item']!r}: a score, not a preference; convert pairwise ratings (minift rate --mode pair)")  # fmt: skip
        votes[r["item"]][r["preferred"]] += 1
        shown[r["item"]] = r
    prefs, ties = [], 0
    for item, count in votes.items():
        if count[1] == count[2]:
            ties += 1
            continue
        r = shown[item]
        win = 1 if count[1] > count[2] else 2
        chosen, rejected = r["outputs"][win - 1], r["outputs"][2 - win]
        share = count[win] / (count[1] + count[2])
        prefs.append({"prompt": r.get("prompt", ""), "chosen": chosen, "rejected": rejected, "margin": share - 0.5})  # fmt: skip
    return prefs, ties


def export_preferences(ratings: str | os.PathLike, out: str | os.PathLike) -> tuple[int, int]:
    """Append the preferences of a ratings file to a preference JSONL; (rows written, ties)."""
    prefs, ties = ratings_to_preferences(read_ratings(ratings))
    if not prefs:
        raise ValueError(f"{ratings}: no pairwise item with a majority ({ties} tie(s)); nothing to write")  # fmt: skip
    append_preferences(out, prefs)
    return len(prefs), ties
