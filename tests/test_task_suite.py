"""The docstring task suite (minift/data/docstring_tasks.py): labels read from source.

The harvest is checked on a file written here, whose answers are known; the registered
tasks on the installed stdlib (balanced, disjoint train and validation, registered and
listed, the small task at 100 rows, seeds reproducible).
"""

import textwrap

import pytest

from minift.data.docstring_tasks import SUITE, harvest_definitions
from minift.recipes.tasks import get_task, list_tasks

SOURCE = '''
"""A module that documents itself for the test."""

def zero():
    """Take nothing and return nothing at all."""
    print("x")

def two(a, b, *args, **kwargs):
    """Take two named arguments and return their sum."""
    def inner(x):
        """An inner helper that returns something."""
        return x
    return a + b

def gen(a):
    """A generator: its return is not a value."""
    yield a
    return 3

class Thing:
    """A class with methods."""

    def method(self, a, *, b=1, c=2):
        """A method of three parameters, self excluded."""
        return None

    @staticmethod
    def static(a):
        """A static method: its one parameter counts."""
        return a
'''


def test_harvest_reads_labels_from_the_source(tmp_path):
    path = tmp_path / "sample.py"
    path.write_text(textwrap.dedent(SOURCE))
    got = {d.name: d for d in harvest_definitions([("sample", path)])}
    assert got[""].kind == "module"
    assert (got["zero"].kind, got["zero"].n_params, got["zero"].returns) == ("function", 0, 0)
    assert (got["two"].n_params, got["two"].returns) == (2, 1)  # *args, **kwargs not counted
    assert got["two.inner"].kind == "function" and got["two.inner"].returns == 1
    assert got["gen"].returns == -1
    assert got["Thing"].kind == "class"
    m = got["Thing.method"]
    assert (m.kind, m.n_params, m.returns) == ("method", 3, 0)  # return None is no value
    assert got["Thing.static"].n_params == 1
    assert got["two"].summary == "Take two named arguments and return their sum."


@pytest.mark.parametrize("name", SUITE)
def test_suite_tasks_are_registered_balanced_and_disjoint(name):
    assert name in list_tasks()
    task = get_task(name, seed=0)
    assert task.train and task.val
    key = "text" if task.kind == "classification" else "prompt"
    assert not {r[key] for r in task.train} & {r[key] for r in task.val}
    if task.kind == "classification":
        counts = [sum(r["label"] == i for r in task.val) for i in range(task.num_labels)]
        assert len(set(counts)) == 1, counts
        assert len(task.verbalizer) == task.num_labels
    assert get_task(name, seed=0).train == task.train
    assert get_task(name, seed=1).train != task.train


def test_the_small_task_and_the_generation_task():
    small = get_task("doc-argcount")
    assert len(small.train) == 100
    gen = get_task("doc-name")
    assert gen.kind == "sft"
    row = gen.val[0]
    assert row["prompt"].endswith("\nname:") and row["response"].startswith(" ")
    assert " " not in row["response"].strip()


def test_doc_kind_labels_match_a_fresh_harvest():
    """Every validation row's label is the kind of some definition with that summary."""
    from minift.data.docstring_tasks import KINDS, load_definitions

    kinds: dict[str, set[str]] = {}
    for d in load_definitions():
        kinds.setdefault(d.summary, set()).add(d.kind)
    for row in get_task("doc-kind").val:
        assert kinds[row["text"]] == {KINDS[row["label"]]}
