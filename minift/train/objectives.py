"""What a task trains on: its batches, its loss, its evaluation and the metric to follow.

The task's kind picks the objective:
- classification: cross-entropy of the task head on the text (+ the task's template), and
  accuracy on the validation rows;
- sft: next-token loss on the response only; exact-match accuracy by greedy generation;
- text: language modelling on the user's text; validation loss.

Each builder takes the task, the tokenizer and explicit sizes (max_len tokens per example,
batch_size rows per batch, the seed of the row sampling), and returns batch_fn(step, micro),
a pure function of its arguments (minift.seeding.sample_rows), so runs resume exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from minift.data.batching import classification_batch, sft_example, sft_padded_batch, window_batches
from minift.data.tasks import Task
from minift.data.tokens import encode_documents
from minift.seeding import sample_rows
from minift.tokenizer import eot_id, pad_id


class TaskObjective(NamedTuple):
    batch_fn: Callable  # batch_fn(step, micro) -> batch
    loss_fn: Callable  # loss_fn(model, batch) -> (loss, extra metrics)
    eval_fn: Callable[[torch.nn.Module], dict[str, float]]
    monitor: str  # the metric that reports and early stopping follow
    mode: str  # "min" | "max"
    # The monitored metric per validation example (1.0 / 0.0 for right / wrong), for the
    # paired comparisons of minift.metrics.compare; None where the metric is not a mean.
    scores_fn: Callable[[torch.nn.Module], list[float]] | None = None
    # The whole training set once, in order, in batches: for methods fitted in closed form
    # (the converged linear probe); None where a task has no fixed labelled rows.
    train_set: Callable[[], list[dict]] | None = None


def classification_inputs(task: Task, enc, rows: list[dict], max_len: int) -> list[list[int]]:
    """Token ids of each text cut to fit max_len together with the task's template."""
    template = enc.encode_ordinary(task.template) if task.template else []
    room = max_len - len(template)
    if room < 1:
        raise ValueError(f"max_len {max_len} leaves no room for the {len(template)}-token template")
    return [ids[:room] + template for ids in enc.encode_ordinary_batch([r["text"] for r in rows])]


def verbalizer_ids(task: Task, enc) -> list[int] | None:
    """The first token of each label word, when the task has a verbalizer."""
    if not task.verbalizer:
        return None
    return [enc.encode_ordinary(word)[0] for word in task.verbalizer]


def classification_rows(task: Task, enc, max_len: int):
    """(train ids, train labels, val ids, val labels) of a labelled task, cut to max_len."""
    train_labels = [int(r["label"]) for r in task.train]
    val_labels = [int(r["label"]) for r in task.val]
    train_ids = classification_inputs(task, enc, task.train, max_len)
    return train_ids, train_labels, classification_inputs(task, enc, task.val, max_len), val_labels


