"""Prove the kernels on a lent GPU in one command: install, environment, GPU tests, benchmarks.

    make gpu-check OUT=dir                          # = python3 scripts/gpu_check.py --out dir
    python3 scripts/gpu_check.py --dry-run --out d  # on the CPU: is every step wired?

For a machine with a CUDA GPU and no network, lent for a few minutes. Steps, in order of
importance, each a subprocess with its own timeout inside one overall budget (default
285 s, so the whole check ends within 5 minutes on one H100):

1. install: ``python3 -m pip install --no-deps --no-build-isolation -e .`` into this python
   (skipped when minift is already importable from this checkout);
2. environment: GPU, capability, memory, shared memory, driver, torch, Triton, CUDA;
3. probe_tma: every TMA kernel candidate once at the goal shapes, in its own process
   (scripts/probe_tma.py); when one faults, hangs or disagrees with float32, the steps
   after it run with ``MINIFT_TMA=0`` (no TMA kernel offered) and without the TMA tests, so
   a device fault cannot spoil the CUDA context the tuner times everything else in;
4. GPU tests: tests/test_kernels_*.py and the tests elsewhere that need CUDA or exercise the
   Triton paths (selected by a pytest plugin in this file), without TRITON_INTERPRET, on the
   fixed tile table (MINIFT_AUTOTUNE=0: the configuration the tests check; the autotuner's
   own GPU test switches it on); beside them, on the idle cores, up to 8 processes
   (``bench_kernels --quick --compile-ahead``, ``MINIFT_AUTOTUNE_COMPILE=i/n``) compile the
   kernel benchmark's tuning candidates into Triton's disk cache, so that step's tuning
   budget goes to timing them (the first H100 run spent it mostly compiling: ~0.8 s per
   candidate; the attention shapes were never tuned); they are waited for at most
   ``CAPS["compile_ahead_wait"]`` after the tests and recorded as the step compile_ahead;
5. bench_kernels --quick: fused LoRA, flash attention, block-sparse against their baselines,
   checked against float32 references before timing, each shape autotuned first (its own
   time budget, beside the benchmark's); the chosen configurations go into results.md and
   the tuner's cache file is copied beside it (autotune.json);
6. the adapter-serving kernels: the NF4 matmul of QLoRA (bench_efficiency --kernel-only)
   and the multi-LoRA kernels (bench_personal --gpu-only), each against its unfused form;
7. the CUDA rows of bench_train, bench_peft and bench_long_context (--quick --cuda-only),
   the last on what time is left.

Each step has a cap (``CAPS``, explained there). The benchmarks other than bench_kernels
get their tuning budget through ``MINIFT_TUNE_BUDGET_S`` (``TUNE_S``; seconds per process,
read by the kernels' process-wide tuner), bench_kernels through its ``--tune-budget-s``.

A step that fails or times out is recorded and the next one runs; a step that would start
with under 10 s left is recorded as skipped. ``results.md`` (markdown tables, device named)
and ``results.json`` are rewritten after every step, each step's log is kept beside them,
and the last thing printed is a compact summary. ``--dry-run`` runs each step in its
quickest CPU form (pip --version, probe_tma --smoke, pytest --collect-only beside two
--smoke --compile-ahead shards, bench_kernels --smoke on one
section, the other benchmarks' --help, which must name the flags the real run passes) to
check the wiring without a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
MIN_STEP_S = 10.0  # a step is not started with less time than this left
# Benchmarks of one kernel family each, run with the flag that keeps only their CUDA table.
KERNEL_BENCHES = {
    "bench_efficiency": ("--kernel-only", "--quick"),
    "bench_personal": ("--gpu-only",),
}
# The model benchmarks, in order of importance, run with --quick --cuda-only: a GPT training
# step against transformers' (flash attention inside), LoRA against peft (the fused LoRA
# kernel inside), then long contexts (15 subprocesses; the block-sparse kernel is already
# timed by bench_kernels).
OTHER_BENCHES = ("bench_train", "bench_peft", "bench_long_context")
# Step caps (s) for one H100. The first run (docs/gpu/2026-11-28-h100) took: install 4,
# environment 8, gpu_tests 82, bench_kernels 71 (31 of them tuning), bench_personal 27 (tuning
# unbounded); bench_efficiency was cut at 45 s mid-tuning, bench_train at 45 s in its CPU
# rows. A cap is ~15 % over the step's expected time, or ~15 s over for a short step: it
# stops a hang, it does not reserve time; what a step leaves unused goes to the steps after
# it. Expected now: 4 + 8 + ~20 (probe_tma: 8 compiles, which Triton's cache then saves
# bench_kernels) + ~95 (gpu_tests: the TMA tests add ~12 compiles; the compile-ahead shards
# run beside them, ~100 candidates over 8 processes, and are waited for at most 20 s more)
# + ~70 (bench_kernels: 40 s tuning, now mostly timing, 30 s timing the rows; the LoRA layer
# alone offers ~40 candidates over its four launches) + ~25 + ~25 (NF4 and multi-LoRA, 12 s
# tuning each) = ~247 s, leaving ~35 s of the 285 for the model benchmarks' CUDA rows (5 s
# of tuning per process):
# bench_train <= 35, bench_peft <= 30, bench_long_context the rest (its cap is the whole
# budget; no step starts with < 10 s left).
CAPS = dict(install=30, environment=25, probe_tma=45, gpu_tests=110, compile_ahead_wait=20,
            bench_kernels=90, bench_efficiency=30, bench_personal=30, bench_train=35,
            bench_peft=30, bench_long_context=285)  # fmt: skip
TUNE_S = dict(bench_kernels=40, bench_efficiency=12, bench_personal=12, bench_train=5,
              bench_peft=5, bench_long_context=5)  # fmt: skip
COMPILE_ENV = "MINIFT_AUTOTUNE_COMPILE"  # "i/n": compile-ahead shard (minift.kernels.autotune)
COMPILE_SHARDS = 8  # at most; half the CPUs otherwise
TMA_ENV = "MINIFT_TMA"  # "0" switches the TMA kernels off (minift.kernels.tma.TMA_ENV)
TUNE_ENV = "MINIFT_TUNE_BUDGET_S"  # read by minift.kernels.autotune's process-wide tuner
SELECT_ENV = "MINIFT_GPU_CHECK_SELECT"  # switches the test-selection plugin below on
GPU_WORDS = re.compile(r"cuda|gpu|triton|kernel", re.IGNORECASE)

ENV_PROBE = r"""
import json, os, platform, subprocess, sys
info = {"python": platform.python_version(), "executable": sys.executable,
        "cpus": os.cpu_count()}
