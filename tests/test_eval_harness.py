"""The evaluation harness: `minift eval --suite`, local TSV/CSV files, the report.

Its numbers agree with the other ways of computing them: a fine-tuned model's head-mode
accuracy is the accuracy training reported; a base model's prompt-mode accuracy is
minift.prompting's zero-shot accuracy; bits per byte is minift.metrics.lm over the same
documents."""

import json
import math

import pytest

import minift.cli
from minift.data.tables import load_table
from minift.errors import UserError
from minift.metrics import lm_statistics
from minift.prompting import classify
from minift.recipes import suite as S
from minift.recipes.evaluate import (
    file_task,
    load_subject,
    report_markdown,
    run_suite,
    write_report,
)
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
from minift.recipes.pretrain import load_base
from minift.recipes.saved import base_reference, save_finetuned
from minift.recipes.tasks import get_task


@pytest.fixture(scope="module")
def base():
    return load_base(progress=False, verbose=False)


@pytest.fixture(scope="module")
def saved(base, tmp_path_factory):
    model, enc = base
    task = get_task("doc-returns")
    train = train_config(steps=4, eval_every=4, eval_at_start=False, progress=False)
    result = finetune(task, model, enc, FinetuneConfig("lora", train=train), keep_model=True)
    path = save_finetuned(tmp_path_factory.mktemp("m") / "m", result, task, enc, base_reference(None, model))  # fmt: skip
    return path, result


def test_saved_model_head_accuracy_is_the_training_accuracy(saved):
    path, result = saved
    report = run_suite(str(path), "doc-returns,doc-kind", check_contamination=False)
    by = {t["task"]: t for t in report["tasks"]}
    assert by["doc-returns"]["mode"] == "head"  # the task it was tuned on: its own head
    # training's accuracy is a float32 mean; the per-example verdicts must agree exactly
    assert by["doc-returns"]["metrics"]["accuracy"]["value"] == pytest.approx(result.metric, abs=1e-6)  # fmt: skip
    head = S.score(load_subject(str(path)), get_task("doc-returns"))
    assert head.per_example == result.val_scores
    assert by["doc-kind"]["mode"] == "prompt"  # another task: its language model, zero-shot
    acc = by["doc-returns"]["metrics"]["accuracy"]
    assert acc["low"] <= acc["value"] <= acc["high"]


def test_base_prompt_accuracy_and_bits_per_byte_agree_with_the_library(base):
    model, enc = base
    subject = load_subject("base")
    task = get_task("doc-kind")
    scored = S.score(subject, task)
    assert scored.metrics["accuracy"]["value"] == classify(model, enc, task, 0).accuracy
    docs = S.lm_documents(20)
    lm = S.score_lm(subject, docs)
    stats = lm_statistics(model, enc, docs)
    assert lm.metrics["bits_per_byte"]["value"] == pytest.approx(stats.bits_per_byte, rel=1e-12)
    assert stats.bits_per_byte == pytest.approx(stats.nll / math.log(2) / sum(len(d.encode()) for d in docs))  # fmt: skip


def test_compare_reports_pairs_the_per_example_scores(saved):
    from minift.metrics import compare
    from minift.recipes.evaluate import compare_reports

    path, result = saved
    tuned = run_suite(str(path), "doc-returns", check_contamination=False)
    base_report = run_suite("base", "doc-returns", check_contamination=False)
    (c,) = compare_reports(tuned, base_report)
    expected = compare("x", result.val_scores, "y", base_report["tasks"][0]["per_example"])
    assert (c.difference, c.low, c.high, c.p_value) == (expected.difference, expected.low, expected.high, expected.p_value)  # fmt: skip
    with pytest.raises(ValueError, match="suite versions differ"):
        compare_reports(tuned, dict(base_report, suite_version=0))


def test_tables_tsv_and_csv(tmp_path):
    tsv = tmp_path / "dev.tsv"
    tsv.write_text('sentence\tlabel\tid\nsays "hi", twice\tpos\t1\n\nbad day\tneg\t2\n')
    assert load_table(tsv, "sentence") == [{"text": 'says "hi", twice', "label": "pos"}, {"text": "bad day", "label": "neg"}]  # fmt: skip
    csv = tmp_path / "d.csv"
    csv.write_text('text,y\n"a, quoted, text",1\nplain,0\n')
    assert load_table(csv, label_column="y") == [{"text": "a, quoted, text", "label": "1"}, {"text": "plain", "label": "0"}]  # fmt: skip
    task = file_task(str(csv), label_column="y")
    assert task.labels == ["0", "1"] and [r["label"] for r in task.val] == [1, 0]
    assert task.verbalizer == [" 0", " 1"]


