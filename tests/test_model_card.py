"""Model cards: every saving command writes README.md with the expected sections and the
run's own numbers; `minift eval` rewrites the metrics section alone; a run that measured
fairness shows its figures; the card's command trains the same model again."""

import json
import re
import shlex

import pytest
from statsmodels.stats.proportion import proportion_confint

import minift.cli
from minift.recipes.evaluate import evaluate_saved
from minift.recipes.fairness import fairness_report
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
from minift.recipes.model_card import (
    BEGIN,
    CARD,
    END,
    ModelCard,
    evaluation,
    read_evaluations,
    render,
    update_metrics,
    write_card,
)
from minift.recipes.pretrain import load_base
from minift.recipes.saved import MARKER, base_reference, load_finetuned, save_finetuned
from minift.recipes.tasks import get_task

SECTIONS = ["Model details", "Intended use", "Training data", "Training procedure", "Metrics",
            "Fairness", "Robustness", "Limitations", "How to reproduce"]  # fmt: skip


def sections(text: str) -> list[str]:
    return re.findall(r"^## (.+)$", text, flags=re.M)


def row(text: str, key: str) -> str:
    """The value of a two-column table row ``| key | value |``."""
    found = re.findall(rf"^\| {re.escape(key)} \| (.*) \|$", text, flags=re.M)
    assert len(found) == 1, (key, found)
    return found[0]


def outside(text: str) -> tuple[str, str]:
    return text[: text.index(BEGIN)], text[text.index(END) + len(END) :]


def wilson(value: float, n: int) -> tuple[float, float]:
    return proportion_confint(round(value * n), n, alpha=0.05, method="wilson")


@pytest.fixture(scope="module")
def setup():
    base, enc = load_base(progress=False, verbose=False)
    return base, enc


def test_finetune_save_writes_a_card_with_the_runs_numbers(tmp_path, capsys):
    out = tmp_path / "lora"
    argv = ["finetune", "--method", "lora", "--r", "4", "--steps", "3", "--eval-every", "3",
            "--seed", "2", "--save", str(out)]  # fmt: skip
    assert minift.cli.main(argv) == 0
    text = (out / CARD).read_text()
    assert text.startswith("---\nlibrary_name: minift\n") and sections(text) == SECTIONS
    meta = json.loads((out / MARKER).read_text())
    task = get_task("stdlib-package", seed=2)
    (e,) = read_evaluations(out)
    assert e["n"] == len(task.val) and e["by"] == "minift finetune"
    assert {k: m["value"] for k, m in e["metrics"].items()} == meta["metrics"]
    low, high = wilson(meta["metrics"]["val_accuracy"], len(task.val))
    acc = e["metrics"]["val_accuracy"]
    assert acc["low"] == pytest.approx(low, abs=1e-12) and acc["high"] == pytest.approx(high, abs=1e-12)  # fmt: skip
    assert f"| val_accuracy | {acc['value']:.4f} [{low:.4f}, {high:.4f}] |" in text
    assert "val_loss" in e["metrics"] and "low" not in e["metrics"]["val_loss"]  # no interval
    assert row(text, "train rows") == str(len(task.train))
    assert row(text, "validation rows") == str(len(task.val))
    assert row(text, "base weights fingerprint") == meta["base"]["fingerprint"]
    assert row(text, "option r") == "4" and row(text, "seed") == "2"
    assert row(text, "batch_size") == "32" and row(text, "lr") == f"{meta['train']['lr']:.4g}"
    assert "## Fairness\n\nNot measured" in text and "## Robustness\n\nNot measured" in text


def card_command(path) -> list[str]:
    block = (path / CARD).read_text().split("## How to reproduce\n\n```\n")[1].split("\n```")[0]
    words = shlex.split(block.split("\n")[0])
    assert words[:3] == ["MINIFT_FAST=1", "minift", "finetune"]  # the tests run in fast mode
    return words[2:]


def test_the_cards_command_trains_the_same_model_again(tmp_path):
    first = tmp_path / "first"
    argv = ["finetune", "--method", "lora", "--r", "2", "--alpha", "4", "--steps", "3",
            "--eval-every", "3", "--lr", "0.003", "--batch-size", "8", "--max-len", "20",
            "--head", "probe", "--save", str(first)]  # fmt: skip
    assert minift.cli.main(argv) == 0
    again = card_command(first)
    assert again[again.index("--head") + 1] == "probe"  # LP-FT: a different model without it
    assert again[again.index("--save") + 1] == str(first)
    again[again.index("--save") + 1] = str(tmp_path / "again")
    assert minift.cli.main(again) == 0
    a, b = (json.loads((tmp_path / d / MARKER).read_text()) for d in ("first", "again"))
    assert (
        a["metrics"] == b["metrics"] and a["options"] == b["options"] and a["train"] == b["train"]
    )