try:
    import torch
    info.update(torch=torch.__version__, cuda_runtime=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(), cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
                    capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                    gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    sm_count=p.multi_processor_count)
except Exception as err:
    info["torch_error"] = repr(err)
try:
    import triton
    info["triton"] = triton.__version__
except Exception as err:
    info["triton_error"] = repr(err)
try:
    from minift.kernels import launch
    if info.get("cuda_available"):
        smem, _ = launch.device_limits(0)
        info["shared_memory_per_block"] = smem
    info["minift"] = __import__("minift").__file__
except Exception as err:
    info["minift_error"] = repr(err)
try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name,clocks.max.sm,power.limit",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
    info["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()[:200]
except Exception as err:
    info["nvidia_smi"] = repr(err)[:200]
print(json.dumps(info))
"""


# --------------------------------------------------------------------- pytest plugin
def pytest_collection_modifyitems(config, items):  # pragma: no cover - runs inside pytest
    """Keep the kernel tests and the tests elsewhere that need CUDA or the Triton paths.

    Active only with MINIFT_GPU_CHECK_SELECT=1 (loaded by ``-p gpu_check``). Outside
    tests/test_kernels_*.py a test is kept when a skipif mark's reason names CUDA or a GPU,
    or its name says cuda, gpu, triton or kernel.
    """
    if os.environ.get(SELECT_ENV) != "1":
        return
    keep, drop = [], []
    for item in items:
        path = pathlib.Path(str(getattr(item, "path", item.fspath)))
        reasons = " ".join(
            str(mark.kwargs.get("reason", "")) for mark in item.iter_markers(name="skipif")
        )
        wanted = (
            path.name.startswith("test_kernels_")
            or re.search(r"cuda|gpu", reasons, re.IGNORECASE)
            or GPU_WORDS.search(item.name)
        )
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


FIRST = ("test_kernels_attention", "test_kernels_lora", "test_kernels_block_sparse",
         "test_kernels_launch", "test_kernels_dispatch")  # fmt: skip
LAST = ("test_kernels_scripts", "test_kernels_compile")  # CPU-heavy: lesson 11, bench --smoke


def test_files(with_tma: bool = True) -> list[str]:
    """tests/test_kernels_*.py, and the other test files that mention CUDA or the kernels
    (their tests are then filtered by the plugin); never this check's own test, nor
    test_lessons.py (lesson 11 also runs in test_kernels_scripts.py). The kernels' own GPU
    tests come first, then the rest, then the TMA kernels' (``*_tma.py``; left out when
    ``with_tma`` is False: the probe failed), the CPU-heavy ones last, so a timeout cuts the
    least useful and a TMA fault spoils few tests."""
    out = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        if path.name in ("test_gpu_check.py", "test_lessons.py"):
            continue
        if path.stem.endswith("_tma") and not with_tma:
            continue
        text = path.read_text(errors="replace")
        if path.name.startswith("test_kernels_") or re.search(r"cuda|MINIFT_KERNELS", text):
            out.append(path)

    def rank(path: pathlib.Path) -> tuple[int, int]:
        if path.stem in FIRST:
            return (0, FIRST.index(path.stem))
        if path.stem in LAST:
            return (3, LAST.index(path.stem))
        return (2, 0) if path.stem.endswith("_tma") else (1, 0)

    return [str(p.relative_to(ROOT)) for p in sorted(out, key=rank)]


def probe_summary(s: dict, text: str, env: dict, report: dict) -> str:
    """The TMA probe's line; when the probe failed or hung, switch the TMA kernels off in
    ``env`` for the steps after it (and say so in ``report``, for the test selection)."""
    agree = re.search(r"^\d+/\d+ TMA candidates agree", text, re.MULTILINE)
    idle = re.search(r"^no TMA kernel can run here \(.*\)", text, re.MULTILINE)
    line = agree.group(0) if agree else idle.group(0) if idle else f"rc {s.get('rc')}"
    if s["status"] != "ok":
        env[TMA_ENV] = "0"
        report["tma_off"] = True
        failed = re.search(r"^  (FAILED .*|.*MISMATCH.*)$", text, re.MULTILINE)
        line = (failed.group(1).strip() if failed else line)[:120]
        line += f"; the rest runs with {TMA_ENV}=0, without the TMA tests"
    return line


# ------------------------------------------------------------------------- running
_running: set[subprocess.Popen] = set()  # steps in flight, ended on an interrupt


def _kill(proc: subprocess.Popen) -> None:
    """End a step's whole process group (pytest workers, benchmark children)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _spawn(cmd: list[str], env: dict | None, out) -> subprocess.Popen:
    """Start ``cmd`` in the checkout, its output to ``out``, in its own process group (so
    :func:`_kill` ends its children too), remembered in ``_running`` for an interrupt."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    _running.add(proc)
    return proc


def run_step(
    name: str,
    cmd: list[str],
    timeout: float,
    log: pathlib.Path,
    env: dict | None = None,
    extra_env: dict | None = None,
) -> dict:
    """Run ``cmd`` with its output in ``log``; never longer than ``timeout`` seconds.
    ``extra_env`` is added to ``env`` (or this environment) and shown before the command."""
    start = time.time()
    shown = [f"{k}={v}" for k, v in (extra_env or {}).items()] + cmd
    if extra_env:
        env = {**(os.environ if env is None else env), **extra_env}
    step = dict(name=name, cmd=" ".join(shown), timeout_s=round(timeout), log=log.name)
    with open(log, "w") as out:
        out.write(f"$ {step['cmd']}\n(timeout {timeout:.0f} s)\n\n")
        out.flush()
        try:
            proc = _spawn(cmd, env, out)
        except OSError as err:
            return {**step, "status": "failed", "rc": None, "seconds": 0.0, "error": repr(err)}
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill(proc)
            rc, status = None, "timeout"
        except BaseException:
            _kill(proc)
            raise
        finally:
            _running.discard(proc)
    return {**step, "status": status, "rc": rc, "seconds": round(time.time() - start, 1)}


def start_background(cmd: list[str], log: pathlib.Path, env: dict, extra_env: dict) -> dict:
    """Start ``cmd`` beside the steps (its output in ``log``); :func:`finish_background`
    collects it. Returns the job (its process is None when it could not start)."""
    shown = " ".join([*(f"{k}={v}" for k, v in extra_env.items()), *cmd])
    out = open(log, "w")  # noqa: SIM115 - closed by finish_background
    out.write(f"$ {shown}\n(in the background)\n\n")
    out.flush()
    job = dict(cmd=shown, log=log, out=out, start=time.time(), proc=None)
    try:
        job["proc"] = _spawn(cmd, {**env, **extra_env}, out)
    except OSError as err:
        out.write(f"could not start: {err!r}\n")
    return job


def finish_background(jobs: list[dict], wait_s: float) -> dict:
    """Wait at most ``wait_s`` in all for ``jobs``, end those still running; counts of
    finished (rc 0), failed and cut, and the seconds the last one ran."""
    deadline = time.time() + max(0.0, wait_s)
    counts = dict(finished=0, failed=0, cut=0, seconds=0.0)
    for job in jobs:
        proc = job["proc"]
        if proc is None:
            counts["failed"] += 1
        else:
            try:
                rc = proc.wait(timeout=max(0.1, deadline - time.time()))
                counts["finished" if rc == 0 else "failed"] += 1
            except subprocess.TimeoutExpired:
                _kill(proc)
                counts["cut"] += 1
            _running.discard(proc)
        counts["seconds"] = max(counts["seconds"], round(time.time() - job["start"], 1))
        job["out"].close()
    return counts


def log_tail(path: pathlib.Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def child_env(dry_run: bool) -> dict:
    env = dict(os.environ)
    env.pop("MINIFT_KERNELS", None)  # the default dispatch: Triton on CUDA tensors
    env.pop(TUNE_ENV, None)  # each step's own tuning budget (TUNE_S), or none
    if not dry_run:
        env.pop("TRITON_INTERPRET", None)  # the real compiler on the GPU
    env.update(PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def autotune_cache_file(env: dict) -> pathlib.Path:
    """Where the kernels' autotuner keeps its choices ($MINIFT_HOME/autotune.json)."""
    home = env.get("MINIFT_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "minift")
    return pathlib.Path(home) / "autotune.json"


def importable_here(env: dict) -> str | None:
    """Where ``minift.kernels`` is found from outside the checkout, if that is this
    checkout's kernels/ (an install of another copy does not count); else None."""
    probe = "import importlib.util as u; print(u.find_spec('minift.kernels').origin)"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              timeout=60, cwd="/", env=env)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None
    path = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout else ""
    here = ROOT / "kernels" / "__init__.py"
    return path if path and pathlib.Path(path).resolve() == here.resolve() else None


