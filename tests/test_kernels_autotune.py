"""The autotuner (minift.kernels.autotune), on the CPU: a fake timer stands in for CUDA
events, so what is tested is the choice (the fastest of the candidates whose outputs agree),
the cache (keys, the JSON file, a corrupt file), the pruning of each kernel's space by
shape and by the shared memory of sm_86 and sm_90, the launchers' wiring (through the
interpreter) and, compiled for real targets, the largest candidates each GPU keeps.
"""

import json
import math

import pytest
import torch
from minift.kernels import autotune, launch
from minift.kernels.autotune import (
    AutotuneCacheWarning,
    Tuner,
    bucket,
    describe,
    disagreement,
    make_key,
    prune,
    tune,
)
from minift.kernels.launch import CONSUMER_SMEM, attention_smem, lora_smem, smem_bytes

H100_SMEM = 232_448
HOPPER, AMPERE = (9, 0), (8, 6)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def configs(*names):
    return [dict(BLOCK_M=m, num_warps=4, num_stages=2) for m in names]


class FakeKernel:
    """run(config) returns ``out`` (or what ``broken`` says for that BLOCK_M) and remembers
    the config; the fake timer charges ``cost[BLOCK_M]`` seconds for the last one run."""

    def __init__(self, cost, broken=None):
        self.cost, self.broken = cost, broken or {}
        self.out = torch.randn(64, 48, generator=torch.Generator().manual_seed(1))
        self.calls: list[int] = []

    def run(self, config):
        m = config["BLOCK_M"]
        self.calls.append(m)
        what = self.broken.get(m)
        if isinstance(what, Exception):
            raise what
        return self.out.clone() if what is None else what(self.out.clone())

    def timer(self, fn):
        fn()
        return self.cost[self.calls[-1]]


# --------------------------------------------------------------------- the choice
def test_the_fastest_candidate_wins():
    kernel = FakeKernel({16: 3e-3, 32: 1e-3, 64: 2e-3})
    result = tune(configs(16, 32, 64), kernel.run, kernel.timer)
    assert result.config["BLOCK_M"] == 32 and result.complete
    assert result.times == {describe(c): t for c, t in zip(configs(16, 32, 64), (3e-3, 1e-3, 2e-3))}
    assert result.rejected == {}


def test_a_candidate_whose_output_differs_cannot_win():
    def one_tile_missing(out):
        out[16:32, 16:32] = 0.0
        return out

    def nan_row(out):
        out[5] = float("nan")
        return out

    kernel = FakeKernel(
        {16: 3e-3, 32: 1e-4, 64: 1e-5, 128: 1e-6, 256: 2e-3},
        broken={32: one_tile_missing, 64: nan_row, 128: RuntimeError("out of resource: shared")},
    )
    result = tune(configs(16, 32, 64, 128, 256), kernel.run, kernel.timer)
    assert result.config["BLOCK_M"] == 256  # the fastest of those that agree
    rejected = {k.split()[0]: v for k, v in result.rejected.items()}
    assert set(rejected) == {"M32", "M64", "M128"}
    assert "differs" in rejected["M32"] and "differs" in rejected["M64"]
    assert rejected["M128"].startswith("RuntimeError: out of resource")


def test_the_fixed_tables_error_is_the_kernels():
    kernel = FakeKernel({16: 1.0}, broken={16: RuntimeError("PTX compilation failed")})
    with pytest.raises(RuntimeError, match="PTX"):
        tune(configs(16, 32), kernel.run, kernel.timer)


