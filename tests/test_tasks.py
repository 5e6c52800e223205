"""The task registry and the default task."""

import json

import pytest

from minift.data.tasks import DEFAULT_TASK, stable_fraction
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


def test_a_jsonl_with_one_class_is_refused(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"t{i}", "label": "spam"}) + "\n" for i in range(40))
    )
    with pytest.raises(
        ValueError, match="every row has the label 'spam'; classification needs at least two"
    ):
        get_task(str(path))


def test_a_class_seen_only_in_validation_is_a_warning_with_counts(tmp_path, recwarn):
    rows = [{"text": f"text number {i}", "label": "a" if i % 2 else "b"} for i in range(60)]
    get_task(_write(tmp_path / "ok.jsonl", rows))
    assert not recwarn.list  # both classes have training rows
    # A text the seeded split (stable_fraction < val_fraction 0.1) sends to validation.
    rare = next(t for i in range(1000) if stable_fraction(t := f"rare text {i}", 0) < 0.1)
    rows.append({"text": rare, "label": "rare"})
    with pytest.warns(UserWarning, match=r"no training row \('rare': 1 row\(s\)\)"):
        get_task(_write(tmp_path / "rare.jsonl", rows))


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
