"""`minift fairness` on a user's protected-attribute file: the rows, the swap rule, the
report (against fairlearn on the model's own predictions), the counterfactual test only
with a swap rule, and bad input as one-line errors before any work."""

import json

import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

import minift.cli
import minift.recipes.pretrain
from minift.errors import UserError
from minift.fairness import GENDER_PAIRS
from minift.fairness.data import load_group_rows, swap_rule
from minift.recipes.evaluate import saved_model_fairness
from minift.recipes.fairness import group_file_task, positive_index, probabilities
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
from minift.recipes.pretrain import load_base
from minift.recipes.saved import base_reference, save_finetuned
from minift.recipes.tasks import get_task


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def people_rows(n_train=150):
    """doc-returns-people as a user would have it: label names, the group in "gender"."""
    t = get_task("doc-returns-people")
    return [
        {"text": r["text"], "label": t.labels[r["label"]], "gender": "mf"[r["group"]]}
        for r in t.train[:n_train] + t.val
    ]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    base, enc = load_base(progress=False, verbose=False)
    task = get_task("doc-returns-people")
    train = train_config(steps=6, eval_every=6, progress=False)
    result = finetune(task, base, enc, FinetuneConfig("full", train=train), keep_model=True)
    path = tmp_path_factory.mktemp("fair") / "m"
    save_finetuned(path, result, task, enc, base_reference(None, base))
    return path, result.model, enc, task


def test_rows_carry_their_group_as_a_string(tmp_path):
    data = write(tmp_path / "d.jsonl", [
        {"text": "a", "label": "x", "who": 1}, "", {"text": "b", "label": "y", "who": "two"},
    ])  # fmt: skip
    rows = load_group_rows(data, "who")
    assert [r["group"] for r in rows] == ["1", "two"] and rows[0]["who"] == 1


@pytest.mark.parametrize(
    "rows, field, message",
    [
        ([{"text": "a", "label": "x", "g": "f"}, {"text": "b", "label": "y", "g": "f"}], "g",
         "all 2 rows are in group 'f' (field 'g'); fairness compares two groups or more"),
        ([{"text": "a", "label": "x", "g": "f"}, {"text": "b", "label": "y"}], "g",
         "row 2 has no field 'g'"),
        ([{"text": "a", "label": "x", "gender": "f"}], "group", "name the attribute's field with --group-field"),  # noqa: E501
        ([{"text": "a", "label": "x", "g": None}], "g", "must be a non-empty string or an integer"),
        ([{"text": "a", "label": None, "g": "f"}], "g", "field 'label' must be a string or an integer"),  # noqa: E501
        ([{"text": "a", "g": "f"}], "g", "line 1: missing field 'label'"),
        (["{not json"], "g", "line 1: invalid JSON"),
        ([], "g", "empty file"),
    ],
)  # fmt: skip
def test_bad_files_are_one_line_errors(tmp_path, rows, field, message):
    data = write(tmp_path / "d.jsonl", rows)
    with pytest.raises(UserError) as err:
        load_group_rows(data, field)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_swap_rules():
    assert swap_rule("gender") == GENDER_PAIRS and swap_rule(None) is None
    assert swap_rule("Mr:Ms, king:queen") == (("Mr", "Ms"), ("king", "queen"))
    for bad in ("he", "he:he", "he:she:it", "he:s4e"):
        with pytest.raises(UserError, match="WORD:WORD"):
            swap_rule(bad)


def test_a_file_as_a_task_keeps_two_groups_in_each_split(tmp_path):
    task = group_file_task(str(write(tmp_path / "p.jsonl", people_rows())), "gender")
    assert task.labels == ["a value", "no value"] and len(task.train) + len(task.val) == len(
        people_rows()
    )
    assert {r["group"] for r in task.val} == {"m", "f"} == {r["group"] for r in task.train}
    assert positive_index(task.labels, None) == 1 and positive_index(task.labels, "a value") == 0
    with pytest.raises(UserError, match="labels: a value, no value"):
        positive_index(task.labels, "maybe")
    # one "f" row only: it falls in one split, so the other has one group
    few = [dict(r, gender="m") for r in people_rows(40)[:39]] + [dict(people_rows()[0], gender="f")]
    with pytest.raises(UserError, match="hold 1 group"):
        group_file_task(str(write(tmp_path / "few.jsonl", few)), "gender")