def test_tolerance_accepts_rounding_and_rejects_a_missing_tile():
    """Two correct kernels (K summed in one pass, or in 16-wide chunks as tiles do), both
    rounded to bf16, agree; zeroing one 16 x 16 tile of a 256 x 256 output does not."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(256, 600, generator=gen), torch.randn(600, 256, generator=gen)
    whole = (x @ w).bfloat16()
    chunked = sum(x[:, i : i + 16] @ w[i : i + 16] for i in range(0, 600, 16)).bfloat16()
    assert not torch.equal(whole, chunked)  # the orders do differ
    assert disagreement(chunked, whole) is None
    lse = torch.tensor([1.0, -math.inf])  # equal infinities agree
    assert disagreement((chunked, lse), (whole, lse.clone())) is None
    broken = chunked.clone()
    broken[32:48, 64:80] = 0
    assert "differs" in disagreement(broken, whole)
    assert "shape" in disagreement(whole[:, :8], whole)
    assert "2 outputs" in disagreement((whole, whole), whole)


# ------------------------------------------------------------------------- cache
def test_keys_separate_shape_buckets_and_dtypes():
    key = lambda m, dtype=torch.bfloat16, gpu="NVIDIA H100", tv="3.6.0": make_key(  # noqa: E731
        "fused_lora", dict(M=m, N=4096), dict(bias=False), dtype, gpu, tv
    )
    assert key(3000) == key(4096)  # one bucket: 2^12
    assert key(4096) != key(4097)
    assert key(4096) != key(4096, torch.float16)
    assert key(4096) != key(4096, gpu="NVIDIA A100")
    assert key(4096) != key(4096, tv="3.8.0")
    assert (
        key(40) == "fused_lora [bias=False] | M=64 N=4096 | bfloat16 | NVIDIA H100 | triton 3.6.0"
    )
    assert [bucket(n) for n in (1, 16, 17, 40, 4096)] == [1, 16, 32, 64, 4096]


def test_one_tuning_per_key_and_the_file_round_trips(tmp_path):
    path = tmp_path / "autotune.json"
    kernel = FakeKernel({16: 3e-3, 32: 1e-3})
    tuner = Tuner(path, timer=kernel.timer)
    assert tuner.choose("a", configs(16, 32), kernel.run)["BLOCK_M"] == 32
    runs = len(kernel.calls)
    assert tuner.choose("a", configs(16, 32), kernel.run)["BLOCK_M"] == 32
    assert len(kernel.calls) == runs  # from memory
    tuner.choose("b", configs(16, 32), kernel.run)
    assert len(kernel.calls) > runs  # another key is tuned again
    stored = json.loads(path.read_text())
    assert set(stored) == {"a", "b"} and stored["a"]["config"]["BLOCK_M"] == 32
    assert stored["a"]["times_us"] == {describe(configs(16)[0]): 3000.0,
                                       describe(configs(32)[0]): 1000.0}  # fmt: skip

    def must_not_run(config):
        raise AssertionError("a cached key was tuned again")

    fresh = Tuner(path, timer=kernel.timer)  # a new process
    assert fresh.choose("a", configs(16, 32), must_not_run)["BLOCK_M"] == 32
    assert fresh.log[-1]["source"] == "cache"
    # a cached winner that is no longer a candidate (the space changed) is tuned again
    assert fresh.choose("b", configs(16, 64), FakeKernel({16: 2.0, 64: 1.0}).run)["BLOCK_M"] in (
        16,
        64,
    )
    assert fresh.log[-1]["source"] == "tuned"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_a_corrupt_cache_file_warns_once_and_is_replaced(tmp_path, content):
    path = tmp_path / "autotune.json"
    path.write_text(content)
    kernel = FakeKernel({16: 2e-3, 32: 1e-3})
    tuner = Tuner(path, timer=kernel.timer)
    with pytest.warns(AutotuneCacheWarning, match="ignoring the unreadable cache") as caught:
        assert tuner.choose("a", configs(16, 32), kernel.run)["BLOCK_M"] == 32
        tuner.choose("b", configs(16, 32), kernel.run)
    assert len(caught) == 1
    assert set(json.loads(path.read_text())) == {"a", "b"}  # rewritten whole and valid
    assert not list(tmp_path.glob("*.tmp"))


def test_entries_of_the_wrong_form_are_skipped(tmp_path):
    path = tmp_path / "autotune.json"
    path.write_text(json.dumps({"a": {"config": {"BLOCK_M": "big"}}, "b": 3}))
    kernel = FakeKernel({16: 2e-3, 32: 1e-3})
    assert Tuner(path, timer=kernel.timer).choose("a", configs(16, 32), kernel.run)["BLOCK_M"] == 32


def test_a_spent_budget_keeps_the_fixed_table_and_writes_nothing(tmp_path):
    path = tmp_path / "autotune.json"
    kernel = FakeKernel({16: 2e-3, 32: 1e-3})
    tuner = Tuner(path, timer=kernel.timer)
    tuner.budget_s = 0.0
    assert tuner.choose("a", configs(16, 32), kernel.run)["BLOCK_M"] == 16
    assert tuner.log[-1]["source"] == "fixed (tuning budget spent)" and not path.exists()
    assert kernel.calls == []


def test_a_budget_that_runs_out_mid_search_is_not_cached(tmp_path):
    kernel = FakeKernel({16: 2e-3, 32: 1e-3, 64: 5e-4})
    result = tune(configs(16, 32, 64), kernel.run, kernel.timer, deadline=0.0)
    assert result.config["BLOCK_M"] == 16 and not result.complete
    assert all(v.startswith("not tried") for v in result.rejected.values())
    tuner = Tuner(tmp_path / "autotune.json", timer=kernel.timer)
    tuner.budget_s = 1e-9  # spent as soon as the first candidate has run
    tuner.choose("a", configs(16, 32, 64), kernel.run)
    assert tuner.log[-1]["source"] == "tuned (cut short by the budget)" and tuner.spent > 0
    assert not (tmp_path / "autotune.json").exists()


def test_one_decision_leaves_half_the_budget_to_the_next(tmp_path, monkeypatch):
    """Each run of a candidate takes 10 ms of a fake clock (a check and a timing per
    candidate: 20 ms), the budget is 0.25 s: the first decision stops after about half of it,
    so the second is still tuned (not left to the fixed table)."""
    from minift.kernels import autotune_tuner

    clock = [0.0]
    monkeypatch.setattr(autotune_tuner.time, "time", lambda: clock[0])
    kernel = FakeKernel({m: 1e-3 for m in range(16, 46)})

    def run(config):
        clock[0] += 0.01
        return kernel.run(config)

    tuner = Tuner(tmp_path / "autotune.json", timer=kernel.timer)
    tuner.budget_s = 0.25
    tuner.choose("first", configs(*range(16, 46)), run)
    first = tuner.log[-1]
    assert first["source"] == "tuned (cut short by the budget)"
    # 20 ms a candidate; the last one starts before 0.125 s (half the budget) and ends after
    assert len(first["times_us"]) == 7 and tuner.spent == pytest.approx(0.14, abs=1e-9)
    tuner.choose("second", configs(16, 17, 18), run)
    second = tuner.log[-1]
    assert second["source"].startswith("tuned") and len(second["times_us"]) >= 2


def test_the_switch(monkeypatch):
    for value, on in (("", True), ("1", True), ("0", False), ("off", False)):
        monkeypatch.setenv("MINIFT_AUTOTUNE", value)
        assert autotune.mode() is on
    monkeypatch.setenv("MINIFT_AUTOTUNE", "fast")
    with pytest.raises(ValueError, match="MINIFT_AUTOTUNE='fast' is not one of 1"):
        autotune.mode()
    monkeypatch.setenv("MINIFT_AUTOTUNE", "1")
    assert not autotune.enabled(torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the interpreter never tunes
    assert not autotune.enabled(torch.device("cuda"))


def test_a_decided_launch_neither_lists_candidates_nor_rebuilds_its_key(tmp_path, monkeypatch):
    """The launch path after a bucket's decision: one dictionary lookup for the key (the same
    string make_key builds), and the candidate space (a function) is never listed."""
    import triton

    monkeypatch.setattr(autotune, "enabled", lambda device: True)
    tuner = Tuner(tmp_path / "autotune.json", timer=lambda fn: (fn(), 1.0)[1])
    monkeypatch.setattr(autotune, "_TUNER", tuner)
    monkeypatch.setattr(autotune, "_KEYS", {})
    listed = []

    def space():
        listed.append(1)
        return [dict(BLOCK_M=32)]

    args = ("k", torch.device("cpu"), torch.float16, dict(M=100), dict(wide=False),
            dict(BLOCK_M=16), space, {}, dict(BLOCK_M=100), lambda c: (0, 0),
            lambda c: torch.zeros(1))  # fmt: skip
    first = autotune.launch_config(*args)
    assert listed == [1] and len(autotune._KEYS) == 1
    key = autotune.make_key("k", dict(M=100), dict(wide=False), torch.float16, "cpu",
                            triton.__version__)  # fmt: skip
    assert list(autotune._KEYS.values()) == [key] and key in tuner.memory
    monkeypatch.setattr(autotune, "make_key", None)  # a second build would fail
    assert autotune.launch_config(*args) == first and listed == [1]
    monkeypatch.setattr(autotune, "_MAX_KEYS", 1)  # a full table starts again
    monkeypatch.setattr(autotune, "make_key", lambda *a: key)
    autotune.launch_config(*args[:3], dict(M=101), *args[4:])
    assert len(autotune._KEYS) == 1 and listed == [1]  # the same bucket: decided


def test_host_integer_helpers_match_tritons():
    """cdiv and next_pow2 run on the launch path in plain integers; Triton's own are
    constexpr functions there, several microseconds a call."""
    import triton
    from minift.kernels.launch import cdiv
    from minift.kernels.triton_utils import next_pow2

    for n in [0, 1, 2, 3, 15, 16, 17, 1000, 2**31 - 1, 2**31, 2**31 + 1]:
        assert next_pow2(n) == triton.next_power_of_2(max(1, n))
        for d in (1, 16, 64, 127):
            assert cdiv(n, d) == triton.cdiv(n, d)


def test_paused_blocks_keep_the_fixed_table(monkeypatch):
    """Inside paused() (nested too) a CUDA launch is not tuned; after it, it is again."""
    monkeypatch.setenv("MINIFT_AUTOTUNE", "1")
    monkeypatch.setattr(autotune, "interpreting", lambda: False)
    cuda = torch.device("cuda")
    assert autotune.enabled(cuda)
    with autotune.paused():
        with autotune.paused():
            assert not autotune.enabled(cuda)
        assert not autotune.enabled(cuda)
    assert autotune.enabled(cuda)
    with pytest.raises(RuntimeError), autotune.paused():
        raise RuntimeError("a failed check")
    assert autotune.enabled(cuda)  # an error inside does not leave tuning off


# ------------------------------------------------------------------------ pruning
def lora_space():
    lora_triton = pytest.importorskip("minift.kernels.lora_triton")
    return lora_triton, lora_triton._space(torch.bfloat16)


def lora_fixed():
    return dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3,
                BLOCK_R=16)  # fmt: skip


def lora_bytes(config, capability):
    per_stage, fixed = lora_smem(config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"], 16, 2)
    return smem_bytes(per_stage, fixed, config["num_stages"], capability)


@pytest.mark.parametrize("smem,capability", [(CONSUMER_SMEM, AMPERE), (H100_SMEM, HOPPER)])
def test_pruning_keeps_what_fits_the_device(smem, capability):
    """The LoRA space at 4096 -> 4096 bf16: 256-wide tiles on sm_90's 227 KB, not on
    sm_86's 99 KB; everything kept fits by the model, and the fixed entry stays first."""
    _, space = lora_space()
    smem_of = lambda c: lora_smem(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], c["BLOCK_R"], 2)  # noqa: E731
    dims = dict(BLOCK_M=4096, BLOCK_N=4096, BLOCK_K=4096)
    kept = prune([lora_fixed(), *space], dims, smem_of, smem, capability)
    assert kept[0] == lora_fixed()
    assert all(lora_bytes(c, capability) <= smem for c in kept[1:])
    names = {describe(c) for c in kept}
    dropped = [c for c in space if describe({**lora_fixed(), **c}) not in names]
    assert all(lora_bytes({**c, "BLOCK_R": 16}, capability) > smem for c in dropped)
    wide = [c for c in kept if c["BLOCK_N"] == 256 or c["BLOCK_M"] == 256]
    assert (len(wide) > 0) == (capability == HOPPER)
    assert len({describe(c) for c in kept}) == len(kept)