def make_shim(out: pathlib.Path) -> pathlib.Path:
    """A folder that, on PYTHONPATH, makes this checkout importable as an install would
    (minift from minift/, minift.kernels from kernels/): the fallback when pip cannot
    install (no setuptools in this python, a read-only site-packages)."""
    shim = out / "_pythonpath"
    package = shim / "minift"
    package.mkdir(parents=True, exist_ok=True)
    init = ROOT / "minift" / "__init__.py"
    (package / "__init__.py").write_text(
        f"__path__.append({str(ROOT / 'minift')!r})\n"
        f"exec(compile(open({str(init)!r}).read(), {str(init)!r}, 'exec'))\n"
    )
    link = package / "kernels"
    if not link.exists():
        link.symlink_to(ROOT / "kernels", target_is_directory=True)
    return shim


def junit_counts(path: pathlib.Path) -> dict | None:
    """passed / failed / errors / skipped and the failing test ids, from pytest's junit XML."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    counts = dict(passed=0, failed=0, errors=0, skipped=0, failures=[])
    for case in root.iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds:
            counts["failed"] += 1
            counts["failures"].append(test_id)
        elif "error" in kinds:
            counts["errors"] += 1
            counts["failures"].append(test_id + " (error)")
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def progress_counts(text: str) -> dict:
    """Counts from pytest -q's progress characters, for a run cut short before its summary
    (and before its junit XML): one character per finished test."""
    counts = dict(passed=0, failed=0, errors=0, skipped=0)
    for line in text.splitlines():
        match = re.fullmatch(r"([.FEsxX]+)\s*(\[\s*\d+%\])?", line.strip())
        if match:
            for char, key in ((".", "passed"), ("F", "failed"), ("E", "errors"), ("s", "skipped")):
                counts[key] += match.group(1).count(char)
    return counts


def summary_counts(text: str) -> dict:
    """Counts from pytest's last summary line ("3 failed, 90 passed, 2 skipped in 5.1s")."""
    counts = dict(passed=0, failed=0, errors=0, skipped=0, deselected=0, selected=0)
    lines = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|"
             r"errors?|deselected|selected|tests? collected)", line)]  # fmt: skip
    if not lines:
        return counts
    line = lines[-1]
    some = re.search(r"(\d+)/\d+ tests? collected", line)  # "115/223 tests collected (..)"
    if some:
        counts["selected"] = int(some.group(1))
        line = line.replace(some.group(0), "")
    for number, word in re.findall(r"(\d+) (\w+)", line):
        key = {"error": "errors", "test": "selected", "tests": "selected"}.get(word, word)
        if key in counts:
            counts[key] += int(number)
    return counts


