"""Shared test set-up.

Triton reads TRITON_INTERPRET when it is first imported, so it is set here, before any
test module imports minift.kernels: without a GPU every Triton kernel runs through the
interpreter on CPU tensors. MINIFT_FAST selects the tiny base model and short runs, and
MINIFT_HOME keeps the test caches apart from a user's.
"""

import os
import pathlib

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("MINIFT_FAST", "1")
os.environ.setdefault(
    "MINIFT_HOME", str(pathlib.Path(__file__).resolve().parent.parent / ".cache" / "minift-test")
)

import pytest  # noqa: E402

# Under pytest-xdist each worker gets one thread: two workers with two threads each on two
# cores spend more time contending than computing (measured 3-6x slower on tiny models).
torch.set_num_threads(
    1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1))
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def has_cuda() -> bool:
    return torch.cuda.is_available()


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