def test_attention_128_by_128_tiles_fit_hopper_only():
    flash_triton = pytest.importorskip("minift.kernels.flash_triton")
    fixed = dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3, BLOCK_D=128, LAYOUT_BLOCK=16)
    smem_of = lambda c: attention_smem("fwd", c["BLOCK_M"], c["BLOCK_N"], 128, 2)  # noqa: E731
    space = flash_triton._space(torch.bfloat16, "fwd")
    dims = dict(BLOCK_M=4096, BLOCK_N=4096)
    big = lambda kept: [c for c in kept if (c["BLOCK_M"], c["BLOCK_N"]) == (128, 128)]  # noqa: E731
    hopper = prune([fixed, *space], dims, smem_of, H100_SMEM, HOPPER)
    ampere = prune([fixed, *space], dims, smem_of, CONSUMER_SMEM, AMPERE)
    assert {c["num_stages"] for c in big(hopper)} == {2, 3}  # 3 buffers of K, V: 225 KB
    # sm_86 keeps stages - 1 buffers: 2 stages take Q 32 KB + 64 KB, 3 stages 160 KB > 99 KB
    assert {c["num_stages"] for c in big(ampere)} == {2}
    assert len(ampere) < len(hopper)


def test_no_tile_exceeds_the_shape():
    """40 tokens, rank-16 side products: tiles clamp to 64 rows and 16 columns, and the
    clamped duplicates are tried once; a caller's pinned tile holds in every candidate."""
    _, space = lora_space()
    smem_of = lambda c: lora_smem(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], c["BLOCK_R"], 2)  # noqa: E731
    kept = prune([lora_fixed(), *space], dict(BLOCK_M=40, BLOCK_N=16, BLOCK_K=4096), smem_of,
                 H100_SMEM, HOPPER, pinned=dict(GROUP_M=4))  # fmt: skip
    for c in kept[1:]:
        assert c["BLOCK_M"] <= 64 and c["BLOCK_N"] == 16 and c["GROUP_M"] == 4
    assert len({describe(c) for c in kept}) == len(kept) < len(space) + 1


