"""minift.claims: each claim printed with its verdict and recorded for the lesson tests."""

import json

from minift.claims import claim, read_claims


def test_claims_print_and_accumulate_in_claims_json(tmp_path, capsys):
    assert claim("two is more than one", 2 > 1, "2 vs 1", out=tmp_path) is True
    assert claim("LoRA matches full", False, "0.8 vs 0.9", at_scale=True, out=tmp_path) is False
    assert claim("a broken claim", 0, out=tmp_path) is False
    text = capsys.readouterr().out.splitlines()
    assert text == [
        "[holds] two is more than one (2 vs 1)",
        "[does not hold here] LoRA matches full (0.8 vs 0.9)",
        "[DOES NOT HOLD] a broken claim",
    ]
    saved = json.loads((tmp_path / "claims.json").read_text())
    assert [c["holds"] for c in saved] == [True, False, False]
    assert [c["at_scale"] for c in saved] == [False, True, False]
    assert read_claims(tmp_path) == saved


def test_read_claims_finds_nested_folders(tmp_path):
    claim("a", True, out=tmp_path / "lessons" / "05")
    claim("b", True, out=tmp_path / "lessons" / "06")
    assert [c["claim"] for c in read_claims(tmp_path)] == ["a", "b"]
