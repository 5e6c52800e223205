"""Lesson 11 and the kernel benchmark run end to end (tiny shapes, interpreter)."""

import json
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(args, tmp_path, **env):
    env = {**os.environ, "MINIFT_OUT": str(tmp_path), **env}
    env.pop("MINIFT_KERNELS", None)
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )


def test_lesson_11_runs_in_fast_mode(tmp_path):
    done = run([str(ROOT / "lessons" / "11_triton_kernels.py")], tmp_path, MINIFT_FAST="1")
    assert done.returncode == 0, done.stderr[-2000:]
    errors = [float(e) for e in re.findall(r"rel err[^0-9]*([0-9.]+e[-+][0-9]+)", done.stdout)]
    assert len(errors) >= 5 and max(errors) < 1e-4  # the kernels agree with their definitions
    assert (tmp_path / "lessons" / "11" / "lora_tiling.png").stat().st_size > 0
    assert (tmp_path / "lessons" / "11" / "attention_tiling.png").stat().st_size > 0


def test_bench_smoke_runs_every_section(tmp_path):
    done = run(
        [str(ROOT / "scripts" / "bench_kernels.py"), "--smoke", "--out", str(tmp_path)], tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["lora"] and results["attention"] and results["block_sparse"]
    assert not results["skipped"]
    assert all(row["fused ms"] > 0 for row in results["lora"])
    assert (tmp_path / "bench_kernels.png").stat().st_size > 0
