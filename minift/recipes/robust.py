"""Adversarial robustness of a fine-tuned classifier: train with and without adversarial
training, then attack each model on the validation rows.

    for each training (standard, fgm, pgd, freelb):
        model  = finetune(task, base, config with .adversarial = that training)
        scores = per validation row: clean, under PGD at each radius, under k HotFlip swaps
    table   = accuracy per (training, attack); paired comparisons against standard training

The attacks and the trainings live in minift.robust; this file only wires them to a task.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from minift.data.batching import classification_batch
from minift.data.tasks import Task
from minift.errors import UserError
from minift.recipes.finetune import FinetuneConfig, finetune
from minift.robust import ADVERSARIAL, AdversarialConfig, hotflip_attack, pgd_attack
from minift.tokenizer import eot_id, pad_id
from minift.train.objectives import classification_rows


@dataclass
class AttackConfig:
    radii: tuple[float, ...] = (0.1, 0.2, 0.3)  # PGD radii (L2 over a text's embeddings)
    norm: str = "l2"
    steps: int = 10  # PGD steps
    swaps: int = 2  # HotFlip: at most this many tokens changed (0: no HotFlip column)
    candidates: int = 8  # HotFlip: swaps measured exactly per round

    def __post_init__(self) -> None:
        if any(not r >= 0 for r in self.radii):
            raise UserError(f"attack radii must be >= 0, got {list(self.radii)}")
        if self.swaps < 0:
            raise UserError(f"swaps must be >= 0, got {self.swaps}")


def attack_batches(task: Task, enc, max_len: int, batch_size: int = 64):
    """The validation rows as (batch, editable) pairs; editable marks the text's tokens
    (the template after them is the task's, not the attacker's)."""
    if task.kind != "classification":
        raise UserError(f"attacks apply to classification tasks; {task.name} is {task.kind!r}")
    _, _, val_ids, val_labels = classification_rows(task, enc, max_len)
    n_template = len(enc.encode_ordinary(task.template)) if task.template else 0
    out = []
    for i in range(0, len(val_ids), batch_size):
        ids = val_ids[i : i + batch_size]
        batch = classification_batch(ids, val_labels[i : i + batch_size], pad_id(enc), max_len)
        editable = torch.zeros_like(batch["idx"], dtype=torch.bool)
        for row, seq in enumerate(ids):
            editable[row, : len(seq) - n_template] = True
        out.append((batch, editable))
    return out


def banned_tokens(enc) -> list[int]:
    """Tokens HotFlip may not put in: end-of-text, padding, control characters and the
    byte-level pieces that are no text on their own (half a UTF-8 character)."""
    banned = {eot_id(enc), pad_id(enc)}
    for t in range(enc.n_vocab):
        if t in banned:
            continue
        try:
            if not enc.decode_single_token_bytes(t).decode("utf-8").isprintable():
                banned.add(t)
        except (UnicodeDecodeError, KeyError):
            banned.add(t)
    return sorted(banned)


def robust_scores(
    model, batches, attacks: AttackConfig, banned: list[int]
) -> dict[str, list[float]]:
    """Per validation row, 1.0 / 0.0 for right / wrong: clean, under PGD at each radius
    and under HotFlip with ``attacks.swaps`` swaps."""
    model.eval()
    device = next(model.parameters()).device
    scores: dict[str, list[float]] = {"clean": []}
    for batch, editable in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        y = batch["labels"]
        with torch.no_grad():
            logits = model(batch["idx"], attention_mask=batch["attention_mask"]).logits
        scores["clean"] += (logits.argmax(-1) == y).float().tolist()
        for r in attacks.radii:
            logits = pgd_attack(model, batch, r, attacks.norm, attacks.steps)
            scores.setdefault(f"pgd r={r:g}", []).extend((logits.argmax(-1) == y).float().tolist())
        if attacks.swaps:
            idx = hotflip_attack(
                model, batch, editable.to(device), attacks.swaps, attacks.candidates, banned
            )
            with torch.no_grad():
                logits = model(idx, attention_mask=batch["attention_mask"]).logits
            scores.setdefault(f"hotflip k={attacks.swaps}", []).extend(
                (logits.argmax(-1) == y).float().tolist()
            )
    return scores


@dataclass
class RobustRun:
    training: str
    metric: float  # the fine-tuning's own validation accuracy
    seconds: float
    scores: dict[str, list[float]] = field(default_factory=dict)
    result: object = None  # the FinetuneResult with its model, for the run asked to keep

    def accuracy(self) -> dict[str, float]:
        return {k: sum(v) / len(v) for k, v in self.scores.items()}


def run_robust(
    task: Task,
    base,
    enc,
    config: FinetuneConfig,
    trainings: dict[str, AdversarialConfig | None],
    attacks: AttackConfig,
    device: str | torch.device = "cpu",
    keep: str | None = None,
) -> list[RobustRun]:
    """Fine-tune once per entry of ``trainings`` (None: standard) and attack each model;
    the run named ``keep`` also holds its FinetuneResult (and model), to be saved."""
    for name, adv in trainings.items():
        if adv is not None and adv.method not in ADVERSARIAL:
            raise UserError(f"{name}: unknown adversarial training {adv.method!r}")
    batches = attack_batches(task, enc, config.max_len)
    banned = banned_tokens(enc)
    runs = []
    for name, adv in trainings.items():
        result = finetune(
            task, base, enc, replace(config, adversarial=adv), device, keep_model=True
        )
        scores = robust_scores(result.model, batches, attacks, banned)
        kept = result if name == keep else None
        runs.append(RobustRun(name, result.metric, result.seconds, scores, kept))
    return runs


def default_trainings(radius: float, steps: int = 3) -> dict[str, AdversarialConfig | None]:
    """Standard training and the three adversarial trainings at one radius."""
    return {
        "standard": None,
        "fgm": AdversarialConfig("fgm", radius=radius),
        f"pgd-{steps}": AdversarialConfig("pgd", radius=radius, steps=steps),
        f"freelb-{steps}": AdversarialConfig("freelb", radius=radius, steps=steps),
    }


def robustness_figures(runs: list[RobustRun], kept: RobustRun) -> dict[str, float]:
    """The kept model's accuracy under each attack, and standard training's beside it,
    for a model card."""
    out = {f"{k} accuracy": v for k, v in kept.accuracy().items()}
    standard = next((r for r in runs if r.training == "standard"), None)
    if standard is not None and standard is not kept:
        out.update({f"{k} accuracy, standard training": v for k, v in standard.accuracy().items()})
    return out
