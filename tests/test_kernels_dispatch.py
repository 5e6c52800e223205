"""The dispatch rule, output poisoning, and minift.kernels without Triton installed."""

import os
import subprocess
import sys

import pytest
import torch
from minift.kernels import kernel_mode, use_triton
from minift.kernels.buffers import output_buffer, poisoned_outputs


def test_dispatch_rule(monkeypatch):
    x = torch.randn(2, 3)
    monkeypatch.delenv("MINIFT_KERNELS", raising=False)
    assert kernel_mode() == "auto"
    assert use_triton(x) is False  # CPU tensors take the reference unless forced
    assert use_triton() is False
    monkeypatch.setenv("MINIFT_KERNELS", "reference")
    assert use_triton(x) is False
    monkeypatch.setenv("MINIFT_KERNELS", "triton")
    on_device = x.to("cuda" if torch.cuda.is_available() else "cpu")  # CPU: interpreter is on
    assert use_triton(on_device, None) is True
    monkeypatch.setenv("MINIFT_KERNELS", "fast")
    with pytest.raises(ValueError, match="MINIFT_KERNELS='fast'"):
        use_triton(x)


def test_forcing_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("MINIFT_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        use_triton(torch.randn(2))


def test_poisoned_outputs_fill_nan_only_inside_the_block():
    with poisoned_outputs():
        assert output_buffer((3, 2), torch.float32, torch.device("cpu")).isnan().all()
    assert not output_buffer((64,), torch.float32, torch.device("cpu")).isnan().all()


NO_TRITON = """
import sys
sys.modules["triton"] = None  # makes `import triton` fail, as where it is not installed
import torch
import minift.kernels as K
assert not K.triton_available()
x, w, a, b = torch.randn(4, 8), torch.randn(6, 8), torch.randn(2, 8), torch.randn(6, 2)
y = K.lora_linear(x, w, None, a, b, 0.5)
assert torch.allclose(y, K.lora_linear_reference(x, w, None, a, b, 0.5), atol=1e-5)
q = torch.randn(1, 2, 16, 8)
o = K.attention(q, q, q)
lay = K.sliding_window_layout(16, 4, 2, causal=True)
o2 = K.block_sparse_attention(q, q, q, lay, 4)
assert torch.isfinite(o).all() and torch.isfinite(o2).all()
try:
    import os
    os.environ["MINIFT_KERNELS"] = "triton"
    K.attention(q, q, q)
except RuntimeError as err:
    assert "not installed" in str(err)
else:
    raise AssertionError("forcing triton without triton should fail")
print("ok")
"""


def test_minift_kernels_work_without_triton():
    env = {k: v for k, v in os.environ.items() if k != "MINIFT_KERNELS"}
    done = subprocess.run(
        [sys.executable, "-c", NO_TRITON], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
