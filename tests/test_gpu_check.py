"""make gpu-check: every step wired (a dry run on the CPU), and a step that hangs or fails
cannot stop the check from finishing and writing its results."""

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load("gpu_check")


def test_dry_run_wires_every_step(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MINIFT_KERNELS"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    expected = ["install", "environment", "probe_tma", "gpu_tests", "compile_ahead", "bench_kernels",
                *gpu_check.KERNEL_BENCHES, *gpu_check.OTHER_BENCHES]  # fmt: skip
    assert sorted(steps) == sorted(expected)
    assert all(s["status"] == "ok" for s in steps.values()), steps
    assert all(
        "has --quick" in steps[n]["summary"] for n in ["bench_kernels", *gpu_check.OTHER_BENCHES]
    )
    for name, flags in gpu_check.KERNEL_BENCHES.items():
        assert f"has {' '.join(flags)}" in steps[name]["summary"], steps[name]
    for name in gpu_check.OTHER_BENCHES:  # the real run keeps their CUDA rows only
        assert "--cuda-only" in steps[name]["summary"] and "--cuda-only" in steps[name]["cmd"]
    for name in [*gpu_check.KERNEL_BENCHES, *gpu_check.OTHER_BENCHES]:  # tuning budgets
        budget = f"{gpu_check.TUNE_ENV}={gpu_check.TUNE_S[name]} "
        assert steps[name]["cmd"].startswith(budget), steps[name]["cmd"]
    assert "--tune-budget-s" in steps["bench_kernels"]["summary"]
    assert re.fullmatch(r"(\d+)/\1 TMA candidates agree", steps["probe_tma"]["summary"])
    assert not report.get("tma_off")
    assert (
        steps["compile_ahead"]["summary"]
        == "2 shards beside gpu_tests: 2 finished, 0 failed, 0 cut"
    )
    assert "MINIFT_AUTOTUNE_COMPILE=0/2" in steps["compile_ahead"]["cmd"]
    assert "--compile-ahead" in steps["compile_ahead"]["cmd"]
    for i in range(2):
        assert "tuning candidates" in (tmp_path / f"compile_ahead_{i}.log").read_text()
    assert report["environment"]["torch"] and report["environment"]["cuda_available"] in (
        True,
        False,
    )

    # The selection: every kernel test file, and elsewhere only tests about CUDA or kernels.
    collected = re.findall(
        r"^(tests/\S+\.py)::(\S+)", (tmp_path / "gpu_tests.log").read_text(), re.M
    )
    files = {f for f, _ in collected}
    assert {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_kernels_*.py")} <= files
    assert "tests/test_gpu_check.py" not in files
    others = [name for f, name in collected if not f.startswith("tests/test_kernels_")]
    assert all(gpu_check.GPU_WORDS.search(name) for name in others), others
    assert report["tests"]["selected"] == len(collected) > 0

    md = (tmp_path / "results.md").read_text()
    assert md.startswith("# minift GPU check: CPU (dry run)") and "| gpu_tests | ok |" in md
    tail = done.stdout.strip().splitlines()
    assert any("GPU CHECK SUMMARY (dry run)" in line for line in tail[-15:])
    assert tail[-1].startswith("results: ")
    for s in steps.values():  # every step's log is kept beside the results
        assert s["log"] == "-" or (tmp_path / s["log"]).stat().st_size > 0


@pytest.mark.parametrize("name", gpu_check.OTHER_BENCHES)
def test_cuda_only_without_cuda_is_one_line_of_error(name, tmp_path):
    """The check comes first: no model is built, no folder made, before the refusal."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA device, even on a GPU machine
    start = time.time()
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{name}.py"), "--quick", "--cuda-only",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == "", done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"{name}: --cuda-only needs a CUDA device, and torch sees none"], lines
    assert not (tmp_path / "out").exists()
    assert time.time() - start < 60


def test_a_hanging_step_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(120)\n"
    )
    start = time.time()
    step = gpu_check.run_step("hang", [sys.executable, "-c", code], 3.0, tmp_path / "hang.log")
    assert step["status"] == "timeout" and step["rc"] is None
    assert time.time() - start < 20
    assert "started" in (tmp_path / "hang.log").read_text()
    child = int(pid_file.read_text())
    for _ in range(50):  # the grandchild went with its process group
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"grandchild {child} still alive")


def test_a_failing_step_is_recorded(tmp_path):
    step = gpu_check.run_step(
        "fails",
        [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
        30,
        tmp_path / "f.log",
    )
    assert (step["status"], step["rc"]) == ("failed", 3)
    assert "boom" in gpu_check.log_tail(tmp_path / "f.log", 2)
    missing = gpu_check.run_step("missing", ["/nonexistent/python"], 30, tmp_path / "m.log")
    assert missing["status"] == "failed" and "No such file" in missing["error"]


def test_pytest_counts_are_read_from_summaries_and_junit(tmp_path):
    counts = gpu_check.summary_counts("...\n1 failed, 90 passed, 3 skipped, 2 errors in 5.12s\n")
    assert (counts["failed"], counts["passed"], counts["skipped"], counts["errors"]) == (
        1,
        90,
        3,
        2,
    )
    collected = gpu_check.summary_counts("115/223 tests collected (108 deselected) in 3.8s")
    assert (collected["selected"], collected["deselected"]) == (115, 108)
    assert gpu_check.summary_counts("no tests ran in 0.01s")["passed"] == 0
    xml = tmp_path / "t.xml"
    xml.write_text(
        '<testsuites><testsuite><testcase classname="tests.a" name="ok"/>'
        '<testcase classname="tests.a" name="bad"><failure message="x"/></testcase>'
        '<testcase classname="tests.b" name="gpu"><skipped message="needs a CUDA GPU"/></testcase>'
        '<testcase classname="tests.b" name="err"><error message="e"/></testcase>'
        "</testsuite></testsuites>"
    )
    parsed = gpu_check.junit_counts(xml)
    assert (parsed["passed"], parsed["failed"], parsed["skipped"], parsed["errors"]) == (1, 1, 1, 1)
    assert parsed["failures"] == ["tests.a::bad", "tests.b::err (error)"]
    assert gpu_check.junit_counts(tmp_path / "absent.xml") is None
    cut = gpu_check.progress_counts("....F.s..  [ 40%]\n..sE\n=== FAILURES ===\n.F not progress")
    assert cut == dict(passed=9, failed=1, errors=1, skipped=2)


def test_report_renders_the_kernel_tables_and_goals(tmp_path, capsys):
    """The markdown and the closing summary, from bench_kernels' own goals() on rows shaped
    as it writes them (one goal met, one missed, one not measured)."""
    bench = load("bench_kernels")
    kernels = {
        "device": "NVIDIA H100 80GB HBM3", "torch": "2.11", "triton": "3.6", "dtype": "torch.bfloat16",
        "lora": [{"r": 16, "pass": "fwd+bwd", "fused ms": 1.2, "eager ms": 1.5, "base ms": 1.0,
                  "fused/base": 1.2, "fused/eager": 0.8, "fused TFLOP/s": 500.0}],
        "attention": [{"T": 4096, "D": 128, "causal": True, "pass_": "fwd", "minift": 420.0,
                       "sdpa_flash": 450.0, "best_sdpa": "sdpa_flash", "vs_best_sdpa": 0.93}],
        "block_sparse": [], "errors": {"sparse": "RuntimeError: boom"},
        "launches": [{"kernel": "fused_lora", "stages": 3, "shared": 104448}],
    }  # fmt: skip
    kernels["goals"] = bench.goals(kernels)
    states = {g["goal"].split(":")[0]: g["met"] for g in kernels["goals"]}
    assert states["LoRA r=16 fwd+bwd"] is False and states["LoRA fwd+bwd"] is True
    assert states["attention fwd T=4096 D=128 causal"] is True
    assert states["block-sparse"] is None and states["attention bwd T=4096 D=128 causal"] is None
    report = dict(
        dry_run=False, command="python3 scripts/gpu_check.py", started="now", total_s=250.0,
        environment={"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11", "triton": "3.6"},
        steps=[dict(name="gpu_tests", status="failed", seconds=80.0, summary="1 failed", log="g.log"),
               dict(name="bench_train", status="timeout", seconds=60.0, summary="timed out",
                    log="t.log", tail="CUDA rows | 1 | 2")],
        tests=dict(passed=3, failed=1, errors=0, skipped=0, failures=["tests/x.py::test_y"]),
        bench_kernels=kernels,
    )  # fmt: skip
    gpu_check.write_report(tmp_path, report)
    md = (tmp_path / "results.md").read_text()
    assert md.startswith("# minift GPU check: NVIDIA H100 80GB HBM3")
    for text in ("### Goals", "NOT met", "not measured", "| fused_lora | 3 | 104448 |",
                 "failed: `tests/x.py::test_y`", "sparse: RuntimeError: boom", "## bench_train (timeout"):  # fmt: skip
        assert text in md, text
    assert json.loads((tmp_path / "results.json").read_text())["bench_kernels"]["goals"]
    gpu_check.print_summary(report, tmp_path)
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("GPU CHECK SUMMARY: NVIDIA H100 80GB HBM3") for line in out)
    assert any("NOT met" in line for line in out) and out[-1].startswith("results: ")


def test_the_checkout_imports_without_pip_through_the_shim(tmp_path):
    shim = gpu_check.make_shim(tmp_path)
    probe = "import importlib.util as u; print(u.find_spec('minift.kernels').origin)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd="/",
        env={**os.environ, "PYTHONPATH": str(shim)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        pathlib.Path(done.stdout.strip()).resolve() == (ROOT / "kernels" / "__init__.py").resolve()
    )


def test_a_failed_tma_probe_switches_tma_off_for_the_rest():
    """A probe that failed or hung: the later steps run with MINIFT_TMA=0, the TMA tests are
    left out of the GPU tests (and, when they run, come after the other kernel tests)."""
    from minift.kernels.tma import TMA_ENV

    assert gpu_check.TMA_ENV == TMA_ENV  # the check cannot import minift before installing it
    env, report = {}, {}
    ok = gpu_check.probe_summary(
        dict(status="ok", rc=0), "x\n8/8 TMA candidates agree\n", env, report
    )
    assert ok == "8/8 TMA candidates agree" and env == {} and report == {}
    log = "TMA probe on H100\n  FAILED lora 128x256x64 w8 s3 persistent: RuntimeError: CUDA error\n"
    line = gpu_check.probe_summary(dict(status="failed", rc=1), log, env, report)
    assert line.startswith("FAILED lora 128x256x64") and f"{TMA_ENV}=0" in line
    assert env == {TMA_ENV: "0"} and report == {"tma_off": True}
    hung = gpu_check.probe_summary(dict(status="timeout", rc=None), "TMA probe on H100\n", {}, {})
    assert hung.startswith("rc None;")

    with_tma, without = gpu_check.test_files(), gpu_check.test_files(with_tma=False)
    tma = [f for f in with_tma if f.endswith("_tma.py")]
    assert tma and not any(f.endswith("_tma.py") for f in without)
    assert set(with_tma) - set(without) == set(tma)
    kernels = [f for f in with_tma if f.startswith("tests/test_kernels_")]
    last = [f"tests/{name}.py" for name in gpu_check.LAST]
    assert kernels[-len(last) - len(tma) : -len(last)] == tma and kernels[-len(last) :] == last


def test_background_jobs_are_collected_or_cut(tmp_path):
    """The compile-ahead shards run beside the GPU tests: after them, each is counted as
    finished (rc 0) or failed, and one still running past the wait is ended."""
    env = dict(os.environ)
    code = {
        "ok": "pass",
        "fails": "import sys; sys.exit(3)",
        "hangs": "import time; time.sleep(60)",
    }
    jobs = [
        gpu_check.start_background(
            [sys.executable, "-c", c], tmp_path / f"{n}.log", env, {"X": "1"}
        )
        for n, c in code.items()
    ]
    start = time.time()
    counts = gpu_check.finish_background(jobs, wait_s=3)
    assert time.time() - start < 20
    assert {k: counts[k] for k in ("finished", "failed", "cut")} == dict(
        finished=1, failed=1, cut=1
    )
    assert all(job["proc"].poll() is not None for job in jobs)
    assert (tmp_path / "hangs.log").read_text().startswith("$ X=1 ")
    missing = gpu_check.start_background(["/nonexistent/python"], tmp_path / "m.log", env, {})
    assert gpu_check.finish_background([missing], 1)["failed"] == 1
    assert "could not start" in (tmp_path / "m.log").read_text()
