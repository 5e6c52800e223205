"""Lesson 11 and the kernel benchmark run end to end (tiny shapes, interpreter)."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

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
    pieces = {row["piece"]: row for row in results["lora_pieces"]}  # each launch timed alone
    assert len(pieces) == 7 and all(row["minift ms"] > 0 for row in pieces.values())
    # untuned, each launch took the fixed table's tiles
    assert [row["route"] for row in pieces.values()][:4] == ["tiles"] * 4
    assert all(pieces[p]["library ms"] > 0 for p in list(pieces)[:4])
    assert all(row["host ms"] > 0 for row in pieces.values())  # Python's time to issue them
    # the interpreter never tunes: the fixed table ran, and the run says so
    assert results["autotuning"] == "off: the interpreter" and results["autotune"] == []
    assert "autotuning off: the interpreter: 0 decisions" in done.stdout
    assert (tmp_path / "bench_kernels.png").stat().st_size > 0


def test_compile_ahead_needs_its_shard(tmp_path):
    """--compile-ahead only launches the timed kernels: without MINIFT_AUTOTUNE_COMPILE=i/n
    (or with tuning off) that would compile nothing, so it refuses in one line."""
    bench = [str(ROOT / "scripts" / "bench_kernels.py"), "--smoke", "--compile-ahead"]
    for env in ({}, {"MINIFT_AUTOTUNE_COMPILE": "0/2", "MINIFT_AUTOTUNE": "0"}):
        done = run(bench, tmp_path, **env)
        assert done.returncode == 1
        assert (
            "--compile-ahead needs MINIFT_AUTOTUNE_COMPILE=i/n"
            in done.stderr.strip().splitlines()[-1]
        )


def load_bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_kernels", ROOT / "scripts" / "bench_kernels.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_reports_each_tuning_decision(monkeypatch, capsys):
    """What a GPU run prints and records per kernel and shape: the chosen configuration,
    how it was chosen, and the fixed table's time against the winner's."""
    from minift.kernels import autotune

    bench = load_bench()
    fixed, best = dict(BLOCK_M=128, num_warps=8), dict(BLOCK_M=64, num_warps=4)
    decision = dict(
        key="fused_lora [bias=False] | M=4096 N=4096 | bfloat16 | NVIDIA H100 | triton 3.6.0",
        config=best, source="tuned", candidates=3, fixed=autotune.describe(fixed),
        times_us={autotune.describe(fixed): 300.0, autotune.describe(best): 200.0},
        rejected={"M256 w8": "output 0 differs by 1 (tolerance 6.2e-02 x 3)"},
    )  # fmt: skip
    monkeypatch.setattr(autotune, "choices", lambda: [decision])
    results = {}
    bench.tuning_info(results)
    row = results["autotune"][0]
    assert row["kernel"] == "fused_lora [bias=False]" and row["shape"] == "M=4096 N=4096"
    assert row["config"] == "M64 w4" and row["speedup"] == 1.5 and row["rejected"] == 1
    printed = capsys.readouterr().out
    assert "Autotuned configurations" in printed and "rejected fused_lora" in printed
    bench.tuning_info(results)  # nothing new: nothing added
    assert len(results["autotune"]) == 1


def test_roofline_fraction_of_the_devices_peak():
    bench = load_bench()
    results = dict(
        device="NVIDIA H100 80GB HBM3",
        lora=[{"r": 16, "pass": "fwd+bwd", "fused TFLOP/s": 494.5}, {"r": 16, "pass": "fwd"}],
        attention=[dict(T=4096, D=128, causal=True, pass_="fwd", minift=400.0),
                   dict(T=1024, D=128, causal=True, pass_="fwd", minift=300.0),
                   dict(T=4096, D=128, causal=True, pass_="bwd", minift=None)],
    )  # fmt: skip
    rows = {r["kernel"]: r for r in bench.roofline(results)}
    assert set(rows) == {"fused LoRA fwd+bwd r=16", "flash attention fwd T=4096 D=128 causal",
                         "flash attention bwd T=4096 D=128 causal"}  # fmt: skip
    assert rows["fused LoRA fwd+bwd r=16"]["of_peak"] == 0.5
    assert abs(rows["flash attention fwd T=4096 D=128 causal"]["of_peak"] - 400 / 989) < 1e-12
    assert rows["flash attention bwd T=4096 D=128 causal"]["of_peak"] is None
    assert bench.peak_tflops("NVIDIA H100 PCIe") == 756.0 and bench.peak_tflops("Tesla T4") is None


def test_the_tuning_budget_is_shared_out_by_section(monkeypatch, tmp_path):
    """40% for the LoRA section, 45% for attention, 15% for block-sparse, of what is left
    when each starts: what a section leaves unused goes on to the ones after it."""
    from minift.kernels import autotune
    from minift.kernels.autotune_tuner import Tuner

    bench = load_bench()
    monkeypatch.setenv("MINIFT_KERNELS", "triton")  # main() sets it for --smoke: restored after
    tuner = Tuner(tmp_path / "autotune.json")
    monkeypatch.setattr(autotune, "_TUNER", tuner)
    allowed = {}

    def section(name, spends):
        def run(b, results):
            allowed[name] = tuner.left()
            tuner.spent += spends * tuner.left()  # the share of its allowance it uses

        return run

    monkeypatch.setattr(bench, "bench_lora", section("lora", 1.0))
    monkeypatch.setattr(bench, "bench_attention", section("attention", 0.5))
    monkeypatch.setattr(bench, "bench_sparse", section("sparse", 0.0))
    bench.main(["--smoke", "--out", str(tmp_path), "--tune-budget-s", "10"])
    assert allowed["lora"] == pytest.approx(4.0)  # 0.4 of 10
    assert allowed["attention"] == pytest.approx(6.0 * 0.45 / 0.6)  # of the 6 left
    assert allowed["sparse"] == pytest.approx(6.0 - 2.25)  # all that is left
