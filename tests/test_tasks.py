"""The task registry and the default task."""

import json

import pytest

from minift.data.tasks import DEFAULT_TASK
from minift.recipes.tasks import get_task, list_tasks


def test_default_task_is_balanced_deterministic_and_disjoint():
    task = get_task(DEFAULT_TASK)
    again = get_task(DEFAULT_TASK)
    assert task.train == again.train and task.val == again.val
    assert task.kind == "classification" and task.num_labels == 6
    counts = [sum(r["label"] == i for r in task.val) for i in range(task.num_labels)]
    assert len(set(counts)) == 1  # balanced validation set
    assert not {r["text"] for r in task.train} & {r["text"] for r in task.val}
    assert get_task(DEFAULT_TASK, seed=1).val != task.val


def test_sort_words_answers_are_exact():
    task = get_task("sort-words", n_train=50, n_val=20)
    for row in task.train + task.val:
        words = row["prompt"].split("\n")[0].removeprefix("sort: ").split()
        assert row["response"].split() == sorted(words)
    assert not {r["prompt"] for r in task.train} & {r["prompt"] for r in task.val}


def test_jsonl_task_maps_string_labels(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"text": f"example number {i}", "label": "pos" if i % 2 else "neg"} for i in range(60)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    task = get_task(str(path))
    assert task.labels == ["neg", "pos"] and task.kind == "classification"
    assert len(task.train) + len(task.val) == 60 and task.val


def test_unknown_task_lists_the_registered_ones():
    with pytest.raises(ValueError, match="stdlib-package"):
        get_task("no-such-task")
    assert "sort-words" in list_tasks()
