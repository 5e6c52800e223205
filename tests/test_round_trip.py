"""Every reader of a file minift writes reads back what was written, for unusual text:
non-ASCII, line and paragraph separators inside strings (U+2028, U+0085, a lone \\r), tabs,
and empty strings."""

import json

import pytest

from minift.data.jsonl import read_jsonl
from minift.data.tasks import task_from_jsonl
from minift.io import read_json, write_json
from minift.rlhf.preference import append_preferences, load_preferences
from minift.train.metrics import MetricsLog
from minift.train.metrics import read_json_lines as read_metrics

ODD = ["café 漢字 🙂", "line\u2028separator", "next\x85line", "carriage\rreturn", "tab\there", ""]


def test_preferences_written_by_feedback_read_back_unchanged(tmp_path):
    path = tmp_path / "prefs.jsonl"
    rows = [
        {"prompt": p, "chosen": f"good {i} {p}", "rejected": f"bad {i} {p}"}
        for i, p in enumerate(ODD)
    ]
    append_preferences(path, rows[:3])
    append_preferences(path, rows[3:])  # appending re-reads and validates the whole file
    assert load_preferences(path) == rows


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_a_users_jsonl_with_separators_inside_strings(tmp_path, ensure_ascii):
    path = tmp_path / "data.jsonl"
    rows = [{"text": f"{t} #{i}", "label": "ab"[i % 2]} for i, t in enumerate(ODD * 5)]
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in rows), encoding="utf-8"
    )
    assert read_jsonl(path) == rows
    task = task_from_jsonl(str(path))
    assert sorted(r["text"] for r in task.train + task.val) == sorted(r["text"] for r in rows)


def test_metrics_and_json_files_round_trip(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for i, text in enumerate(ODD):
        log.write({"step": i + 1, "loss": 1.0 / (i + 1), "note": text})
    assert read_metrics(tmp_path / "metrics.jsonl") == log.rows
    assert MetricsLog(tmp_path / "metrics.jsonl").rows == log.rows  # what resume reads
    write_json(tmp_path / "x.json", {"texts": ODD})
    assert read_json(tmp_path / "x.json") == {"texts": ODD}


def test_a_torn_last_metrics_line_is_dropped_not_fatal(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write({"step": 1, "loss": 2.0})
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 2, "lo')  # killed in the middle of a write
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 2.0}]
    assert MetricsLog(tmp_path / "metrics.jsonl").rows == [{"step": 1, "loss": 2.0}]