def classification_batches(
    ids: list[list[int]], labels: list[int], pad: int, max_len: int, batch_size: int, seed: int
) -> Callable:
    """batch_fn(step, micro): the rows minift.seeding.sample_rows picks, padded to a batch."""

    def batch_fn(step: int, micro: int):
        rows = sample_rows(len(ids), batch_size, seed, step, micro).tolist()
        return classification_batch([ids[i] for i in rows], [labels[i] for i in rows], pad, max_len)

    return batch_fn


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def classification_objective(
    task: Task, enc, max_len: int, batch_size: int, seed: int
) -> TaskObjective:
    pad = pad_id(enc)
    train_ids, train_labels, val_ids, val_labels = classification_rows(task, enc, max_len)
    batch_fn = classification_batches(train_ids, train_labels, pad, max_len, batch_size, seed)

    def loss_fn(model, batch):
        out = model(batch["idx"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        return out.loss, {}

    @torch.no_grad()
    def outputs(model) -> tuple[torch.Tensor, float]:
        """Per-row correctness and the summed loss over the validation rows."""
        correct, loss_sum = [], 0.0
        for i in range(0, len(val_ids), 64):
            batch = classification_batch(val_ids[i : i + 64], val_labels[i : i + 64], pad, max_len)
            batch = {k: v.to(_device(model)) for k, v in batch.items()}
            out = model(
                batch["idx"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            )
            correct.append((out.logits.argmax(-1) == batch["labels"]).float().cpu())
            loss_sum += out.loss.item() * len(batch["labels"])
        return torch.cat(correct), loss_sum

    def eval_fn(model) -> dict[str, float]:
        correct, loss_sum = outputs(model)
        return {"val_accuracy": correct.mean().item(), "val_loss": loss_sum / len(val_ids)}

    def scores_fn(model) -> list[float]:
        return outputs(model)[0].tolist()

    def train_set() -> list[dict]:
        return [
            classification_batch(train_ids[i : i + 128], train_labels[i : i + 128], pad, max_len)
            for i in range(0, len(train_ids), 128)
        ]

    return TaskObjective(
        batch_fn, loss_fn, eval_fn, "val_accuracy", "max", scores_fn=scores_fn, train_set=train_set
    )


def sft_objective(task: Task, enc, max_len: int, batch_size: int, seed: int) -> TaskObjective:
    pad, eot = pad_id(enc), eot_id(enc)

    def encode(rows):
        prompts = enc.encode_ordinary_batch([r["prompt"] for r in rows])
        responses = enc.encode_ordinary_batch([r["response"] for r in rows])
        return [sft_example(p, r, eot, max_len) for p, r in zip(prompts, responses)]

    train, val = encode(task.train), encode(task.val)
    val_prompts = enc.encode_ordinary_batch([r["prompt"] for r in task.val[:64]])
    val_answers = [r["response"] for r in task.val[:64]]

    def batch_fn(step: int, micro: int):
        rows = sample_rows(len(train), batch_size, seed, step, micro).tolist()
        return sft_padded_batch([train[i] for i in rows], pad)

    def loss_fn(model, batch):
        return model(
            batch["idx"], batch["targets"], attention_mask=batch["attention_mask"]
        ).loss, {}

    @torch.no_grad()
    def exact_matches(model) -> list[float]:
        """1.0 where greedy decoding reproduces the reference response, per prompt."""
        device, hits = _device(model), []
        for prompt, answer in zip(val_prompts, val_answers):
            n = len(enc.encode_ordinary(answer)) + 1
            out = model.generate(
                torch.tensor([prompt], device=device), n, temperature=0, eos_token_id=eot
            )
            text = enc.decode([t for t in out[0, len(prompt) :].tolist() if t != eot])
            hits.append(float(text.strip() == answer.strip()))
        return hits

    def eval_fn(model) -> dict[str, float]:
        device = _device(model)
        losses = []
        for i in range(0, len(val), 64):
            b = {k: v.to(device) for k, v in sft_padded_batch(val[i : i + 64], pad).items()}
            losses.append(
                model(b["idx"], b["targets"], attention_mask=b["attention_mask"]).loss.item()
            )
        hits = exact_matches(model)
        return {"val_loss": sum(losses) / len(losses), "val_exact_match": sum(hits) / len(hits)}

    return TaskObjective(
        batch_fn, loss_fn, eval_fn, "val_exact_match", "max", scores_fn=exact_matches
    )


def text_objective(task: Task, enc, max_len: int, batch_size: int, seed: int) -> TaskObjective:
    train = encode_documents([r["text"] for r in task.train], enc)
    val = encode_documents([r["text"] for r in task.val], enc)
    batch_fn = window_batches(train, batch_size, max_len, seed=seed)
    val_batches = [window_batches(val, batch_size, max_len, seed=99)(i, 0) for i in range(4)]

    def loss_fn(model, batch):
        return model(batch[0], batch[1]).loss, {}

    def eval_fn(model) -> dict[str, float]:
        device = _device(model)
        losses = [model(x.to(device), y.to(device)).loss.item() for x, y in val_batches]
        return {"val_loss": sum(losses) / len(losses)}

    return TaskObjective(batch_fn, loss_fn, eval_fn, "val_loss", "min")


OBJECTIVES: dict[str, Callable[..., TaskObjective]] = {
    "classification": classification_objective,
    "sft": sft_objective,
    "text": text_objective,
}


def task_objective(
    task: Task, enc, max_len: int = 24, batch_size: int = 32, seed: int = 0
) -> TaskObjective:
    """The objective of ``task``'s kind; a kind with none (e.g. preference) is a ValueError."""
    if task.kind not in OBJECTIVES:
        raise ValueError(
            f"task kind {task.kind!r} has no fine-tuning objective; kinds: {sorted(OBJECTIVES)}"
        )
    return OBJECTIVES[task.kind](task, enc, max_len=max_len, batch_size=batch_size, seed=seed)
