"""The long-passkey task: exact labels by construction, and the learning claim: a model
that reads the whole document beats a dense model truncated to block_size."""

import collections
import re

import pytest

from minift.data.encoding import default_encoding
from minift.longctx.task import KEYS, MARKER
from minift.recipes.tasks import get_task, list_tasks


def marked_keys(text: str) -> list[str]:
    return re.findall(re.escape(MARKER) + r" (\w+)\.", text)


def test_registered_and_deterministic():
    assert "long-passkey" in list_tasks()
    a = get_task("long-passkey", seed=3, n_train=8, n_val=4)
    b = get_task("long-passkey", seed=3, n_train=8, n_val=4)
    c = get_task("long-passkey", seed=4, n_train=8, n_val=4)
    assert a.train == b.train and a.val == b.val and a.train != c.train
    assert a.kind == "classification" and a.labels == list(KEYS)


@pytest.mark.parametrize("votes", [1, 3])
def test_the_label_is_the_majority_of_the_marked_keys(votes):
    enc = default_encoding()
    task = get_task(
        "long-passkey", seed=1, n_train=24, n_val=8, votes=votes, distractors=2,
        min_tokens=300, max_tokens=600,
    )  # fmt: skip
    for row in task.train + task.val:
        marked = marked_keys(row["text"])
        assert len(marked) == votes
        (winner, count), *_ = collections.Counter(marked).most_common()
        assert KEYS.index(winner) == row["label"] and count == votes // 2 + 1
        words = re.findall(r"\b(\w+)\b", row["text"])
        for key in KEYS:  # every key also appears unmarked, at least `distractors` times
            assert words.count(key) - marked.count(key) >= 2
        n = len(enc.encode_ordinary(row["text"]))
        assert 300 <= row["n_tokens"] <= 600 and row["n_tokens"] <= n <= row["n_tokens"] + 60
        assert len(row["marker_at"]) == votes and max(row["marker_at"]) <= row["n_tokens"]
    labels = collections.Counter(r["label"] for r in task.train)
    assert set(labels.values()) == {6}  # balanced


def test_markers_sit_far_apart_beyond_the_first_block():
    task = get_task("long-passkey", seed=0, n_train=64, n_val=4, min_tokens=500, max_tokens=800)
    beyond = sum(min(r["marker_at"]) >= 64 for r in task.train)
    assert beyond >= 48  # ~90% of markers lie past a 64-token context


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"votes": 2}, "votes must be a positive odd number"),
        ({"min_tokens": 500, "max_tokens": 100}, "min_tokens <= max_tokens"),
        ({"keys": ("Q",)}, "at least two distinct single words"),
        ({"keys": ("Q", "two words")}, "at least two distinct single words"),
    ],
)
def test_bad_arguments_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        get_task("long-passkey", n_train=4, n_val=4, **kw)


def test_reading_the_whole_document_beats_a_truncated_dense_model():
    """Fast base (block_size 64); documents of 150-350 tokens, no distractors (which key
    appears with the marker). The truncated model sees the marker in ~25% of documents,
    so it cannot exceed ~0.25 + 0.75 / 4 = 0.44; the gated ensemble over segments reads
    every segment. Same reader, base, seed and steps for both."""
    from minift.recipes.long_finetune import LongConfig, finetune_long, train_config
    from minift.recipes.pretrain import load_base

    base, enc = load_base(progress=False, verbose=False)
    assert base.config.block_size == 64
    task = get_task(
        "long-passkey", seed=0, distractors=0, min_tokens=150, max_tokens=350, n_train=1024,
        n_val=64,
    )  # fmt: skip
    results = {}
    for kind in ("truncated", "gated"):
        train = train_config(steps=120, eval_every=0, seed=0)
        config = LongConfig(kind=kind, batch_size=16, train=train)
        results[kind] = finetune_long(task, base, enc, config).metric
    print(results)
    assert results["truncated"] < 0.45
    assert results["gated"] >= 0.7 and results["gated"] >= results["truncated"] + 0.25
