"""scripts/probe_tma.py: every TMA candidate runs once against float32 before the GPU check
lets the tuner launch it; a wrong output or a fault fails the probe (and make gpu-check then
switches TMA off). On the CPU through Triton's interpreter."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytest.importorskip("minift.kernels.lora_triton")


def load_probe():
    spec = importlib.util.spec_from_file_location("probe_tma", ROOT / "scripts" / "probe_tma.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.setenv("MINIFT_AUTOTUNE", "1")  # restored after the probe sets it to 0
    monkeypatch.delenv("MINIFT_TMA", raising=False)
    return load_probe()


def test_every_candidate_agrees_in_the_interpreter(probe, tmp_path, capsys):
    from minift.kernels import flash_fwd_tma_triton, lora_tma_triton

    assert probe.main(["--smoke", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "probe_tma.json").read_text())
    n = 2 * len(lora_tma_triton.TMA_SPACE) + len(flash_fwd_tma_triton.TMA_SPACE)
    assert record["ok"] and len(record["cases"]) == n
    assert all(c["ok"] and c["rel_err"] < 1e-3 for c in record["cases"])  # fp16 vs float32
    assert f"{n}/{n} TMA candidates agree" in capsys.readouterr().out


def test_a_wrong_output_fails_the_probe(probe, monkeypatch, tmp_path, capsys):
    from minift.kernels import lora_triton

    real = lora_triton.lora_tma

    def off_by_one_percent(*args):
        y, u = real(*args)
        return y * 1.02, u

    monkeypatch.setattr(lora_triton, "lora_tma", off_by_one_percent)
    assert probe.main(["--smoke", "--out", str(tmp_path)]) == 1
    record = json.loads((tmp_path / "probe_tma.json").read_text())
    lora = [c for c in record["cases"] if c["name"].startswith("lora")]
    assert lora and not any(c["ok"] for c in lora) and not record["ok"]
    assert all(c["ok"] for c in record["cases"] if c["name"].startswith("attention"))
    assert "MISMATCH" in capsys.readouterr().out


def test_a_fault_stops_the_probe_at_once(probe, monkeypatch, tmp_path, capsys):
    from minift.kernels import flash_triton

    def fault(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")

    monkeypatch.setattr(flash_triton, "attention_fwd_tma", fault)
    assert probe.main(["--smoke", "--out", str(tmp_path)]) == 1
    record = json.loads((tmp_path / "probe_tma.json").read_text())
    assert record["cases"][-1] == dict(
        name=record["cases"][-1]["name"],
        error="RuntimeError: CUDA error: an illegal memory access was encountered",
    )
    assert record["cases"][-1]["name"].startswith("attention fwd")
    assert len([c for c in record["cases"] if c["name"].startswith("attention")]) == 1  # stopped
    assert "FAILED attention fwd" in capsys.readouterr().out


def test_nothing_to_probe_where_tma_cannot_run(probe, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MINIFT_TMA", "0")
    assert probe.main(["--smoke", "--out", str(tmp_path)]) == 0
    assert "switched off" in json.loads((tmp_path / "probe_tma.json").read_text())["skipped"]
    assert "nothing to probe" in capsys.readouterr().out
