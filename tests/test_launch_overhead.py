"""scripts/bench_launch_overhead.py: Python's time per launch with the kernels stubbed,
on the fixed-table path and the tuned path (a table, and JSON when asked)."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_overhead_table_is_measured(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_launch_overhead.py"), "--quick",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "launch_overhead.json").read_text())
    assert len(record) == 6 and "lora_linear fwd+bwd (4 launches)" in record
    for row in record.values():
        assert 0 < row["fixed_us"] < 1e5 and 0 < row["tuned_us"] < 1e5
    # a layer's forward and backward issue more than its forward alone
    both, fwd = record["lora_linear fwd+bwd (4 launches)"], record["lora_linear fwd"]
    assert both["tuned_us"] > fwd["tuned_us"]
    assert "tuned path" in done.stdout.splitlines()[1]