# ------------------------------------------------------------------------ reporting
def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")


def md_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "(no rows)\n"
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def goal_rows(kernels: dict | None) -> list[dict]:
    rows = []
    for g in (kernels or {}).get("goals", []):
        state = {True: "met", False: "NOT met", None: "not measured"}[g.get("met")]
        rows.append(dict(goal=g["goal"], value=g.get("value"), target=g["target"], state=state))
    return rows


_report_lock = threading.Lock()


def write_report(out: pathlib.Path, report: dict) -> None:
    """results.json and results.md, each written whole and renamed into place."""
    with _report_lock:  # the dry run's --help steps finish concurrently
        _write_report(out, report)


def _write_report(out: pathlib.Path, report: dict) -> None:
    env = report.get("environment", {})
    device = env.get("gpu") or ("CPU (dry run)" if report["dry_run"] else "no CUDA device")
    md = [f"# minift GPU check: {device}", ""]
    md.append(f"{report['started']}, {report.get('total_s', 0):.0f} s in all"
              f"{' (dry run: wiring only, no measurement)' if report['dry_run'] else ''}; "
              f"command `{report['command']}`.")  # fmt: skip
    md += ["", "## Environment", ""]
    keys = ["gpu", "capability", "gpu_memory_gib", "sm_count", "shared_memory_per_block",
            "nvidia_smi", "torch", "triton", "cuda_runtime", "cudnn", "python", "cpus"]  # fmt: skip
    md.append(md_table([{"item": k, "value": env.get(k)} for k in keys if k in env]))
    md += ["## Steps", ""]
    md.append(md_table([{k: s.get(k) for k in ("name", "status", "seconds", "timeout_s", "summary",
                                                 "log")} for s in report["steps"]]))  # fmt: skip
    tests = report.get("tests")
    if tests:
        md += ["## GPU tests", ""]
        md.append(md_table([{k: tests.get(k) for k in ("passed", "failed", "errors", "skipped",
                                                        "deselected", "selected")}]))  # fmt: skip
        for test_id in tests.get("failures", [])[:30]:
            md.append(f"- failed: `{test_id}`")
        md.append("")
    kernels = report.get("bench_kernels")
    if kernels:
        md += ["## Kernels (scripts/bench_kernels.py)", "",
               f"{kernels.get('device')}, torch {kernels.get('torch')}, triton "
               f"{kernels.get('triton')}, {kernels.get('dtype')}.", ""]  # fmt: skip
        if kernels.get("goals"):
            md += ["### Goals", "", md_table(goal_rows(kernels))]
        for key, title in (("lora", "Fused LoRA linear (ms; base = the frozen layer alone)"),
                           ("attention", "Flash attention (TFLOP/s)"),
                           ("block_sparse", "Block-sparse attention (ms)"),
                           ("autotune", "Autotuned configurations (per kernel and shape bucket; "
                                        "times in microseconds, fixed table vs the winner)"),
                           ("roofline", "Roofline: achieved TFLOP/s, fraction of the bf16 peak"),
                           ("checks", "Checks against float32 references (relative error)"),
                           ("launches", "Launches (stages, shared memory from the compiler)")):  # fmt: skip
            if kernels.get(key):
                md += [f"### {title}", "", md_table(kernels[key])]
        if kernels.get("errors"):
            md += ["### Section errors", ""]
            md += [f"- {k}: {v}" for k, v in kernels["errors"].items()] + [""]
        if kernels.get("skipped"):
            md += [f"Skipped for time: {', '.join(kernels['skipped'])}.", ""]
    for name in OTHER_BENCHES:
        step = next((s for s in report["steps"] if s["name"] == name), None)
        if step and step.get("tail"):
            md += [f"## {name} ({step['status']}, {step.get('seconds')} s)", "",
                   f"Last lines of `{step['log']}`:", "", "```", step["tail"], "```", ""]  # fmt: skip
    report = {k: v for k, v in report.items()}
    for path, text in (("results.json", json.dumps(report, indent=1, default=str) + "\n"),
                       ("results.md", "\n".join(md) + "\n")):  # fmt: skip
        tmp = out / (path + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / path)


