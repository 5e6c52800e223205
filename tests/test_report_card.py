"""`minift report`: the report card's rows, cost columns and markdown; clear errors."""

import pytest

import minift.cli
from minift.recipes.pretrain import load_base
from minift.recipes.report import card_markdown, report_card
from minift.train.flops import flops_per_step


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    out = tmp_path_factory.mktemp("card")
    return out, report_card(("probe", "lora"), steps=3, suite="stdlib-package,doc-returns", out=str(out))  # fmt: skip


def test_rows_scores_and_cost(card):
    out, c = card
    base, _ = load_base(progress=False)
    rows = {r["model"]: r for r in c["rows"]}
    assert list(rows) == ["base", "probe", "lora"]
    assert rows["base"]["seconds"] is None and rows["base"]["trainable"] == 0
    modes = {m: [t["mode"] for t in rows[m]["tasks"]] for m in rows}
    assert modes == {"base": ["prompt", "prompt"], "probe": ["head", "prompt"], "lora": ["head", "prompt"]}  # fmt: skip
    # the probe does not touch the backbone: its zero-shot answer to another task is the base's
    assert rows["probe"]["tasks"][1]["metrics"] == rows["base"]["tasks"][1]["metrics"]
    lora = rows["lora"]
    added = lora["trainable"]  # the base is frozen: LoRA factors + the head train
    assert lora["flops"] == 3 * flops_per_step(base.config, 32, 24, trainable=added)
    assert rows["probe"]["flops"] > 0 and lora["total"] > rows["base"]["total"]


def test_markdown_table(card):
    out, c = card
    md = (out / "report_card.md").read_text()
    assert md == card_markdown(c)
    header = [line for line in md.splitlines() if line.startswith("| model |")][0]
    assert "stdlib-package (accuracy)" in header and "FLOPs" in header
    assert sum(line.startswith("|") for line in md.splitlines()) == 5  # header, rule, 3 rows
    assert "| base | " in md and "| lora | " in md and "*" in md


def test_bad_options_are_clear_errors(capsys):
    assert minift.cli.main(["report", "--methods", "lora,nope"]) == 2
    assert "unknown method(s) ['nope']" in capsys.readouterr().err
    assert minift.cli.main(["report", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