@pytest.mark.parametrize(
    "content,kwargs,message",
    [
        (
            "sentence\tlabel\nx\ty\n",
            {},
            "has no column 'text'; its columns are \\['sentence', 'label'\\]",
        ),  # fmt: skip
        ("text\tlabel\nx\ty\n", {"label_column": "gold"}, "no column 'gold'"),
        ("text\tlabel\n \ty\n", {}, "line 2: the 'text' cell is empty"),
        ("text\tlabel\nonly\n", {}, "line 2: 1 cells, the header names 2"),
        ("", {}, "is empty: the first line must name the columns"),
        ("text\tlabel\n", {}, "has a header but no rows"),
    ],
)
def test_bad_tables_are_clear_errors(tmp_path, content, kwargs, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_table(path, **kwargs)


def test_report_files_and_markdown(tmp_path):
    report = run_suite("base", "lm-pydocs,doc-returns")
    assert report["suite_version"] == S.SUITE_VERSION and len(report["tasks"]) == 2
    assert all(0.0 <= t["contamination"] <= 1.0 for t in report["tasks"])
    json_path, md_path = write_report(report, tmp_path / "out")
    assert json.loads(open(json_path).read())["tasks"][1]["task"] == "doc-returns"
    md = open(md_path).read()
    assert md == report_markdown(report)
    assert md.count("| doc-returns |") == 3  # accuracy, macro F1, ECE
    assert "| lm-pydocs | lm | likelihood | 200 | bits_per_byte |" in md


def test_cli_suite_and_bad_inputs(tmp_path, capsys):
    assert minift.cli.main(["eval", "--model", "base", "--suite", "doc-returns", "--out", str(tmp_path / "r"), "--no-contamination"]) == 0  # fmt: skip
    assert (tmp_path / "r" / "report.md").is_file()
    assert "| doc-returns | classification | prompt |" in capsys.readouterr().out
    again = ["eval", "--model", "base", "--suite", "doc-returns", "--out", str(tmp_path / "r2"), "--no-contamination"]  # fmt: skip
    assert minift.cli.main([*again, "--compare", str(tmp_path / "r" / "report.json")]) == 0
    assert "base doc-returns 0." in capsys.readouterr().out  # the same model: +0.000, within noise
    assert minift.cli.main([*again, "--compare", str(tmp_path / "nothing.json")]) == 2
    for argv, message in [
        (["--suite", "nope"], "unknown task 'nope'"),
        (["--suite", "doc-kind", "--task", "doc-kind"], "not both"),
        (["--suite", ","], "names no task"),
    ]:
        assert minift.cli.main(["eval", "--model", "base", *argv]) == 2
        assert message in capsys.readouterr().err
    path = tmp_path / "x.tsv"
    path.write_text("sentence\tlabel\na\tb\n")
    assert minift.cli.main(["eval", "--model", "base", "--data", str(path)]) == 2
    assert "has no column 'text'" in capsys.readouterr().err


def test_a_task_the_suite_cannot_score_is_a_clear_error():
    subject = load_subject("base")
    from minift.data.tasks import Task

    odd = Task("odd", "text", [{"text": "a"}], [{"text": "a"}])
    with pytest.raises(ValueError, match="the suite scores"):
        S.score(subject, odd)


def test_preference_score_is_the_sum_of_response_log_probabilities(base):
    import torch

    model, enc = base
    subject = load_subject("base")
    prompt, response = enc.encode_ordinary("Return the"), enc.encode_ordinary(" file name.")
    ids = torch.tensor([prompt + response])
    logp = torch.log_softmax(model(ids[:, :-1]).logits[0].double(), -1)
    expected = sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(response))
    assert S._sequence_logprob(subject.lm, prompt, response) == pytest.approx(expected, rel=1e-12)
    assert S._sequence_logprob(subject.lm, prompt, []) == 0.0


@pytest.mark.parametrize("method,merge", [("full", False), ("lora", True), ("probe", False)])
def test_full_merged_and_head_folders_are_scored_by_their_head(base, tmp_path, method, merge):
    model, enc = base
    task = get_task("doc-returns")
    train = train_config(steps=2, eval_every=2, eval_at_start=False, progress=False)
    result = finetune(task, model, enc, FinetuneConfig(method, train=train), keep_model=True)
    path = save_finetuned(tmp_path / "m", result, task, enc, base_reference(None, model), merge)
    scored = S.score(load_subject(str(path)), task)
    assert scored.mode == "head" and scored.per_example == result.val_scores