def print_summary(report: dict, out: pathlib.Path) -> None:
    """The compact table that ends the output (the last lines are what a caller sees)."""
    env = report.get("environment", {})
    print("\n" + "=" * 78)
    print(f"GPU CHECK SUMMARY{' (dry run)' if report['dry_run'] else ''}: "
          f"{env.get('gpu') or 'no CUDA device'}; torch {env.get('torch')}, triton "
          f"{env.get('triton')}, CUDA {env.get('cuda_runtime')}; {report.get('total_s', 0):.0f} s")  # fmt: skip
    print(f"{'step':<20} {'status':<9} {'s':>6}  summary")
    for s in report["steps"]:
        line = (
            f"{s['name']:<20} {s['status']:<9} {fmt(s.get('seconds')):>6}  {s.get('summary', '')}"
        )
        print(line[:150])
    rows = goal_rows(report.get("bench_kernels"))
    if rows:
        print(f"\n{'kernel goal':<64} {'value':>8}  {'target':<8} state")
        for r in rows:
            print(f"{r['goal'][:64]:<64} {fmt(r['value']):>8}  {r['target']:<8} {r['state']}")
    failures = (report.get("tests") or {}).get("failures", [])
    for test_id in failures[:10]:
        print(f"failed test: {test_id}"[:150])
    print(f"results: {out / 'results.md'} and results.json (logs beside them)")


