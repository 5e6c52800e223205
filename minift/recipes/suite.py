"""The standard evaluation suite: every task scored the same way, with its interval.

``minift eval --suite default`` runs SUITES["default"] (version SUITE_VERSION) on one
model. What each kind of task is scored by:

=================  ==========================================================  ======
kind               metrics (95% percentile-bootstrap intervals over examples)   rows
=================  ==========================================================  ======
lm                 bits per byte of held-out pydocs documents (tokenizer-free)  200 docs
classification     accuracy, macro F1, expected calibration error (15 bins)     all val
sft                exact match and token F1 (SQuAD), chrF / 100, greedy decoding 64
preference         pairwise accuracy: log p(chosen) > log p(rejected)            200
=================  ==========================================================  ======

A classification task is read by the model's own head when it was fine-tuned on that
task (mode "head"), otherwise zero-shot through its language-model head and the task's
label words (mode "prompt", minift.prompting). The long-context task, long-passkey
(documents of 2,000 to 20,000 tokens), is read like any other in prompt mode: through
the last tokens that fit the context, which is all a model without a long-context method
(minift.longctx, lessons 12-14) can see, so a short-context model scores near chance. The suite and the rows it scores are fixed
by SUITE_VERSION: change either and bump the version, so that numbers in two reports are
comparable exactly when their versions agree. Beside each task: the share of its
evaluation texts that share an 8-word n-gram with the pretraining corpus (pydocs train;
minift.metrics.contamination).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from minift.data.batching import classification_batch
from minift.data.tasks import Task
from minift.metrics import (
    bootstrap_ci,
    chrf,
    exact_match_scores,
    f1,
    lm_statistics,
    token_f1_scores,
)
from minift.metrics.calibration import calibration_from_probs
from minift.metrics.contamination import NgramIndex, contamination
from minift.model.params import find_gpt
from minift.prompting import classify
from minift.tokenizer import eot_id, pad_id
from minift.train.objectives import classification_inputs

# v2 added long-passkey (v1: the same without it)
SUITE_VERSION = 2
SUITES = {
    "default": (
        "lm-pydocs", "stdlib-package", "doc-kind", "doc-returns", "doc-argcount",
        "long-passkey", "doc-name", "file-words",
    ),
}  # fmt: skip
LM_DOCS, GEN_ROWS, PREF_ROWS, RESAMPLES, CONTAMINATION_N = 200, 64, 200, 1000, 8


@dataclass
class Subject:
    """A model as the suite sees it: the language model, and the head it was tuned with."""

    name: str
    lm: torch.nn.Module
    enc: object
    classifier: torch.nn.Module | None = None
    trained: dict | None = None  # the saved task: name, kind, labels, max_len
    parameters: int = 0


@dataclass
class TaskScore:
    task: str
    kind: str
    mode: str
    n: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # value, low, high
    seconds: float = 0.0
    contamination: float | None = None  # share of examples with an 8-gram in pretraining
    per_example: list[float] | None = None  # the main metric per example


def _interval(values, statistic=np.mean) -> dict[str, float]:
    est = bootstrap_ci(np.asarray(values, dtype=np.float64), statistic, n_resamples=RESAMPLES)
    return {"value": est.value, "low": est.low, "high": est.high}


def _indexed(fn):
    """A statistic of example indices (a bootstrap resamples the indices)."""
    return lambda idx: fn(np.asarray(idx, dtype=np.int64))


def classification_probs(subject: Subject, task: Task) -> tuple[torch.Tensor, str]:
    """(n, K) probabilities of the validation rows, and the mode that gave them."""
    t = subject.trained
    if subject.classifier is not None and t and t["kind"] == task.kind and t["labels"] == task.labels:  # fmt: skip
        ids = classification_inputs(task, subject.enc, task.val, t["max_len"])
        pad, out = pad_id(subject.enc), []
        with torch.no_grad():
            for i in range(0, len(ids), 64):
                b = classification_batch(ids[i : i + 64], [0] * len(ids[i : i + 64]), pad, t["max_len"])  # fmt: skip
                logits = subject.classifier(b["idx"], attention_mask=b["attention_mask"]).logits
                out.append(torch.softmax(logits.double(), -1))
        return torch.cat(out), "head"
    return classify(subject.lm, subject.enc, task, 0).probs, "prompt"


def score_classification(subject: Subject, task: Task) -> TaskScore:
    probs, mode = classification_probs(subject, task)
    y = np.array([int(r["label"]) for r in task.val])
    pred = probs.argmax(-1).numpy()
    correct = (pred == y).astype(np.float64)
    score = TaskScore(task.name, task.kind, mode, len(y), per_example=correct.tolist())
    score.metrics["accuracy"] = _interval(correct)
    macro = _indexed(lambda i: f1(y[i], pred[i], average="macro", labels=range(task.num_labels)))
    score.metrics["macro_f1"] = _interval(np.arange(len(y)), macro)
    score.metrics["ece"] = {"value": calibration_from_probs(probs, y).ece}
    return score


@torch.no_grad()
def score_sft(subject: Subject, task: Task) -> TaskScore:
    enc, model, eot = subject.enc, subject.lm, eot_id(subject.enc)
    rows, outputs = task.val[:GEN_ROWS], []
    for r in rows:
        prompt = enc.encode_ordinary(r["prompt"])[-(model.config.block_size // 2) :]
        n = len(enc.encode_ordinary(r["response"])) + 1  # room for the answer and its end
        out = model.generate(torch.tensor([prompt]), n, temperature=0, eos_token_id=eot)
        outputs.append(enc.decode([t for t in out[0, len(prompt) :].tolist() if t != eot]))
    refs = [r["response"] for r in rows]
    em, tf1 = exact_match_scores(outputs, refs), token_f1_scores(outputs, refs)
    score = TaskScore(task.name, task.kind, "generate", len(rows), per_example=em)
    score.metrics["exact_match"] = _interval(em)
    score.metrics["token_f1"] = _interval(tf1)
    score.metrics["chrf"] = {"value": chrf(outputs, refs) / 100}  # on [0, 1] like the rest
    return score


@torch.no_grad()
def _sequence_logprob(model, prompt: list[int], response: list[int]) -> float:
    """log p(response | prompt), summed over the response's tokens (the prompt cut from
    the left when both do not fit); an empty response has log-probability 0."""
    if not response:
        return 0.0
    ids = (prompt + response)[-(model.config.block_size + 1) :]
    x = torch.tensor([ids])
    logp = torch.log_softmax(model(x[:, :-1]).logits[0].double(), -1)
    n = min(len(response), len(ids) - 1)
    return float(logp[-n:].gather(1, x[0, -n:, None]).sum())


@torch.no_grad()
def score_preference(subject: Subject, task: Task) -> TaskScore:
    enc, rows = subject.enc, task.val[:PREF_ROWS]
    wins = []
    for r in rows:
        p = enc.encode_ordinary(r["prompt"])
        chosen = _sequence_logprob(subject.lm, p, enc.encode_ordinary(r["chosen"]))
        rejected = _sequence_logprob(subject.lm, p, enc.encode_ordinary(r["rejected"]))
        wins.append(float(chosen > rejected))
    score = TaskScore(task.name, task.kind, "likelihood", len(rows), per_example=wins)
    score.metrics["pairwise_accuracy"] = _interval(wins)
    return score


def score_lm(subject: Subject, texts: list[str], name: str = "lm-pydocs") -> TaskScore:
    """Bits per byte over documents, its interval by resampling whole documents."""
    stats = [lm_statistics(subject.lm, subject.enc, [t]) for t in texts]
    nll = np.array([s.nll for s in stats])
    nbytes = np.array([s.n_bytes for s in stats], dtype=np.float64)
    bpb = _indexed(lambda i: nll[i].sum() / (math.log(2) * nbytes[i].sum()))
    score = TaskScore(name, "lm", "likelihood", len(texts))
    score.metrics["bits_per_byte"] = _interval(np.arange(len(texts)), bpb)
    return score


SCORERS = {
    "classification": score_classification,
    "sft": score_sft,
    "preference": score_preference,
}


def task_texts(task_or_texts) -> list[str]:
    """The evaluation texts a contamination check reads."""
    if isinstance(task_or_texts, list):
        return task_or_texts
    keys = {"classification": ("text",), "sft": ("prompt", "response"), "preference": ("prompt", "chosen")}  # fmt: skip
    return [" ".join(r[k] for k in keys.get(task_or_texts.kind, ("text",))) for r in task_or_texts.val]  # fmt: skip


def lm_documents(n: int = LM_DOCS) -> list[str]:
    from minift.data.corpus import load_corpus

    docs = [d.text for d in load_corpus("pydocs", "val") if d.text.strip()]
    return docs[:n]


@functools.lru_cache(maxsize=2)
def pretraining_index(n: int = CONTAMINATION_N) -> NgramIndex:
    """The n-grams of pydocs' train split (built once per process: a few seconds)."""
    from minift.data.corpus import load_corpus

    return NgramIndex((d.text for d in load_corpus("pydocs", "train")), n)


def score(subject: Subject, item, index: NgramIndex | None = None) -> TaskScore:
    """One suite item: "lm-pydocs" or a Task; the contamination share beside it."""
    t0 = time.perf_counter()
    if item == "lm-pydocs":
        texts = lm_documents()
        result = score_lm(subject, texts)
    else:
        if item.kind not in SCORERS:
            raise ValueError(f"task {item.name!r} is {item.kind!r}; the suite scores {sorted(SCORERS)} and lm-pydocs")  # fmt: skip
        texts, result = task_texts(item), SCORERS[item.kind](subject, item)
    if index is not None:
        result.contamination = contamination(texts, index).dirty_share
    result.seconds = time.perf_counter() - t0
    return result


def subject_from(model, enc, name: str, meta: dict | None = None) -> Subject:
    """A Subject from a loaded model (a GPT, or a classifier around one) and its metadata."""
    lm = find_gpt(model.eval())  # no dropout while scoring
    head = model if model is not lm else None
    trained = None
    if meta is not None:
        t = meta["task"]
        trained = {"name": t["name"], "kind": t["kind"], "labels": t["labels"], "max_len": meta["max_len"]}  # fmt: skip
    return Subject(name, lm, enc, head, trained, sum(p.numel() for p in model.parameters()))
