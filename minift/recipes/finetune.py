"""Fine-tune a base model on a task: the glue between tasks, methods and the trainer.

    model  = a copy of the base (+ a classification head for labelled tasks)
    method = which parameters train, and how (full, or a PEFT method registered later)
    loop   = minift.train.Trainer on batches drawn from the task's training rows
    report = the validation metric, trainable parameters, time and the curves

The task's kind picks the objective: classification (cross-entropy on the head, accuracy),
sft (next-token loss on the response only; exact-match accuracy by greedy generation) or
text (language modelling on the user's text).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from minift.data.batching import classification_batch, sft_example, sft_padded_batch, window_batches
from minift.data.tasks import Task
from minift.data.tokens import encode_documents
from minift.model import GPT
from minift.model.heads import SequenceClassifier
from minift.model.params import count_parameters, find_gpt
from minift.peft.methods import METHODS, Preparation
from minift.seeding import sample_rows
from minift.tokenizer import eot_id, pad_id
from minift.train import TrainConfig, Trainer
from minift.utils import peak_memory_mb, reset_peak_memory


@dataclass
class FinetuneConfig:
    method: str = "full"
    steps: int = 60
    batch_size: int = 32
    lr: float | None = None  # None: the method's default
    max_len: int = 24  # tokens per example (classification: text start + template)
    eval_every: int = 20
    eval_at_start: bool = True  # curves start from the common starting point
    warmup_steps: int = 5
    weight_decay: float = 0.0
    pooling: str = "last"
    seed: int = 0
    precision: str = "fp32"
    out_dir: str | None = None
    progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # method-specific (rank, ...)


@dataclass
class FinetuneResult:
    method: str
    task: str
    metric_name: str
    metric: float
    val_loss: float
    trainable: int
    total: int
    seconds: float
    peak_mb: float
    history: list[dict]
    model: torch.nn.Module | None = None

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable / max(1, self.total)

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("model")
        d.pop("history")
        d["trainable_percent"] = self.trainable_percent
        return d


# ------------------------------------------------------------------------ objectives
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


def _classification(task: Task, enc, config: FinetuneConfig):
    pad = pad_id(enc)
    train_ids = classification_inputs(task, enc, task.train, config.max_len)
    train_labels = [int(r["label"]) for r in task.train]
    val_ids = classification_inputs(task, enc, task.val, config.max_len)
    val_labels = [int(r["label"]) for r in task.val]

    def batch_fn(step: int, micro: int):
        rows = sample_rows(len(train_ids), config.batch_size, config.seed, step, micro).tolist()
        return classification_batch(
            [train_ids[i] for i in rows], [train_labels[i] for i in rows], pad, config.max_len
        )

    def loss_fn(model, batch):
        out = model(batch["idx"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        return out.loss, {}

    def eval_fn(model) -> dict[str, float]:
        correct, loss_sum = 0, 0.0
        for i in range(0, len(val_ids), 64):
            batch = classification_batch(
                val_ids[i : i + 64], val_labels[i : i + 64], pad, config.max_len
            )
            batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
            out = model(
                batch["idx"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            )
            correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
            loss_sum += out.loss.item() * len(batch["labels"])
        return {"val_accuracy": correct / len(val_ids), "val_loss": loss_sum / len(val_ids)}

    return batch_fn, loss_fn, eval_fn, "val_accuracy", "max"


def _sft(task: Task, enc, config: FinetuneConfig):
    pad, eot = pad_id(enc), eot_id(enc)

    def encode(rows):
        prompts = enc.encode_ordinary_batch([r["prompt"] for r in rows])
        responses = enc.encode_ordinary_batch([r["response"] for r in rows])
        return [sft_example(p, r, eot, config.max_len) for p, r in zip(prompts, responses)]

    train, val = encode(task.train), encode(task.val)
    val_prompts = enc.encode_ordinary_batch([r["prompt"] for r in task.val[:64]])
    val_answers = [r["response"] for r in task.val[:64]]

    def batch_fn(step: int, micro: int):
        rows = sample_rows(len(train), config.batch_size, config.seed, step, micro).tolist()
        return sft_padded_batch([train[i] for i in rows], pad)

    def loss_fn(model, batch):
        return model(
            batch["idx"], batch["targets"], attention_mask=batch["attention_mask"]
        ).loss, {}

    def eval_fn(model) -> dict[str, float]:
        device = next(model.parameters()).device
        losses = []
        for i in range(0, len(val), 64):
            b = {k: v.to(device) for k, v in sft_padded_batch(val[i : i + 64], pad).items()}
            losses.append(
                model(b["idx"], b["targets"], attention_mask=b["attention_mask"]).loss.item()
            )
        exact = 0
        for prompt, answer in zip(val_prompts, val_answers):
            n = len(enc.encode_ordinary(answer)) + 1
            out = model.generate(
                torch.tensor([prompt], device=device), n, temperature=0, eos_token_id=eot
            )
            text = enc.decode([t for t in out[0, len(prompt) :].tolist() if t != eot])
            exact += int(text.strip() == answer.strip())
        return {"val_loss": sum(losses) / len(losses), "val_exact_match": exact / len(val_prompts)}

    return batch_fn, loss_fn, eval_fn, "val_exact_match", "max"


def _text(task: Task, enc, config: FinetuneConfig):
    train = encode_documents([r["text"] for r in task.train], enc)
    val = encode_documents([r["text"] for r in task.val], enc)
    batch_fn = window_batches(train, config.batch_size, config.max_len, seed=config.seed)
    val_batches = [
        window_batches(val, config.batch_size, config.max_len, seed=99)(i, 0) for i in range(4)
    ]

    def loss_fn(model, batch):
        return model(batch[0], batch[1]).loss, {}

    def eval_fn(model) -> dict[str, float]:
        return {"val_loss": sum(model(x, y).loss.item() for x, y in val_batches) / len(val_batches)}

    return batch_fn, loss_fn, eval_fn, "val_loss", "min"


OBJECTIVES = {"classification": _classification, "sft": _sft, "text": _text}


def build_model(base: GPT, task: Task, enc, config: FinetuneConfig) -> torch.nn.Module:
    model = copy.deepcopy(base)
    if task.kind == "classification":
        torch.manual_seed(config.seed)
        model = SequenceClassifier(model, task.num_labels, pooling=config.pooling)
        ids = verbalizer_ids(task, enc)
        if ids is not None and len(set(ids)) == len(ids):
            model.init_head(ids)
    return model


def finetune(
    task: Task,
    base: GPT,
    enc,
    config: FinetuneConfig | None = None,
    device: str | torch.device = "cpu",
    keep_model: bool = False,
) -> FinetuneResult:
    """Fine-tune a copy of ``base`` on ``task`` with ``config.method``; base is unchanged."""
    config = config or FinetuneConfig()
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; available: {sorted(METHODS)}")
    if task.kind not in OBJECTIVES:
        raise ValueError(
            f"task kind {task.kind!r} cannot be fine-tuned here; kinds: {sorted(OBJECTIVES)}"
        )
    method = METHODS[config.method]
    config = replace(config, lr=config.lr if config.lr is not None else method.lr)
    model = build_model(base, task, enc, config).to(device)
    prepared = method.prepare(model, config) or Preparation()
    virtual = getattr(find_gpt(model).soft_prompt, "num_tokens", 0)
    if config.max_len + virtual > base.config.block_size:  # soft prompts take block room
        config = replace(config, max_len=base.config.block_size - virtual)
    batch_fn, loss_fn, eval_fn, monitor, mode = OBJECTIVES[task.kind](task, enc, config)
    train_config = TrainConfig(
        steps=config.steps,
        lr=config.lr,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        eval_every=config.eval_every,
        eval_at_start=config.eval_at_start,
        monitor=monitor,
        mode=mode,
        out_dir=config.out_dir,
        seed=config.seed,
        precision=config.precision,
        progress=config.progress,
        desc=f"{config.method} on {task.name}",
    )
    trainable, total = count_parameters(model)
    reset_peak_memory(device)
    t0 = time.perf_counter()
    trainer = Trainer(
        model, train_config, batch_fn, loss_fn, eval_fn,
        param_groups=prepared.param_groups, on_step=prepared.on_step,
    )  # fmt: skip
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    final = result.history[-1]
    return FinetuneResult(
        method=config.method,
        task=task.name,
        metric_name=monitor,
        metric=final[monitor],
        val_loss=final["val_loss"],
        trainable=trainable,
        total=total,
        seconds=seconds,
        peak_mb=peak_memory_mb(device),
        history=result.history,
        model=model.eval() if keep_model else None,
    )