# ---------------------------------------------------------------------------- steps
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/gpu-check", help="folder for results.md/json and logs")
    p.add_argument("--dry-run", action="store_true", help="check the wiring on the CPU")
    p.add_argument("--budget-s", type=float, default=285.0, help="overall time budget")
    p.add_argument("--skip-benches", action="store_true", help="install, environment, tests only")
    args = p.parse_args(argv)
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    deadline = start + args.budget_s
    env = child_env(args.dry_run)
    py = sys.executable
    report: dict = dict(
        dry_run=args.dry_run, command=" ".join([pathlib.Path(py).name, *sys.argv]),
        started=datetime.datetime.now().isoformat(timespec="seconds"), steps=[], environment={},
    )  # fmt: skip

    def left() -> float:
        return deadline - time.time()

    def step(name: str, cmd: list[str], cap: float, summary=None, extra_env=None) -> dict | None:
        """Run one step (at most ``cap`` s, never past the deadline), record it, save the
        report; ``summary(step, log_text)`` fills in the step's one-line summary (and may
        mark it failed); ``extra_env`` is added to the step's environment."""
        budget = min(cap, left() - 3)
        if budget < MIN_STEP_S:
            s = dict(name=name, status="skipped", seconds=0.0, summary="no time left", log="-")
            report["steps"].append(s)
            write_report(out, report)
            print(f"[{time.time() - start:5.0f}s] {name}: skipped (no time left)", flush=True)
            return None
        shown = " ".join([*(f"{k}={v}" for k, v in (extra_env or {}).items()), *cmd])
        print(f"[{time.time() - start:5.0f}s] {name}: {shown.replace(chr(10), ' ')[:110]} (<= {budget:.0f} s)",
              flush=True)  # fmt: skip
        s = run_step(name, cmd, budget, out / f"{name}.log", env, extra_env)
        text = (out / f"{name}.log").read_text(errors="replace")
        try:
            s["summary"] = summary(s, text) if summary else f"rc {s['rc']}"
        except Exception as err:  # noqa: BLE001 - a summary bug must not end the check
            s["summary"] = f"rc {s['rc']} (summary failed: {type(err).__name__}: {err})"
        if s["status"] == "timeout":
            s["summary"] = f"timed out after {s['seconds']:.0f} s; " + s["summary"]
        report["steps"].append(s)
        report["total_s"] = round(time.time() - start, 1)
        write_report(out, report)
        print(f"[{time.time() - start:5.0f}s] {name}: {s['status']} in {s['seconds']:.0f} s: "
              f"{s['summary']}"[:200], flush=True)  # fmt: skip
        if s["status"] != "ok":
            tail = log_tail(out / f"{name}.log", 6)
            print("    " + tail.replace("\n", "\n    ")[-900:], flush=True)
        return s

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    rc = 0
    try:
        # 1. install
        found = importable_here(env)
        if found:
            report["steps"].append(dict(name="install", status="ok", seconds=0.0, log="-",
                                        summary=f"already importable ({found})"))  # fmt: skip
            print(f"[{time.time() - start:5.0f}s] install: already importable from {found}")
        elif args.dry_run:
            step("install", [py, "-m", "pip", "--version"], 30,
                 lambda s, t: "dry run: pip present; would run pip install --no-deps "
                              "--no-build-isolation -e .")  # fmt: skip
        else:
            pip = [py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                   "-e", "."]  # fmt: skip
            s = step("install", pip, CAPS["install"])
            if (
                s
                and s["status"] == "failed"
                and "externally-managed" in log_tail(out / "install.log", 40)
            ):
                report["steps"].pop()
                s = step("install", [*pip, "--break-system-packages"], CAPS["install"])
            if s and s["status"] != "ok":  # go on from the checkout itself
                shim = make_shim(out)
                paths = [str(shim), env.get("PYTHONPATH")]
                env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
                s["summary"] += f"; pip failed: importing from the checkout via {shim.name}/"
                write_report(out, report)

        # 2. environment
        def env_summary(s, text):
            try:
                report["environment"] = json.loads(text.strip().splitlines()[-1])
            except (ValueError, IndexError):
                return "could not read the probe's output"
            e = report["environment"]
            return (f"{e.get('gpu', 'no CUDA')} sm_{e.get('capability', '-')}, torch "
                    f"{e.get('torch')}, triton {e.get('triton')}, CUDA {e.get('cuda_runtime')}")  # fmt: skip

        step("environment", [py, "-c", ENV_PROBE], CAPS["environment"], env_summary)
        gpu = bool(report["environment"].get("cuda_available"))
        if not gpu and not args.dry_run:
            print("no CUDA device: the GPU tests and benchmarks will fail or skip")

        # 3. the TMA kernels, alone in a process first: a device fault inside the tuner would
        # spoil the CUDA context of every kernel timed after it
        probe = [py, str(SCRIPTS / "probe_tma.py"), "--out", str(out / "probe_tma")]
        step("probe_tma", [*probe, "--smoke"] if args.dry_run else probe,
             30 if args.dry_run else CAPS["probe_tma"],
             lambda s, text: probe_summary(s, text, env, report))  # fmt: skip

        # 4. GPU tests
        files = test_files(with_tma=not report.get("tma_off"))
        junit = out / "tests.xml"
        junit.unlink(missing_ok=True)
        # A Triton launch that falls back to the reference fails its test here: on the GPU
        # the tests are there to run the kernels, not to pass on the reference.
        fallback = "error::minift.kernels.dispatch.KernelFallbackWarning"
        pytest = [py, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-p", "gpu_check",
                  "-o", "addopts=", "-W", fallback, f"--junitxml={junit}"]  # fmt: skip
        if args.dry_run:
            pytest.append("--collect-only")
        elif importlib.util.find_spec("xdist") is not None:
            pytest += ["-n", str(max(2, min(8, (os.cpu_count() or 2) // 2)))]
        env[SELECT_ENV] = "1"
        user_tuning = env.get("MINIFT_AUTOTUNE")  # kept for the benchmarks
        env["MINIFT_AUTOTUNE"] = "0"  # the fixed table is what the GPU tests check
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SCRIPTS), env.get("PYTHONPATH")]))

        def test_summary(s, text):
            counts = summary_counts(text)
            parsed = None if args.dry_run else junit_counts(junit)
            if parsed:
                counts.update(parsed)
            elif s["status"] == "timeout":  # no summary, no XML: what finished before the cut
                counts.update(progress_counts(text))
                counts["cut_short"] = True
            report["tests"] = counts
            if args.dry_run:
                return f"{counts['selected']} tests selected from {len(files)} files (collect only)"
            return (f"{counts['passed']} passed, {counts['failed']} failed, {counts['errors']} "
                    f"errors, {counts['skipped']} skipped")  # fmt: skip

        # Beside the tests, which keep one core busy: compile the kernel benchmark's tuning
        # candidates in parallel (Triton's disk cache), so its tuning budget times them.
        shards = []
        if not args.skip_benches and user_tuning != "0" and (gpu or args.dry_run):
            n = 2 if args.dry_run else max(1, min(COMPILE_SHARDS, (os.cpu_count() or 2) // 2))
            cmd = [py, str(SCRIPTS / "bench_kernels.py"), "--compile-ahead",
                   "--smoke" if args.dry_run else "--quick"]  # fmt: skip
            shards = [start_background(cmd, out / f"compile_ahead_{i}.log", env,
                                       {"MINIFT_AUTOTUNE": "1", COMPILE_ENV: f"{i}/{n}"})
                      for i in range(n)]  # fmt: skip
        step("gpu_tests", [*pytest, *files], 90 if args.dry_run else CAPS["gpu_tests"],
             test_summary)  # fmt: skip
        if shards:  # what has not finished by now is not waited for long
            c = finish_background(shards, min(CAPS["compile_ahead_wait"], max(0.0, left() - 60)))
            status = (
                "ok" if c["finished"] == len(shards) else "failed" if c["failed"] else "timeout"
            )
            report["steps"].append(dict(
                name="compile_ahead", status=status, seconds=c["seconds"], log=shards[0]["log"].name,
                cmd=shards[0]["cmd"], summary=f"{len(shards)} shards beside gpu_tests: "
                f"{c['finished']} finished, {c['failed']} failed, {c['cut']} cut",
            ))  # fmt: skip
            write_report(out, report)
        env.pop(SELECT_ENV)
        env.pop("MINIFT_AUTOTUNE")  # the benchmarks tune (unless the caller said 0)
        if user_tuning is not None:
            env["MINIFT_AUTOTUNE"] = user_tuning

        # 5. kernel benchmark
        if not args.skip_benches:
            kernels_out = out / "bench_kernels"

            def kernels_summary(s, text):
                try:
                    report["bench_kernels"] = json.loads((kernels_out / "results.json").read_text())
                except (OSError, ValueError):
                    return "no results.json"
                k = report["bench_kernels"]
                goals = k.get("goals", [])
                met = sum(1 for g in goals if g.get("met"))
                checks = k.get("checks", [])
                bad = [c["name"] for c in checks if not c.get("ok")]
                text = f"{len(checks)} checks" + (f" ({len(bad)} FAILED)" if bad else " ok")
                if goals:
                    text += f"; goals met {met}/{len(goals)}"
                if k.get("autotune"):
                    text += f"; {len(k['autotune'])} configs chosen, {k.get('tuning_s')} s tuning"
                if k.get("errors"):
                    text += f"; errors in {', '.join(k['errors'])}"
                cache = autotune_cache_file(env)
                if cache.exists():  # the choices of this GPU, to keep with the figures
                    (out / "autotune.json").write_bytes(cache.read_bytes())
                return text

            def help_has(s, text, *flags):
                """Dry run: the --help must name every flag the real run passes."""
                missing = [flag for flag in flags if flag not in text]
                if missing:
                    s["status"] = "failed"
                    return f"--help lacks {' '.join(missing)}"
                return f"--help ok, has {' '.join(flags)}"

            cmd = [py, str(SCRIPTS / "bench_kernels.py"), "--out", str(kernels_out)]
            if args.dry_run:  # its --smoke run is tests/test_kernels_scripts.py's
                step("bench_kernels", [*cmd, "--quick", "--help"], 30,
                     lambda s, t: help_has(s, t, "--quick", "--tune-budget-s"))  # fmt: skip
            else:
                cap, tune = CAPS["bench_kernels"], TUNE_S["bench_kernels"]  # tuning: its own budget
                budget = max(20.0, min(cap, left() - 3) - 20 - tune)  # ~20 s: start, compiles
                step("bench_kernels", [*cmd, "--quick", "--budget-s", f"{budget:.0f}",
                                       "--tune-budget-s", f"{tune:.0f}"], cap,
                     kernels_summary)  # fmt: skip

            # 6. NF4 (QLoRA) and multi-LoRA kernels, each against its unfused form
            def kernel_bench_summary(s, text):
                s["tail"] = log_tail(out / f"{s['name']}.log", 30)
                if args.dry_run:
                    return help_has(s, text, *KERNEL_BENCHES[s["name"]])
                rows = len(re.findall(r"^ +\d+ ", text, re.MULTILINE))  # table rows: a count first
                return f"rc {s['rc']}; {rows} table rows"

            for name, flags in KERNEL_BENCHES.items():
                cmd = [py, str(SCRIPTS / f"{name}.py"), *flags, "--out", str(out / name)]
                step(name, [*cmd, "--help"] if args.dry_run else cmd,
                     30 if args.dry_run else CAPS[name], kernel_bench_summary,
                     extra_env={TUNE_ENV: str(TUNE_S[name])})  # fmt: skip

            # 7. the model benchmarks' CUDA rows
            def bench_summary(s, text):
                s["tail"] = log_tail(out / f"{s['name']}.log", 30)
                if args.dry_run:
                    return help_has(s, text, "--quick", "--cuda-only")
                body = text.split("\n", 2)[-1]  # past the "$ command" and "(timeout)" lines
                if s["status"] == "failed":  # its error, usually the last line
                    return f"rc {s['rc']}: " + (body.strip().splitlines() or [""])[-1][:120]
                cuda_rows = len(re.findall(r"\bcuda\b", body, re.IGNORECASE))
                return f"rc {s['rc']}; {cuda_rows} lines mention CUDA"

            names = [n for n in OTHER_BENCHES if (SCRIPTS / f"{n}.py").exists()]
            cmds = {n: [py, str(SCRIPTS / f"{n}.py"), "--quick", "--cuda-only", "--out",
                        str(out / n)] for n in names}  # fmt: skip

            def bench_step(name):
                cmd = [*cmds[name], "--help"] if args.dry_run else cmds[name]
                cap = 30 if args.dry_run else CAPS[name]
                return step(name, cmd, cap, bench_summary, {TUNE_ENV: str(TUNE_S[name])})

            if args.dry_run:  # --help only: all at once (the wiring, not the timings)
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(len(names) or 1) as pool:
                    list(pool.map(bench_step, names))
            else:
                for name in names:
                    bench_step(name)
    except KeyboardInterrupt as err:
        report["steps"].append(dict(name="interrupted", status="failed", seconds=0.0,
                                    summary=str(err) or "interrupted", log="-"))  # fmt: skip
        rc = 130
    except Exception as err:  # noqa: BLE001 - a bug here still leaves results.md behind
        import traceback

        (out / "gpu_check_error.log").write_text(traceback.format_exc())
        report["steps"].append(dict(name="gpu_check", status="failed", seconds=0.0,
                                    summary=f"internal error {type(err).__name__}: {err}"[:200],
                                    log="gpu_check_error.log"))  # fmt: skip
        rc = 1
    finally:
        for proc in list(_running):
            _kill(proc)
        report["total_s"] = round(time.time() - start, 1)
        try:
            write_report(out, report)
        except Exception as err:  # noqa: BLE001 - the JSON at least, then the summary
            (out / "results.md").write_text(f"# minift GPU check\n\nreport failed: {err!r}\n")
            (out / "results.json").write_text(json.dumps(report, default=str))
        print_summary(report, out)
    failed = [s for s in report["steps"] if s["status"] not in ("ok", "skipped")]
    if args.dry_run:
        tests = report.get("tests") or {}
        if not tests.get("selected"):
            failed.append({"name": "gpu_tests (no test selected)"})
    return rc or (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