@pytest.mark.parametrize("module,args", [
    ("lora_triton", (torch.float32,)), ("multi_lora_triton", (torch.bfloat16,)),
    ("nf4_triton", (torch.bfloat16,)), ("flash_triton", (torch.bfloat16, "dkdv")),
    ("flash_triton", (torch.float32, "dq")),
])  # fmt: skip
def test_every_space_holds_valid_tiles(module, args):
    mod = pytest.importorskip(f"minift.kernels.{module}")
    from minift.kernels.triton_utils import check_dot_tiles

    space = mod._space(*args)
    assert 4 <= len(space) <= 8  # small: every candidate is compiled on first use
    for config in space:
        check_dot_tiles(**{k: v for k, v in config.items() if k.startswith("BLOCK")})
        assert config["num_warps"] in (4, 8) and 1 <= config["num_stages"] <= 5


# ---------------------------------------------------- the launchers, in the interpreter
@pytest.fixture
def tuning_on(monkeypatch, tmp_path):
    """Tuning switched on for CPU tensors (the interpreter), a fresh tuner with its own cache
    file, and a fake timer under which the largest tiles are fastest (any fixed rule would
    do: what is tested is that the launch follows the tuner's choice). On a GPU the same
    tests run the candidates on CUDA tensors."""
    from minift.kernels.dispatch import interpreting

    if DEVICE == "cpu" and not interpreting():
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    monkeypatch.setenv("MINIFT_KERNELS", "triton")
    monkeypatch.setattr(autotune, "enabled", lambda device: True)
    launched = []

    def spy(name, compiled, config):
        launched.append(dict(config))
        launch.record_launch(name, compiled, config)

    def timer(fn):
        fn()
        last = launched[-1]
        return 1.0 / (last["BLOCK_M"] * 100 + last["BLOCK_N"])

    tuner = Tuner(tmp_path / "autotune.json", timer=timer)
    monkeypatch.setattr(autotune, "_TUNER", tuner)
    return tuner, launched, spy


