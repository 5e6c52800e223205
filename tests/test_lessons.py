"""Every lesson runs top to bottom in fast mode and draws at least one plot.

One test per lessons/*.py file, found by glob, so a new lesson is tested the day it lands.
Every claim a lesson makes through minift.claims.claim must hold in fast mode, except those
marked at_scale (what larger models show, which the tiny base may not).
Each runs as a learner would run it, `python lessons/NN_topic.py`, in a fresh process
with MINIFT_FAST=1 and its plots sent to a temporary folder (one OpenMP thread unless
OMP_NUM_THREADS is set). The time is printed, not
asserted (DESIGN.md: speed is measured by scripts, never asserted in tests); the budget
is 20 s a lesson with a warm cache. MINIFT_HOME comes from conftest.py, so the caches
(corpus, tokenizer, fast base model) are built once and shared by all lessons.
"""

import os
import pathlib
import subprocess
import sys
import time

import pytest

from minift.claims import read_claims

ROOT = pathlib.Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("*.py"))


def test_lessons_are_found():
    assert LESSONS, f"no lessons found under {ROOT / 'lessons'}"


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_in_fast_mode(lesson, tmp_path):
    env = {**os.environ, "MINIFT_FAST": "1", "MINIFT_OUT": str(tmp_path)}
    env.pop("MINIFT_KERNELS", None)  # lessons choose their own kernel path
    # Fast-mode models are tiny: a second OpenMP thread buys little, and when the cores are
    # shared (pytest-xdist, other jobs) spinning threads made lessons 3-6x slower here.
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    # Generous timeout: a cold cache builds the corpus, tokenizer and fast base first.
    done = subprocess.run(
        [sys.executable, str(lesson)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - t0
    print(f"{lesson.name}: {seconds:.1f}s")
    assert done.returncode == 0, (
        f"{lesson.name} exited with {done.returncode} after {seconds:.1f}s; "
        f"stderr tail:\n{done.stderr[-3000:]}\nstdout tail:\n{done.stdout[-1000:]}"
    )
    claims = read_claims(tmp_path)
    broken = [c for c in claims if not c["holds"] and not c["at_scale"]]
    assert not broken, f"{lesson.name}: claims that do not hold in fast mode: {broken}"
    # a lesson ends with what its numbers say: at least two claims, one checked on any base
    assert len(claims) >= 2 and any(not c["at_scale"] for c in claims), (
        f"{lesson.name} records {len(claims)} claims ({sum(not c['at_scale'] for c in claims)} "
        "not at scale): end it with minift.claims.claim(...) calls computed from the run"
    )
    plots = sorted(tmp_path.rglob("*.png"))
    assert plots, (
        f"{lesson.name} wrote no .png under {tmp_path}; stdout tail:\n{done.stdout[-1000:]}"
    )
    assert all(p.stat().st_size > 0 for p in plots), f"empty plot among {plots}"