def test_eval_rewrites_the_metrics_section_and_nothing_else(setup, tmp_path, capsys):
    base, enc = setup
    task = get_task("stdlib-package")
    train = train_config(steps=3, eval_every=3, progress=False)
    result = finetune(task, base, enc, FinetuneConfig("probe", train=train), keep_model=True)
    path = save_finetuned(tmp_path / "m", result, task, enc, base_reference(None, base))
    before = (path / CARD).read_text()
    rows = task.val[:37]
    data = tmp_path / "some--rows.jsonl"  # "--" may not end up inside the HTML comment
    data.write_text("".join(json.dumps({"text": r["text"], "label": task.labels[r["label"]]}) + "\n" for r in rows))  # fmt: skip
    assert minift.cli.main(["eval", "--model", str(path), "--data", str(data)]) == 0
    assert "updated the metrics of the model card" in capsys.readouterr().out
    after = (path / CARD).read_text()
    assert outside(after) == outside(before) and after != before
    trained, on_file = read_evaluations(path)
    metrics, _, _ = evaluate_saved(path, data=data)
    assert on_file["n"] == 37 and on_file["by"] == "minift eval" and str(data) in on_file["data"]
    assert {k: m["value"] for k, m in on_file["metrics"].items()} == metrics
    low, high = wilson(metrics["val_accuracy"], 37)
    assert on_file["metrics"]["val_accuracy"]["low"] == pytest.approx(low, abs=1e-12)
    assert on_file["metrics"]["val_accuracy"]["high"] == pytest.approx(high, abs=1e-12)
    # on its own task: the training-time entry is replaced in place, by the same numbers
    assert minift.cli.main(["eval", "--model", str(path)]) == 0
    again, second = read_evaluations(path)
    assert second == on_file and again["by"] == "minift eval"
    assert again["metrics"] == trained["metrics"] and again["data"] == trained["data"]
    assert outside((path / CARD).read_text()) == outside(before)
    # a card whose markers were edited away: the evaluation is printed, the card untouched
    edited = before.replace(END, "")
    (path / CARD).write_text(edited)
    capsys.readouterr()
    assert minift.cli.main(["eval", "--model", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "val_accuracy=" in out and "was not updated" in err and err.count("\n") == 1
    assert (path / CARD).read_text() == edited


def test_update_metrics_by_hand(tmp_path):
    card = ModelCard(
        title="t", kind="finetune", base={"source": "x", "weights fingerprint": "ab"},
        data={"name": "d"}, method="m", settings={"a|b": 1},
        evaluations=[evaluation("rows -- a | b", {"val_accuracy": 0.75, "val_loss": 0.5}, 8, "x")],
        command="minift finetune", intended_use=["u"], limitations=["l"],
    )  # fmt: skip
    write_card(tmp_path, card)
    text = (tmp_path / CARD).read_text()
    assert text == render(card)
    comment = text[text.index(BEGIN) :].split("\n")[1]
    assert comment.startswith("<!--") and comment.endswith("-->") and "--" not in comment[4:-3]
    (e,) = read_evaluations(tmp_path)
    assert e["data"] == "rows -- a | b" and e["metrics"]["val_accuracy"]["value"] == 0.75
    low, high = wilson(0.75, 8)  # 6 of 8
    assert e["metrics"]["val_accuracy"]["low"] == pytest.approx(low, abs=1e-12)
    assert update_metrics(tmp_path / "nothing", e) is None  # no card: nothing written
    (tmp_path / CARD).write_text(text + BEGIN)
    with pytest.raises(ValueError, match="no single minift metrics section"):
        update_metrics(tmp_path, e)
    assert (tmp_path / CARD).read_text() == text + BEGIN


def test_a_task_with_groups_gets_its_fairness_figures_on_the_card(setup, tmp_path):
    base, enc = setup
    task = get_task("doc-returns-people")
    train = train_config(steps=4, eval_every=4, progress=False)
    result = finetune(task, base, enc, FinetuneConfig("full", train=train), keep_model=True)
    path = save_finetuned(tmp_path / "m", result, task, enc, base_reference(None, base))
    text = (path / CARD).read_text()
    fairness = text.split("## Fairness\n")[1].split("## Robustness")[0]
    assert "Not measured" not in fairness
    model, _, _ = load_finetuned(path)
    report = fairness_report(model, task, enc, result.max_len)
    for key in ("accuracy", "demographic_parity", "equalized_odds", "accuracy_gap", "flip_rate"):
        assert row(fairness, key) == f"{report[key]:.4g}", key
    for group, acc in report["group_accuracy"].items():
        assert row(fairness, f"accuracy of group {group}") == f"{acc:.4g}"


def test_personalize_writes_a_card_with_its_report(tmp_path, capsys):
    dest = tmp_path / "brief"
    argv = ["personalize", "--user", "brief", "--steps", "3", "--rank", "2", "--save", str(dest)]
    assert minift.cli.main(argv) == 0
    text = (dest / CARD).read_text()
    meta = json.loads((dest / "personal.json").read_text())
    assert sections(text) == SECTIONS
    evals = {next(iter(e["metrics"])): e for e in read_evaluations(dest)}
    hidden = evals["hidden_preference_accuracy"]
    assert hidden["n"] == meta["hidden_pairs"]
    assert hidden["metrics"]["hidden_preference_accuracy"]["value"] == meta["hidden_preference_accuracy"]  # fmt: skip
    if meta["val_pairs"]:
        assert evals["val_accuracy"]["metrics"]["val_accuracy"]["value"] == meta["val_accuracy"]
    assert "minift personalize --user brief --rank 2 --steps 3" in text


def test_distill_writes_a_card_with_the_students_metric(tmp_path, capsys):
    argv = ["distill", "--task", "stdlib-package", "--teacher-steps", "2", "--steps", "2",
            "--eval-every", "2", "--speed-repeats", "1", "--out", str(tmp_path / "run"),
            "--save", str(tmp_path / "s")]  # fmt: skip
    assert minift.cli.main(argv) == 0
    text = (tmp_path / "s" / CARD).read_text()
    saved = json.loads((tmp_path / "s" / "distill.json").read_text())
    assert sections(text) == SECTIONS
    (e,) = read_evaluations(tmp_path / "s")
    assert e["metrics"][saved["metric_name"]]["value"] == saved["metric"]
    assert e["metrics"]["val_loss"]["value"] == saved["val_loss"]
    assert e["n"] == len(get_task("stdlib-package").val)
    assert "--teacher-steps 2" in text
    # the classifier is saved whole: eval measures what the distillation run reported
    metrics, meta, _ = evaluate_saved(tmp_path / "s")
    assert meta["head"] is not None and meta["weights"] == "model"
    assert metrics[saved["metric_name"]] == pytest.approx(saved["metric"], abs=1e-9)
    assert metrics["val_loss"] == pytest.approx(saved["val_loss"], rel=1e-5)


def test_rlhf_writes_a_card_with_before_and_after(setup, tmp_path):
    base, _ = setup
    base.save(tmp_path / "policy")
    rows = [{"prompt": p, "chosen": " the file path.", "rejected": " it."} for p in ("Return the", "Open a", "Create the")]  # fmt: skip
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["rlhf", "--method", "dpo", "--data", str(data), "--model", str(tmp_path / "policy"),
            "--steps", "2", "--batch-size", "3", "--eval-samples", "4", "--max-new-tokens", "3",
            "--out", str(tmp_path / "run"), "--save", str(tmp_path / "p")]  # fmt: skip
    assert minift.cli.main(argv) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    text = (tmp_path / "p" / CARD).read_text()
    assert sections(text) == SECTIONS and row(text, "train pairs") == "3"
    trained, reference = read_evaluations(tmp_path / "p")
    for e, side in ((trained, "trained"), (reference, "reference")):
        assert e["n"] == 4
        assert {k: m["value"] for k, m in e["metrics"].items()} == {k: report[side][k] for k in e["metrics"]}  # fmt: skip
    assert "kl" in trained["metrics"]


def test_export_carries_the_card_marked_as_an_export(setup, tmp_path):
    base, enc = setup
    task = get_task("stdlib-package")
    train = train_config(steps=2, eval_every=2, progress=False)
    result = finetune(task, base, enc, FinetuneConfig("lora", {"r": 2}, train=train), keep_model=True)  # fmt: skip
    path = save_finetuned(tmp_path / "m", result, task, enc, base_reference(None, base))
    assert minift.cli.main(["export", "--hf", str(path), str(tmp_path / "hf")]) == 0
    source, exported = (path / CARD).read_text(), (tmp_path / "hf" / CARD).read_text()
    note = re.findall(r"^> Exported by `minift export --hf` from .*$", exported, flags=re.M)
    assert len(note) == 1 and "task head is not part of GPT-2's format" in note[0]
    restored = exported.replace(note[0] + "\n\n", "").replace("library_name: transformers", "library_name: minift")  # fmt: skip
    assert restored == source  # the rest of the card is the source's, byte for byte
    # a folder without a card: a card that says what is not known
    base.save(tmp_path / "plain")
    assert minift.cli.main(["export", "--hf", str(tmp_path / "plain"), str(tmp_path / "hf2")]) == 0
    text = (tmp_path / "hf2" / CARD).read_text()
    assert sections(text) == SECTIONS and "has no model card" in text
    assert f"minift export --hf {tmp_path / 'plain'} {tmp_path / 'hf2'}" in text


def test_pretrain_writes_a_card_into_the_base_folder():
    import shutil

    from minift.model import GPT
    from minift.model.checkpoint import weights_fingerprint
    from minift.recipes.pretrain import PretrainRecipe, built_base_dir, cache_dir, size_encoding

    recipe = PretrainRecipe(n_layer=1, n_head=1, n_embd=16, block_size=16, steps=3,
                            batch_size=2, warmup_steps=1, eval_batches=1, seed=91)  # fmt: skip
    enc = size_encoding("tiny")
    shutil.rmtree(cache_dir(recipe, enc), ignore_errors=True)  # built fresh, by this code
    folder = built_base_dir(recipe, enc, progress=False, verbose=False)
    try:
        text = (folder / CARD).read_text()
        report = json.loads((folder / "report.json").read_text())
        assert sections(text) == SECTIONS
        (e,) = read_evaluations(folder)
        assert e["metrics"]["val_loss"]["value"] == report["val_loss"]
        assert e["metrics"]["val_perplexity"]["value"] == pytest.approx(2.718281828459045 ** report["val_loss"], rel=1e-12)  # fmt: skip
        assert row(text, "base weights fingerprint") == weights_fingerprint(GPT.load(folder))
        assert row(text, "train tokens") == str(report["train_tokens"]) and row(text, "n_embd") == "16"  # fmt: skip
        assert "minift pretrain --rebuild\n# a recipe that is none of the named sizes" in text
    finally:
        shutil.rmtree(folder)


def test_robust_save_puts_the_measured_robustness_on_the_card(tmp_path):
    argv = ["robust", "--trainings", "standard,fgm", "--radii", "0.1", "--attack-steps", "2",
            "--swaps", "1", "--steps", "2", "--save", str(tmp_path / "a")]  # fmt: skip
    assert minift.cli.main(argv) == 0
    text = (tmp_path / "a" / CARD).read_text()
    robustness = text.split("## Robustness\n")[1].split("## Limitations")[0]
    assert "Not measured" not in robustness and "'fgm' training" in robustness
    # the clean figure is the saved model's own accuracy on the validation rows
    metrics, meta, task = evaluate_saved(tmp_path / "a")
    assert row(robustness, "clean accuracy") == f"{metrics['val_accuracy']:.4g}"
    assert meta["metrics"]["val_accuracy"] == metrics["val_accuracy"]
    assert float(row(robustness, "pgd r=0.1 accuracy")) <= 1.0
    assert "pgd r=0.1 accuracy, standard training" in robustness
    assert "fgm" in row(text, "adversarial training")
    # the card's command measures the same figures again
    block = text.split("## How to reproduce\n\n```\n")[1].split("\n```")[0]
    again = shlex.split(block)[2:]
    again[again.index("--save") + 1] = str(tmp_path / "b")
    assert minift.cli.main(again) == 0
    other = (tmp_path / "b" / CARD).read_text().split("## Robustness\n")[1].split("## Limitations")[0]  # fmt: skip
    assert other == robustness


def test_robust_save_refuses_a_full_folder_before_training(tmp_path, monkeypatch, capsys):
    import minift.recipes.robust

    def no_training(*a, **k):
        raise AssertionError("trained although the destination is bad")

    monkeypatch.setattr(minift.recipes.robust, "run_robust", no_training)
    (tmp_path / "mine.txt").write_text("x")
    assert minift.cli.main(["robust", "--save", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