def test_fused_lora_is_tuned_through_its_launcher(tuning_on, monkeypatch):
    lora_triton = pytest.importorskip("minift.kernels.lora_triton")
    tuner, launched, spy = tuning_on
    monkeypatch.setattr(lora_triton, "record_launch", spy)
    small = [dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=16, GROUP_M=4, num_warps=4, num_stages=1)
             for m, n in ((32, 16), (16, 32), (32, 32), (64, 64))]  # fmt: skip
    monkeypatch.setattr(lora_triton, "_space", lambda dtype: small)
    # the interpreter's fixed table on every device: on a GPU the fixed 128 x 128 tiles would
    # win under this timer and hide whether the candidates were clamped and launched
    fixed = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=4, num_warps=4, num_stages=1)
    monkeypatch.setattr(lora_triton, "_config", lambda dtype: dict(fixed))
    gen = torch.Generator().manual_seed(3)
    x, w, a, b = (
        torch.randn(*s, generator=gen).to(DEVICE) for s in ((37, 45), (29, 45), (5, 45), (29, 5))
    )
    y, xa = lora_triton.fused_lora(x, w.t(), None, a.t(), b.t(), 0.5)
    want = x.double() @ w.double().t() + 0.5 * (x.double() @ a.double().t()) @ b.double().t()
    assert ((y.double() - want).norm() / want.norm()).item() < 1e-5
    decision = tuner.log[-1]
    assert decision["source"] == "tuned" and decision["rejected"] == {}
    # the 64 x 64 candidate is clamped to the shape (37 rows -> 64, 29 columns -> 32)
    assert decision["config"]["BLOCK_M"] == 64 and decision["config"]["BLOCK_N"] == 32
    assert launch.last_launch("fused_lora")["BLOCK_M"] == 64  # the launch used the winner
    # the fixed 16s, unfused (cuBLAS), then the four (none pruned); no TMA: rows of 45 fp32
    # (180 bytes) are not 16-byte aligned
    assert decision["candidates"] == 6
    assert decision["fixed"] == "K16 M16 N16 R16 g4 s1 w4"
    assert decision["key"].startswith(
        "fused_lora [bias=False store_xa=True wide=False layout=rccc] | M=64"
    )  # x row-major; the weights transposed views
    assert list(json.loads(tuner.cache_path().read_text())) == [decision["key"]]
    runs = len(launched)
    lora_triton.fused_lora(x[:33], w.t(), None, a.t(), b.t(), 0.5)  # same bucket: no tuning
    assert len(launched) == runs + 1


def test_compiling_ahead_runs_one_shard_and_decides_nothing(tuning_on, monkeypatch):
    """MINIFT_AUTOTUNE_COMPILE=i/n: a decision runs (so compiles) every n-th candidate after
    the fixed entry, from the i-th, once per key; the launch keeps the fixed table and the
    tuner records nothing, so the process that tunes later still decides (from the cache)."""
    lora_triton = pytest.importorskip("minift.kernels.lora_triton")
    tuner, launched, spy = tuning_on
    monkeypatch.setattr(lora_triton, "record_launch", spy)
    space = [dict(BLOCK_M=m, BLOCK_N=16, BLOCK_K=16, GROUP_M=4, num_warps=4, num_stages=1)
             for m in (32, 64)] + [dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16, GROUP_M=4,
                                        num_warps=4, num_stages=1)]  # fmt: skip
    monkeypatch.setattr(lora_triton, "_space", lambda dtype: space)
    fixed = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=4, num_warps=4, num_stages=1)
    monkeypatch.setattr(lora_triton, "_config", lambda dtype: dict(fixed))
    monkeypatch.setattr(autotune, "_compiled", set())
    gen = torch.Generator().manual_seed(4)
    # rows of 45 fp32 are not 16-byte aligned: no TMA candidates, so the order is known
    x, w, a, b = (torch.randn(*s, generator=gen).to(DEVICE) for s in ((37, 45), (29, 45), (5, 45), (29, 5)))  # fmt: skip
    monkeypatch.setenv(autotune.COMPILE_ENV, "1/2")
    y, _ = lora_triton.fused_lora(x, w.t(), None, a.t(), b.t(), 0.5)
    # candidates after the fixed entry: unfused, 32x16, 64x16 (clamped to 64x32), 16x32;
    # shard 1 of 2 takes the 2nd and 4th, then the launch itself runs the fixed entry
    ran = [(c.get("UNFUSED", 0), c["BLOCK_M"], c["BLOCK_N"]) for c in launched]
    assert ran == [(0, 32, 16), (0, 16, 32), (0, 16, 16)], ran
    assert tuner.log == [] and not tuner.cache_path().exists()
    want = x.double() @ w.double().t() + 0.5 * (x.double() @ a.double().t()) @ b.double().t()
    assert ((y.double() - want).norm() / want.norm()).item() < 1e-5
    lora_triton.fused_lora(x, w.t(), None, a.t(), b.t(), 0.5)  # the same key: compiled already
    assert len(launched) == len(ran) + 1
    monkeypatch.setenv(autotune.COMPILE_ENV, "0/1")
    monkeypatch.setattr(autotune, "_compiled", set())
    launched.clear()
    lora_triton.fused_lora(x, w.t(), None, a.t(), b.t(), 0.5)
    assert len(launched) == 4 + 1  # one shard: every candidate, then the fixed launch


@pytest.mark.parametrize("value", ["2/2", "x", "1/0", "-1/3"])
def test_a_malformed_compile_shard_is_named(monkeypatch, value):
    monkeypatch.setenv(autotune.COMPILE_ENV, value)
    with pytest.raises(ValueError, match=autotune.COMPILE_ENV):
        autotune.compile_shard()


def lora_with_one_candidate(tuning_on, monkeypatch):
    """lora_triton with its launches spied on and a space of one 32 x 32 candidate."""
    lora_triton = pytest.importorskip("minift.kernels.lora_triton")
    tuner, _, spy = tuning_on
    monkeypatch.setattr(lora_triton, "record_launch", spy)
    small = [dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, GROUP_M=4, num_warps=4, num_stages=1)]
    monkeypatch.setattr(lora_triton, "_space", lambda dtype: small)
    return lora_triton, tuner


