"""`minift finetune --balance B`: a remedy for skewed classes inside a fine-tuning run.

Where the backbone trains (full, lora, ...), the remedy changes the objective: the loss
(weights, focal, logit-adjust) or which rows a batch draws (oversample: each class with
probability 1/K; undersample: a fixed subset with the smallest class's count per class).
Where the backbone is frozen and the head is fitted in closed form (the probe), the
remedy changes that fit: the head is fitted on the frozen pooled features with
minift.imbalance.fit_head, which is also the only place SMOTE applies (it makes
features, not texts). Either way the evaluation adds the metrics that see the minority:
balanced accuracy, macro-F1 and the worst class's recall.
"""

from __future__ import annotations

import torch

from minift.data.batching import classification_batch
from minift.data.tasks import Task
from minift.errors import UserError
from minift.imbalance import balanced_loss, check_balance, fit_head, undersample_indices
from minift.imbalance.sampling import balanced_rows
from minift.metrics import balanced_accuracy, f1, recall
from minift.seeding import sample_rows
from minift.tokenizer import pad_id
from minift.train.features import pooled_features
from minift.train.objectives import TaskObjective, classification_rows


def minority_metrics(y_true: list[int], y_pred: list[int], num_labels: int) -> dict[str, float]:
    labels = list(range(num_labels))
    per_class = recall(y_true, y_pred, average=None, labels=labels, zero_division=0.0)
    return {
        "val_balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "val_macro_f1": float(
            f1(y_true, y_pred, average="macro", labels=labels, zero_division=0.0)
        ),
        "val_min_recall": float(min(per_class)),
    }


def balance_objective(
    balance: str,
    objective: TaskObjective,
    task: Task,
    enc,
    max_len: int,
    batch_size: int,
    seed: int,
    frozen_fit,
    options: dict | None = None,
):
    """(objective, fit) with ``balance`` applied; ``frozen_fit`` is the method's
    closed-form fit (None when the backbone trains)."""
    check_balance(balance)
    if task.kind != "classification":
        raise UserError(f"--balance applies to classification tasks; {task.name} is {task.kind!r}")
    if balance == "smote" and frozen_fit is None:
        raise UserError(
            "--balance smote synthesises pooled features, so it needs a frozen backbone: use "
            "--method probe (the other remedies work with any method)"
        )
    pad, K = pad_id(enc), task.num_labels
    train_ids, train_labels, val_ids, val_labels = classification_rows(task, enc, max_len)
    y_train = torch.tensor(train_labels)
    loss_of = balanced_loss(balance, y_train, K)

    kept = torch.arange(len(train_ids))
    if balance == "undersample":
        kept = undersample_indices(y_train, K, torch.Generator().manual_seed(seed))

    def batch_fn(step: int, micro: int):
        if balance == "oversample":
            rows = balanced_rows(train_labels, K, batch_size, seed, step, micro).tolist()
        else:
            rows = kept[sample_rows(len(kept), batch_size, seed, step, micro)].tolist()
        ids, labels = [train_ids[i] for i in rows], [train_labels[i] for i in rows]
        return classification_batch(ids, labels, pad, max_len)

    def loss_fn(model, batch):
        logits = model(batch["idx"], attention_mask=batch["attention_mask"]).logits
        return loss_of(logits.float(), batch["labels"]), {}

    @torch.no_grad()
    def eval_fn(model) -> dict[str, float]:
        preds = []
        device = next(model.parameters()).device
        for i in range(0, len(val_ids), 64):
            b = classification_batch(val_ids[i : i + 64], None, pad, max_len)
            out = model(b["idx"].to(device), attention_mask=b["attention_mask"].to(device))
            preds += out.logits.argmax(-1).tolist()
        return {**objective.eval_fn(model), **minority_metrics(val_labels, preds, K)}

    fit = None
    if frozen_fit is not None:
        opts = options or {}

        @torch.no_grad()
        def fit(model, batches):
            X, y = pooled_features(model, batches)
            l2 = opts.get("l2") if opts.get("l2") is not None else 1e-3
            W, b = fit_head(X, y, K, balance, l2=l2, seed=seed)
            model.head.weight.copy_(W.to(model.head.weight))
            model.head.bias.copy_(b.to(model.head.bias))
            return {"balance": balance, "l2": l2, "rows": len(y)}

    resampled = balance in ("oversample", "undersample")
    wrapped = objective._replace(
        batch_fn=batch_fn if resampled else objective.batch_fn, loss_fn=loss_fn, eval_fn=eval_fn
    )
    return wrapped, fit
