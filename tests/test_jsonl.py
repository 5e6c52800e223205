"""User data: every bad input names file, line and field; formats are detected."""

import json

import pytest

from minift.data.jsonl import (
    MIN_TEXT_CHARS,
    detect_format,
    load_jsonl,
    read_jsonl,
    read_text_file,
)


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_read_valid_rows_skips_blank_lines(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text('{"text": "a", "label": 1}\n\n   \n{"text": "b", "label": "pos"}\n')
    assert read_jsonl(p, ["text", "label"]) == [
        {"text": "a", "label": 1},
        {"text": "b", "label": "pos"},
    ]


def test_missing_field_names_file_line_field(tmp_path):
    p = write_rows(
        tmp_path / "data.jsonl",
        [{"text": "a", "label": 0}, {"text": "b", "label": 1}, {"text": "c"}],
    )
    with pytest.raises(ValueError, match=r"data\.jsonl line 3: missing field 'label'"):
        read_jsonl(p, ["text", "label"])


def test_invalid_json_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "fine"}\n{"text": "broken"\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl line 2: invalid JSON"):
        read_jsonl(p, ["text"])


def test_non_object_and_wrong_types(tmp_path):
    p = tmp_path / "list.jsonl"
    p.write_text('["not", "an", "object"]\n')
    with pytest.raises(ValueError, match=r"list\.jsonl line 1: expected a JSON object, got list"):
        read_jsonl(p)
    p = write_rows(tmp_path / "types.jsonl", [{"prompt": "q", "response": 42}])
    with pytest.raises(ValueError, match=r"types\.jsonl line 1: field 'response' must be a string"):
        read_jsonl(p, ["prompt", "response"])
    p = write_rows(tmp_path / "label.jsonl", [{"text": "q", "label": [1]}])
    with pytest.raises(ValueError, match=r"label\.jsonl line 1: field 'label' must be a string"):
        read_jsonl(p, ["text", "label"])


def test_empty_and_non_utf8(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl: empty file"):
        read_jsonl(p, ["text"])
    p = tmp_path / "latin1.jsonl"
    p.write_bytes('{"text": "café"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.jsonl: not UTF-8"):
        read_jsonl(p, ["text"])


@pytest.mark.parametrize(
    "row, fmt",
    [
        ({"text": "t"}, "text"),
        ({"text": "t", "label": 2}, "classification"),
        ({"prompt": "p", "response": "r"}, "sft"),
        ({"prompt": "p", "chosen": "c", "rejected": "r"}, "preference"),
        ({"prompt": "p", "chosen": "c", "rejected": "r", "response": "x"}, "preference"),
    ],
)
def test_detect_format(tmp_path, row, fmt):
    assert detect_format([row, dict(row)]) == fmt
    p = write_rows(tmp_path / "d.jsonl", [row])
    assert detect_format(p) == fmt
    assert load_jsonl(p) == (fmt, [row])


def test_detect_format_refuses_rows_of_mixed_formats(tmp_path):
    # One classification row missing its label must not turn the file into plain text.
    rows = [{"text": "a", "label": 1}, {"text": "b"}]
    with pytest.raises(
        ValueError,
        match=r"line 2: missing field\(s\) \['label'\], but line 1 is a classification row",
    ):
        detect_format(rows)
    p = write_rows(tmp_path / "mixed.jsonl", [{"text": "a"}, {"text": "b", "label": "x"}])
    with pytest.raises(
        ValueError, match=r"mixed\.jsonl line 2: a classification row, but line 1 is a text row"
    ):
        detect_format(p)
    assert detect_format([{"text": "a", "label": 1}, {"text": "b", "label": 0}]) == "classification"
    with pytest.raises(ValueError, match="match no format; accepted formats are preference"):
        detect_format([{"question": "q", "answer": "a"}])
    assert detect_format(tmp_path / "notes.txt") == "text"


def test_load_jsonl_with_format_validates_every_row(tmp_path):
    p = write_rows(tmp_path / "sft.jsonl", [{"prompt": "p", "response": "r"}, {"prompt": "q"}])
    with pytest.raises(ValueError, match=r"sft\.jsonl line 2: missing field 'response'"):
        load_jsonl(p, "sft")
    with pytest.raises(ValueError, match="unknown format 'chat'; valid formats"):
        load_jsonl(p, "chat")
    with pytest.raises(ValueError, match="expected a .jsonl file"):
        load_jsonl(tmp_path / "corpus.txt")


def test_read_text_file(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text("")
    with pytest.raises(ValueError, match=r"corpus\.txt: empty file"):
        read_text_file(p)
    p.write_text("too small " * 10)
    with pytest.raises(
        ValueError, match=rf"corpus\.txt: only 99 characters.*at least {MIN_TEXT_CHARS}"
    ):
        read_text_file(p)
    text = "enough text to train on. " * 50
    p.write_text(text)
    assert read_text_file(p) == text


def test_a_folder_or_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="is a folder; give a data file"):
        read_jsonl(tmp_path)
    with pytest.raises(ValueError, match="is a folder"):
        read_text_file(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"data file .*nope\.jsonl does not exist"):
        load_jsonl(tmp_path / "nope.jsonl")


def test_a_torn_last_line_is_named_as_such(tmp_path):
    """A last line that is not JSON and has no newline after it is what a cut-off write
    leaves; a bad line followed by a newline is plain invalid JSON."""
    p = tmp_path / "cut.jsonl"
    p.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c')
    with pytest.raises(ValueError, match=r"cut\.jsonl line 3: torn last line .* 2 row\(s\) above it are intact"):  # fmt: skip
        read_jsonl(p, ["text"])
    p.write_text('{"text": "a"}\n{"text": "c\n')
    with pytest.raises(ValueError, match=r"line 2: invalid JSON"):
        read_jsonl(p, ["text"])