def test_a_transposed_weight_is_tuned_apart(tuning_on, monkeypatch):
    """The LoRA backward runs the fused kernel on W where the forward reads W^T: same shape
    bucket, other memory order, so its own tuning decision (the key names the layouts)."""
    lora_triton, tuner = lora_with_one_candidate(tuning_on, monkeypatch)
    gen = torch.Generator().manual_seed(6)
    x, w, a, b = (torch.randn(*s, generator=gen).to(DEVICE) for s in ((33, 40), (40, 40), (4, 40), (40, 4)))  # fmt: skip
    lora_triton.fused_lora(x, w.t(), None, a.t(), b.t(), 0.5)  # the forward's views
    lora_triton.fused_lora(x, w, None, b, a, 0.5)  # the backward's dx pass
    keys = [d["key"] for d in tuner.log]
    assert len(keys) == 2 and "layout=rccc" in keys[0] and "layout=rrrr" in keys[1]


def test_the_thin_matmul_times_the_library_route_too(tuning_on, monkeypatch):
    """The backward's matmul offers ``unfused`` (torch.mm) beside its tiles: it is timed, its
    outputs (product, scaled, and the row sums) pass the same check, and when it wins the
    launch returns its outputs."""
    # under this timer the unfused route (it carries the fixed 16s) loses to the 32 x 32 tile
    lora_triton, tuner = lora_with_one_candidate(tuning_on, monkeypatch)
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(45, 37, generator=gen).to(DEVICE), torch.randn(29, 45, generator=gen)
    a, b = a.t(), b.to(DEVICE).t()  # transposed views, as the backward passes them
    c, sums = lora_triton.matmul(a, b, 0.5, row_sums=True)
    torch.testing.assert_close(c.double(), 0.5 * a.double() @ b.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sums.double(), a.double().sum(1), rtol=1e-5, atol=1e-5)
    decision = tuner.log[-1]
    assert decision["rejected"] == {} and set(decision["times_us"]) >= {"unfused"}
    assert decision["candidates"] == 3  # the fixed 16s, the 32s, unfused
    c2, sums2 = lora_triton.matmul(a, b, 0.5, row_sums=True, UNFUSED=1)
    torch.testing.assert_close(c2, c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sums2, sums, rtol=1e-5, atol=1e-5)


def test_the_tma_and_library_routes_are_timed_first(tuning_on, monkeypatch):
    """With operands TMA can describe, the fused LoRA launcher offers its TMA candidates and
    the library route right after the fixed entry (a budget cut short has timed them), each
    checked against the fixed entry's outputs like any tile."""
    from minift.kernels.lora_tma_triton import TMA_SPACE

    lora_triton, tuner = lora_with_one_candidate(tuning_on, monkeypatch)
    gen = torch.Generator().manual_seed(8)
    x, w, a, b = (torch.randn(*s, generator=gen).to(DEVICE) for s in ((37, 36), (20, 36), (3, 36), (20, 3)))  # fmt: skip
    y, _ = lora_triton.fused_lora(x, w.t(), None, a.t(), b.t(), 0.5)
    want = x.double() @ w.double().t() + 0.5 * (x.double() @ a.double().t()) @ b.double().t()
    assert ((y.double() - want).norm() / want.norm()).item() < 1e-5
    decision = tuner.log[-1]
    assert decision["rejected"] == {}
    names = list(decision["times_us"])
    routes = ["tma" if "TMA1" in n else "unfused" if n == "unfused" else "tiles" for n in names]
    n_tma = len(TMA_SPACE)
    assert routes == ["tiles", *["tma"] * n_tma, "unfused", "tiles"], names
    assert {"PERSISTENT0", "PERSISTENT1"} <= {p for n in names for p in n.split()}