def test_report_on_a_file_against_fairlearn(saved, tmp_path):
    path, model, enc, task = saved
    rows = people_rows()
    data = write(tmp_path / "p.jsonl", rows)
    report = saved_model_fairness(str(path), str(data), "gender", None, "a value")
    y = [task.labels.index(r["label"]) for r in rows]
    pred = probabilities(model, task, enc, [r["text"] for r in rows], 24).argmax(-1).tolist()
    groups = [r["gender"] for r in rows]
    assert report["n"] == len(rows) and report["positive_label"] == "a value"
    assert report["accuracy"] == pytest.approx(sum(p == t for p, t in zip(pred, y)) / len(y), abs=1e-12)  # fmt: skip
    pos = task.labels.index("a value")  # fairlearn's positive class is 1: recode
    y1, p1 = [int(t == pos) for t in y], [int(p == pos) for p in pred]
    dp = demographic_parity_difference(y1, p1, sensitive_features=groups)
    eo = equalized_odds_difference(y1, p1, sensitive_features=groups)
    assert report["demographic_parity"] == pytest.approx(dp, abs=1e-12)
    assert report["equalized_odds"] == pytest.approx(eo, abs=1e-12)
    for g in ("m", "f"):
        mine = [p == t for p, t, h in zip(pred, y, groups) if h == g]
        assert report["group_accuracy"][g] == pytest.approx(sum(mine) / len(mine), abs=1e-12)
    # no swap rule: no counterfactual figure, and the reason
    assert report["flip_rate"] is None and "no swap rule" in report["counterfactual"]
    # a rule that changes no text: skipped, said so
    none = saved_model_fairness(str(path), str(data), "gender", swap_rule("king:queen"))
    assert none["flip_rate"] is None and f"changes none of the {len(rows)} texts" in none["counterfactual"]  # fmt: skip
    # the pronoun rule changes every text ("He notes:" / "She notes:")
    swapped = saved_model_fairness(str(path), str(data), "gender", swap_rule("gender"))
    assert swapped["counterfactual_rows"] == len(rows) and 0.0 <= swapped["flip_rate"] <= 1.0


def test_cli_reports_on_a_file_and_skips_the_counterfactual_without_a_rule(tmp_path, capsys):
    data = write(tmp_path / "p.jsonl", people_rows(60))
    argv = ["fairness", "--data", str(data), "--group-field", "gender",
            "--steps", "2"]  # fmt: skip
    assert minift.cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "group f: accuracy" in out and "group m: accuracy" in out and "skipped" in out
    assert "counterfactual test skipped: no swap rule" in out
    assert "cda is left out" in out and "\nreweight " in out and "\ncda " not in out


def test_cli_bad_input_fails_before_any_work(saved, tmp_path, monkeypatch, capsys):
    def no_work(*a, **k):
        raise AssertionError("work started although the input is bad")

    monkeypatch.setattr(minift.recipes.pretrain, "load_base", no_work)
    path, *_ = saved
    good = write(tmp_path / "good.jsonl", people_rows(60))
    one = write(tmp_path / "one.jsonl", [dict(r, gender="f") for r in people_rows(60)])
    unknown = write(tmp_path / "unknown.jsonl", [dict(r, label="maybe") for r in people_rows(20)])
    empty = write(tmp_path / "empty.jsonl", [])
    cases = [
        (["--data", str(one), "--group-field", "gender"], "fairness compares two groups or more"),
        (["--data", str(good)], "has no field 'group'"),
        (["--data", str(empty)], "empty file"),
        (["--model", str(path), "--data", str(unknown), "--group-field", "gender"], "labels ['maybe'] are not the model's labels"),  # noqa: E501
        (["--data", str(good), "--group-field", "gender", "--positive", "maybe"], "is not a label"),
        (["--data", str(good), "--group-field", "gender", "--mitigations", "none,cda"], "give a swap rule"),  # noqa: E501
        (["--model", str(path)], "give --data FILE"),
        (["--data", str(good), "--group-field", "gender", "--swap", "he"], "WORD:WORD"),
    ]  # fmt: skip
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv, message in cases:
        assert minift.cli.main(["fairness", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("minift: error:") and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_fairness_save_puts_the_measured_figures_on_the_card(tmp_path):
    import re
    import shlex

    from minift.recipes.fairness import fairness_report
    from minift.recipes.saved import load_finetuned

    data = write(tmp_path / "p.jsonl", people_rows(80))
    argv = ["fairness", "--data", str(data), "--group-field", "gender", "--swap", "gender",
            "--mitigations", "none,reweight", "--steps", "2", "--save", str(tmp_path / "a")]  # fmt: skip
    assert minift.cli.main(argv) == 0
    text = (tmp_path / "a" / "README.md").read_text()
    fairness = text.split("## Fairness\n")[1].split("## Robustness")[0]
    assert "'reweight' mitigation" in fairness and "Not measured" not in fairness
    model, enc, meta = load_finetuned(tmp_path / "a")
    task = group_file_task(str(data), "gender")
    report = fairness_report(model, task, enc, meta["max_len"], GENDER_PAIRS, 1)

    def cell(key):
        (value,) = re.findall(rf"^\| {re.escape(key)} \| (.*) \|$", fairness, flags=re.M)
        return value

    for key in ("accuracy", "demographic_parity", "equalized_odds", "flip_rate"):
        assert cell(key) == f"{report[key]:.4g}", key
    assert cell("accuracy of group f") == f"{report['group_accuracy']['f']:.4g}"
    block = text.split("## How to reproduce\n\n```\n")[1].split("\n```")[0]
    again = shlex.split(block)[2:]
    again[again.index("--save") + 1] = str(tmp_path / "b")
    assert minift.cli.main(again) == 0
    other = (tmp_path / "b" / "README.md").read_text().split("## Fairness\n")[1].split("## Robustness")[0]  # fmt: skip
    assert other == fairness
    # adversary's model cannot be saved: refused before any work
    bad = ["fairness", "--data", str(data), "--group-field", "gender", "--mitigations", "adversary", "--save", str(tmp_path / "c")]  # fmt: skip
    assert minift.cli.main(bad) == 2 and not (tmp_path / "c").exists()
