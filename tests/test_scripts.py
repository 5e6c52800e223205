"""Every benchmark script under scripts/ at least starts: it imports what it uses from
minift and parses its arguments. (The benchmarks themselves are run by hand and their
figures recorded in docs/benchmarks.md; bench_kernels also has a smoke run in
tests/test_kernels_scripts.py.)"""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "scripts").glob("bench_*.py"))


def test_the_benchmarks_are_found():
    names = {p.stem for p in SCRIPTS}
    assert {"bench_train", "bench_peft", "bench_kernels", "bench_long_context"} <= names
    assert {"bench_distill", "bench_rlhf"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_starts_and_explains_itself(script):
    done = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:")
    assert "--quick" in done.stdout or "--smoke" in done.stdout  # a short run exists