def test_attention_passes_are_tuned_separately(tuning_on, monkeypatch):
    flash_triton = pytest.importorskip("minift.kernels.flash_triton")
    from minift.kernels import attention, attention_reference

    tuner, launched, spy = tuning_on
    monkeypatch.setattr(flash_triton, "record_launch", spy)
    small = [dict(BLOCK_M=32, BLOCK_N=16, num_warps=4, num_stages=1),
             dict(BLOCK_M=16, BLOCK_N=32, num_warps=4, num_stages=1)]  # fmt: skip
    monkeypatch.setattr(flash_triton, "_space", lambda dtype, pass_: small)
    q, k, v = (torch.randn(1, 2, t, 16, device=DEVICE, requires_grad=True) for t in (27, 38, 38))
    out = attention(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    kernels = [d["key"].split(" [")[0] for d in tuner.log]
    assert kernels == ["attention fwd", "attention dkdv", "attention dq"]
    assert all(d["source"] == "tuned" and not d["rejected"] for d in tuner.log)
    want = attention_reference(q, k, v)
    assert ((out - want).norm() / want.norm()).item() < 1e-5
    for got, exp in zip(grads, torch.autograd.grad(want, (q, k, v), torch.ones_like(want))):
        assert ((got - exp).norm() / exp.norm()).item() < 1e-4


def test_multi_lora_and_nf4_candidates_all_agree(tuning_on, monkeypatch):
    """The real spaces of the multi-LoRA and NF4 kernels, clamped to small shapes: every
    candidate launches and agrees with the fixed table, and the launch matches the
    reference."""
    multi_lora_triton = pytest.importorskip("minift.kernels.multi_lora_triton")
    from minift.kernels import nf4_linear, nf4_linear_reference, nf4_triton
    from minift.kernels.multi_lora import multi_lora, multi_lora_reference

    tuner, _, spy = tuning_on
    monkeypatch.setattr(multi_lora_triton, "record_launch", spy)
    monkeypatch.setattr(nf4_triton, "record_launch", spy)
    gen = torch.Generator().manual_seed(4)
    n_adapters, r, k, n = 3, 4, 45, 29
    x = torch.randn(37, k, generator=gen).to(DEVICE)
    a = torch.randn(n_adapters, r, k, generator=gen).to(DEVICE)
    b = torch.randn(n_adapters, n, r, generator=gen).to(DEVICE)
    ids = torch.randint(-1, n_adapters, (37,), generator=gen).to(DEVICE)
    scaling = torch.rand(n_adapters, generator=gen).to(DEVICE)
    want = multi_lora_reference(x.double(), a.double(), b.double(), ids, scaling.double())
    assert ((multi_lora(x, a, b, ids, scaling) - want).norm() / want.norm()).item() < 1e-5
    packed = torch.randint(0, 256, ((n * k + 1) // 2,), dtype=torch.uint8, generator=gen)
    scales, code = torch.rand(-(-n * k // 64), generator=gen), torch.linspace(-1, 1, 16)
    packed, scales, code = packed.to(DEVICE), scales.to(DEVICE), code.to(DEVICE)
    want = nf4_linear_reference(x.double(), packed, scales, code, (n, k))
    got = nf4_linear(x, packed, scales, code, (n, k))
    assert ((got - want).norm() / want.norm()).item() < 1e-5
    kernels = [d["key"].split(" [")[0] for d in tuner.log]
    assert kernels == ["sgmv", "nf4_matmul"]
    assert "unfused" in tuner.log[1]["times_us"]  # dequantize-then-matmul is timed beside
    for d in tuner.log:
        assert d["source"] == "tuned" and d["rejected"] == {} and d["candidates"] >= 5, d


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_lora_candidate_agrees_on_the_gpu(monkeypatch, tmp_path):
    """The real space, timer and compiler: no candidate the model keeps fails to launch or
    computes something else, and the winner matches a float32 reference."""
    from minift.kernels import lora_linear_reference
    from minift.kernels.lora_triton import fused_lora

    monkeypatch.setenv("MINIFT_AUTOTUNE", "1")
    tuner = Tuner(tmp_path / "autotune.json")
    monkeypatch.setattr(autotune, "_TUNER", tuner)
    m, k, n, r = 1000, 1024, 768, 16
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w, a = (torch.randn(d, k, device="cuda", dtype=torch.bfloat16) / k**0.5 for d in (n, r))
    b = torch.randn(n, r, device="cuda", dtype=torch.bfloat16)
    y, _ = fused_lora(x, w.t(), None, a.t(), b.t(), 2.0)
    decision = tuner.log[-1]
    print(decision)
    assert decision["source"] == "tuned" and decision["rejected"] == {}
    assert len(decision["times_us"]) == decision["candidates"] >= 4
    want = lora_linear_reference(x.float(), w.float(), None, a.float(), b.float(), 2.0)
    assert ((y.float() - want).norm() / want.norm()).item() < 1e-2


# ------------------------------------------------- compiled for real GPU targets
CANDIDATE_PROBE = r"""
import torch
from minift.kernels import launch
from minift.kernels.autotune import describe, prune
from minift.kernels.flash_bwd_triton import attn_dkdv_kernel, attn_dq_kernel
from minift.kernels.flash_fwd_triton import attn_fwd_kernel
from minift.kernels.flash_triton import _space as attention_space
from minift.kernels.lora_triton import _fused_lora_kernel, _matmul_kernel, _space as lora_space
from minift.kernels.multi_lora_triton import _sgmv_kernel, _space as sgmv_space
from minift.kernels.nf4_triton import _nf4_matmul_kernel, _space as nf4_space

BF16 = torch.bfloat16
ptrs = lambda kind, *names: {n: kind for n in names}
pick = lambda c, *names: {n: c[n] for n in names}
MNK = ("BLOCK_M", "BLOCK_N", "BLOCK_K")


def attention(pass_, kernel):
    types = {**ptrs("*bf16", "q_ptr", "k_ptr", "v_ptr", "o_ptr", "do_ptr", "dk_ptr", "dv_ptr",
                    "dq_ptr"), **ptrs("*fp32", "lse_ptr", "delta_ptr"),
             **ptrs("*i32", "cols_ptr", "counts_ptr", "rows_ptr"), "qk_scale": "fp32",
             "sm_scale": "fp32"}
    return (kernel, attention_space(BF16, pass_),
            lambda c: launch.attention_smem(pass_, c["BLOCK_M"], c["BLOCK_N"], 128, 2), types,
            lambda c: dict(CAUSAL=True, SPARSE=False, PRECISION="tf32", WIDE=False, BLOCK_D=128,
                           LAYOUT_BLOCK=16, **pick(c, "BLOCK_M", "BLOCK_N")))


# kernel: (jit function, space, smem model, argument types, constexprs of a candidate)
KERNELS = {
    "lora": (_fused_lora_kernel, lora_space(BF16),
             lambda c: launch.lora_smem(*pick(c, *MNK).values(), 16, 2),
             {**ptrs("*bf16", "x_ptr", "w_ptr", "bias_ptr", "a_ptr", "b_ptr", "y_ptr", "xa_ptr"),
              "scaling": "fp32"},
             lambda c: dict(stride_xk=1, stride_wk=1, stride_ak=1, stride_yn=1, stride_xar=1,
                            HAS_BIAS=False, STORE_XA=True, PRECISION="tf32", WIDE=False,
                            BLOCK_R=16, **pick(c, *MNK, "GROUP_M"))),
    "matmul": (_matmul_kernel, lora_space(BF16),
               lambda c: launch.matmul_smem(*pick(c, *MNK).values(), 2),
               {**ptrs("*bf16", "a_ptr", "b_ptr", "c_ptr", "sum_ptr"), "alpha": "fp32"},
               lambda c: dict(stride_ak=1, stride_bn=1, stride_cn=1, ROW_SUMS=False,
                              PRECISION="tf32", WIDE=False, **pick(c, *MNK, "GROUP_M"))),
    "fwd": attention("fwd", attn_fwd_kernel),
    "dkdv": attention("dkdv", attn_dkdv_kernel),
    "dq": attention("dq", attn_dq_kernel),
    "sgmv": (_sgmv_kernel, sgmv_space(BF16),
             lambda c: launch.sgmv_smem(*pick(c, *MNK).values(), 16, 2),
             {**ptrs("*bf16", "x_ptr", "a_ptr", "b_ptr", "y_ptr", "u_ptr"), "s_ptr": "*fp32",
              **ptrs("*i32", "order_ptr", "tile_adapter_ptr", "tile_first_ptr", "tile_end_ptr")},
             lambda c: dict(stride_xk=1, stride_ak=1, stride_yn=1, stride_ur=1, F64=False,
                            PRECISION="tf32", WIDE=False, BLOCK_R=16, **pick(c, *MNK))),
    "nf4": (_nf4_matmul_kernel, nf4_space(BF16),
            lambda c: launch.nf4_smem(*pick(c, *MNK).values(), 2),
            {**ptrs("*bf16", "x_ptr", "bias_ptr", "y_ptr"), "packed_ptr": "*u8",
             **ptrs("*fp32", "scales_ptr", "code_ptr")},
            lambda c: dict(stride_xk=1, stride_yn=1, HAS_BIAS=False, F64=False, PRECISION="tf32",
                           **pick(c, *MNK))),
}

out = []
for (capability, smem), names in json.loads(sys.argv[1]):
    capability = tuple(capability)
    for name in names:
        kernel, space, smem_of, types, const = KERNELS[name]
        dummy = {**space[0], "num_stages": 1}  # stands for the fixed entry, never compiled
        kept = prune([dummy, *space], {}, smem_of, smem, capability)[1:]
        bytes_of = lambda c: launch.smem_bytes(*smem_of(c), c["num_stages"], capability)
        c = max(kept, key=bytes_of)  # the candidate closest to the device's limit
        shared = compile_shared(kernel, types, const(c), capability, c["num_warps"],
                                c["num_stages"])
        out.append(dict(kernel=name, capability=capability, limit=smem, config=describe(c),
                        estimate=bytes_of(c), shared=shared))
print(json.dumps(out))
"""


def test_the_largest_kept_candidates_compile_and_fit():
    """For every kernel, the candidate that the model says needs the most shared memory, and
    still keeps, compiles for the device it was kept for, within the model's estimate and
    the device's limit: the fused LoRA kernel on both, the others on one each (the 227 KB of
    sm_90 for those whose candidates all fit there, the 99 KB of sm_86 for the tightest)."""
    from test_kernels_compile import COMPILER, run_probe

    targets = [((HOPPER, H100_SMEM), ["lora", "fwd", "dkdv", "sgmv", "nf4"]),
               ((AMPERE, CONSUMER_SMEM), ["lora", "matmul", "dq"])]  # fmt: skip
    rows = run_probe(COMPILER + CANDIDATE_PROBE, targets)
    assert len(rows) == 8
    for row in rows:
        print(row)
        assert row["shared"] <= row["estimate"] <= row["limit"], row


@pytest.mark.parametrize(
    "value, want",
    [
        (None, "None"),
        ("", "None"),
        ("12", "12.0"),
        ("0", "0.0"),
        ("x", "not a number"),
        ("-1", "0 or more"),
    ],
)
def test_the_budget_variable_is_read_once_at_import(value, want):
    """MINIFT_TUNE_BUDGET_S bounds the process-wide tuner (make gpu-check sets it for each
    benchmark); a value that is not a non-negative number is named at import."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MINIFT_TUNE_BUDGET_S"}
    if value is not None:
        env["MINIFT_TUNE_BUDGET_S"] = value
    code = "from minift.kernels import autotune; print(autotune.tuner().budget_s)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert want in (done.stdout if done.returncode == 0 else done.stderr)
