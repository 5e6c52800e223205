"""Sparse attention in the model: patterns against their definitions, the linear-memory
path against the masked reference (forward and backward, float64), and the interplay with
padding, packing, the KV cache, prefixes and a pretrained dense model."""

import copy
import dataclasses

import pytest
import torch
from minift.kernels.layouts import make_layout

from minift.longctx.context import extend_context, set_attention_pattern
from minift.model import GPT, GPTConfig, SparseConfig
from minift.model.sparse import SparsePattern, masked_sparse_attention, sparse_mask
from minift.model.sparse_efficient import efficient_sparse_attention

PATTERNS = {
    "sliding_window": {"window": 2},
    "dilated": {"window": 2, "dilation": 2},
    "strided": {"stride": 2},
    "fixed": {"stride": 3, "summary": 1},
    "global": {"n_global": 1},
    "longformer": {"window": 2, "n_global": 1},
    "bigbird": {"window": 2, "n_global": 1, "n_random": 2},
}


def config_for(name: str, causal: bool = True, **kw) -> GPTConfig:
    """kw: SparseConfig options (impl=..., block_size=...) over the pattern's."""
    pattern = {"dilated": "sliding_window", "longformer": "sliding_window"}.get(name, name)
    sparse = SparseConfig(pattern=pattern, **{"block_size": 4, **PATTERNS[name], **kw})
    base = dict(vocab_size=61, block_size=96, n_layer=2, n_head=2, n_embd=16, causal=causal)
    return GPTConfig(**base, sparse=sparse)


def rows(*lines: str) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in line] for line in lines])


def token_mask(config: GPTConfig, T: int) -> torch.Tensor:
    layout = SparsePattern(config).layout(T)
    return sparse_mask(layout, config.sparse.block_size, T, T, config.causal)[0]


# --------------------------------------------------------------------- definitions
HAND = {
    # 8 tokens in 4 blocks of 2; row t lists the keys query t may see.
    ("sliding_window", True, (("window", 2),)): rows(
        "10000000", "11000000", "11100000", "11110000",
        "00111000", "00111100", "00001110", "00001111",
    ),  # own block and the one before, causal inside the diagonal block
    ("sliding_window", True, (("window", 2), ("dilation", 2))): rows(
        "10000000", "11000000", "00100000", "00110000",
        "11001000", "11001100", "00110010", "00110011",
    ),  # blocks i and i - 2 (Longformer's dilation)
    ("sliding_window", False, (("window", 2),)): rows(
        "11110000", "11110000", "11111100", "11111100",
        "00111111", "00111111", "00001111", "00001111",
    ),  # one block on each side
    ("strided", True, (("stride", 2),)): rows(
        "10000000", "11000000", "11100000", "11110000",
        "11111000", "11111100", "00111110", "00111111",
    ),  # |i - j| < 2 blocks, or i - j even
    ("fixed", True, (("stride", 2), ("summary", 1))): rows(
        "10000000", "11000000", "11100000", "11110000",
        "00111000", "00111100", "00111110", "00111111",
    ),  # own chunk of 2 blocks, plus block 1 (the summary of chunk 0) and 3
    ("global", True, (("n_global", 1),)): rows(
        "10000000", "11000000", "11000000", "11000000",
        "11000000", "11000000", "11000000", "11000000",
    ),  # everyone sees block 0; block 0 sees only itself (causal)
    ("global", False, (("n_global", 1),)): rows(
        "11111111", "11111111", "11000000", "11000000",
        "11000000", "11000000", "11000000", "11000000",
    ),  # block 0 sees and is seen by all
}  # fmt: skip


@pytest.mark.parametrize("key", list(HAND), ids=lambda k: f"{k[0]}-{'causal' if k[1] else 'bidir'}")
def test_pattern_masks_match_their_definition(key):
    pattern, causal, opts = key
    config = GPTConfig(
        vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8, causal=causal,
        sparse=SparseConfig(pattern=pattern, block_size=2, **dict(opts)),
    )  # fmt: skip
    assert torch.equal(token_mask(config, 8)[0], HAND[key])


def test_bigbird_is_window_plus_global_plus_random_blocks_per_head():
    config = GPTConfig(
        vocab_size=11, block_size=64, n_layer=1, n_head=2, n_embd=8,
        sparse=SparseConfig("bigbird", block_size=4, window=2, n_global=1, n_random=2, seed=3),
    )  # fmt: skip
    layout = SparsePattern(config).layout(64)  # 16 blocks
    assert layout.shape == (2, 16, 16)
    i = torch.arange(16)
    d = i[:, None] - i[None, :]
    base = (d == 0) | (d == 1) | (i[None, :] == 0)
    base &= i[:, None] >= i[None, :]
    for h in range(2):
        extra = layout[h] & ~base
        assert torch.equal(layout[h] & base, base)  # the window and the global block are all there
        assert not (extra & (i[None, :] > i[:, None])).any()  # random blocks are causal too
        available = (~base & (i[:, None] >= i[None, :])).sum(1)
        assert torch.equal(extra.sum(1), available.clamp(max=2))  # 2 each, where 2 remain
    assert not torch.equal(layout[0], layout[1])  # drawn per head
    # Built by the kernels' layout builder, not a second copy of it:
    ref = make_layout(
        "bigbird", 64, 4, window=2, n_global=1, n_random=2, seed=3, causal=True, n_heads=2
    )
    assert torch.equal(layout, ref)


def test_a_window_covering_the_sequence_is_dense_causal_attention():
    dense = GPT(GPTConfig(vocab_size=61, block_size=64, n_layer=2, n_head=2, n_embd=16)).eval()
    idx = torch.randint(0, 61, (2, 45))
    for impl in ("masked", "efficient"):
        sparse = copy.deepcopy(dense)
        set_attention_pattern(sparse, "sliding_window", window=8, block_size=8, impl=impl)
        torch.testing.assert_close(sparse(idx).logits, dense(idx).logits, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------- efficient == masked
def check_efficient_matches_reference(
    config, Tq, Tk, P=0, padding=None, segments=None, budget=256, B=2
):
    pattern = SparsePattern(config)
    H, D = config.n_head, 8
    q = torch.randn(B, H, Tq, D, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, H, P + Tk, D, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, H, P + Tk, D, dtype=torch.float64, requires_grad=True)
    layout = pattern.layout(Tk)
    bs = config.sparse.block_size
    mask = sparse_mask(layout, bs, Tq, Tk, config.causal, padding, segments, P)
    ref, _ = masked_sparse_attention(q, k, v, mask)
    out = efficient_sparse_attention(
        q, k, v, layout, bs, config.causal, P, padding, segments, budget=budget
    )
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)
    grad = torch.randn_like(ref)
    for a, b in zip(
        torch.autograd.grad((ref * grad).sum(), (q, k, v)),
        torch.autograd.grad((out * grad).sum(), (q, k, v)),
    ):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("name", list(PATTERNS))
def test_efficient_path_equals_masked_reference(name, causal):
    config = config_for(name, causal=causal)
    padding = torch.ones(2, 37, dtype=torch.long)
    padding[1, 29:] = 0  # right padding
    segments = torch.tensor([0] * 11 + [1] * 17 + [2] * 9).expand(2, 37)
    check_efficient_matches_reference(config, 37, 37)  # 37 tokens: the last block is partial
    check_efficient_matches_reference(config, 37, 37, padding=padding, segments=segments)
    check_efficient_matches_reference(config, 37, 37, P=3)  # trained prefixes
    check_efficient_matches_reference(
        config, 37, 37, budget=3
    )  # many small chunks (global rows alone in one)
    if causal:  # KV cache: the queries are the last of the keys
        check_efficient_matches_reference(
            config, 6, 43, padding=torch.ones(2, 43, dtype=torch.long)
        )
        check_efficient_matches_reference(config, 1, 38, P=2)


def test_efficient_path_keeps_memory_linear_by_gathering_only_listed_blocks(monkeypatch):
    """No (Tq, Tk) score matrix: every matmul of the path multiplies a query block by at
    most (window + global) key blocks here."""
    config = config_for("longformer")
    layout = SparsePattern(config).layout(96)
    q, k, v = (torch.randn(1, 2, 96, 8) for _ in range(3))
    widths = []
    real_matmul = torch.Tensor.__matmul__

    def spy(a, b):
        widths.append(b.shape[-1] if b.shape[-2] == a.shape[-1] else None)
        return real_matmul(a, b)

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    efficient_sparse_attention(q, k, v, layout, 4, True, budget=8)
    monkeypatch.undo()
    score_widths = [w for w in widths if w is not None and w != 8]
    # Global block 0 sees only itself (causal); the others see 3 blocks of 4 keys.
    assert score_widths and max(score_widths) <= 3 * 4


# ----------------------------------------------------------------- through the model
@pytest.mark.parametrize("impl", ["masked", "efficient"])
def test_kv_cache_generation_equals_uncached_with_a_pattern(impl):
    model = GPT(config_for("bigbird", impl=impl)).eval()
    idx = torch.randint(0, 61, (2, 13))
    cached = model.generate(idx, 40, temperature=0, use_cache=True)
    plain = model.generate(idx, 40, temperature=0, use_cache=False)
    assert torch.equal(cached, plain)


@pytest.mark.parametrize("name", ["longformer", "bigbird", "fixed"])
def test_model_paths_agree_and_right_padding_leaves_real_tokens_alone(name):
    efficient = GPT(config_for(name)).eval()
    masked = copy.deepcopy(efficient)
    set_attention_pattern(
        masked, efficient.config.sparse.pattern, impl="masked", **PATTERNS[name], block_size=4,
    )  # fmt: skip
    idx = torch.randint(0, 61, (2, 50))
    mask = torch.ones(2, 50, dtype=torch.long)
    mask[1, 31:] = 0
    a = efficient(idx, attention_mask=mask).logits
    torch.testing.assert_close(a, masked(idx, attention_mask=mask).logits, atol=1e-5, rtol=1e-5)
    alone = efficient(idx[1:, :31]).logits
    torch.testing.assert_close(a[1, :31], alone[0], atol=1e-5, rtol=1e-5)
    # The attention probabilities (explicit path) are zero outside the pattern.
    probs = efficient(idx, output_attentions=True).attentions[0]
    allowed = token_mask(efficient.config, 50)
    assert probs.masked_select(~allowed.expand_as(probs)).abs().max() == 0


def test_left_padding_and_dense_masks_are_refused_with_a_clear_error():
    model = GPT(config_for("longformer")).eval()
    idx = torch.randint(0, 61, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[0, :3] = 0
    with pytest.raises(ValueError, match="right padding"):
        model(idx, attention_mask=mask)
    from minift.model.attention import AttentionInputs

    block = model.transformer.h[0]
    x = torch.randn(1, 5, 16)
    inputs = AttentionInputs(
        positions=torch.arange(5)[None], mask=torch.ones(1, 1, 5, 5, dtype=torch.bool),
        causal_no_mask=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match="builds its own mask"):
        block.attn(x, inputs)


def test_packed_segments_and_prefix_tuning_with_a_pattern():
    from minift.peft.prefix import PrefixConfig, apply_prefix_tuning

    model = GPT(config_for("bigbird")).eval()
    masked = copy.deepcopy(model)
    set_attention_pattern(
        masked, "bigbird", impl="masked", window=2, block_size=4, n_random=2, n_global=1
    )
    idx = torch.randint(0, 61, (2, 30))
    seg = torch.tensor([0] * 12 + [1] * 18).expand(2, 30)
    torch.testing.assert_close(
        model(idx, segment_ids=seg).logits,
        masked(idx, segment_ids=seg).logits,
        atol=1e-5,
        rtol=1e-5,
    )
    # The second packed example equals itself alone only where the layout allows it; here
    # check the prefix instead: both paths see the same trained prefix keys.
    a = apply_prefix_tuning(model, PrefixConfig(num_virtual_tokens=3, trainable_extra=[]))
    b = apply_prefix_tuning(masked, PrefixConfig(num_virtual_tokens=3, trainable_extra=[]))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(idx).logits, b(idx).logits, atol=1e-5, rtol=1e-5)


def test_model_dispatches_to_the_block_sparse_kernel(monkeypatch):
    """MINIFT_KERNELS=triton sends the efficient path to the Triton kernel (through the
    interpreter on CPU); it must match the PyTorch path."""
    pytest.importorskip("triton")
    from minift.kernels import dispatch

    if not (torch.cuda.is_available() or dispatch.interpreting()):
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    config = dataclasses.replace(config_for("longformer", block_size=16), n_embd=32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = GPT(config).to(device).eval()
    idx = torch.randint(0, 61, (1, 40), device=device)
    monkeypatch.setenv("MINIFT_KERNELS", "reference")  # the PyTorch path, also on CUDA
    expected = model(idx).logits
    import minift.kernels as kernels

    calls = []
    real = kernels.block_sparse_attention
    monkeypatch.setattr(
        kernels, "block_sparse_attention", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    monkeypatch.setenv("MINIFT_KERNELS", "triton")
    got = model(idx).logits
    assert len(calls) == config.n_layer
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


# -------------------------------------------------------- a pretrained dense model
def test_switching_a_pattern_on_a_dense_model_changes_no_parameter(tmp_path):
    dense = GPT(GPTConfig(vocab_size=61, block_size=64, n_layer=2, n_head=2, n_embd=16)).eval()
    sparse = set_attention_pattern(copy.deepcopy(dense), "strided", stride=2, block_size=8)
    assert list(sparse.state_dict()) == list(dense.state_dict())
    idx = torch.randint(0, 61, (1, 64))
    assert not torch.allclose(sparse(idx).logits, dense(idx).logits)  # it sees less
    # The first two blocks see everything before them under this pattern: unchanged.
    torch.testing.assert_close(sparse(idx).logits[:, :24], dense(idx).logits[:, :24])
    sparse.save(tmp_path)
    loaded = GPT.load(tmp_path).eval()
    assert loaded.config.sparse.pattern == "strided"
    torch.testing.assert_close(loaded(idx).logits, sparse(idx).logits)
    set_attention_pattern(sparse, "dense")
    torch.testing.assert_close(sparse(idx).logits, dense(idx).logits)


def test_extend_context_tiles_positions_and_keeps_short_inputs_exact():
    dense = GPT(GPTConfig(vocab_size=61, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    long = extend_context(
        set_attention_pattern(copy.deepcopy(dense), "sliding_window", window=2, block_size=8), 96
    )
    wpe = long.transformer.wpe.weight
    assert wpe.shape[0] == 96 and torch.equal(wpe[40], dense.transformer.wpe.weight[8])
    short = torch.randint(0, 61, (1, 16))  # within one window: exactly the dense model
    torch.testing.assert_close(long(short).logits, dense(short).logits)
    assert long(torch.randint(0, 61, (2, 90))).logits.shape == (2, 90, 61)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kw, match",
    [
        ({"pattern": "longnet"}, "unknown sparse.pattern 'longnet'"),
        ({"pattern": "sliding_window", "window": 0}, "sparse.window must be at least 1"),
        ({"pattern": "strided", "block_size": 48}, "does not divide block_size 128"),
        ({"pattern": "strided", "n_random": 1}, "sparse.n_random applies to bigbird only"),
        ({"pattern": "global"}, "needs sparse.n_global >= 1"),
        ({"pattern": "fixed", "stride": 2, "summary": 3}, "sparse.summary"),
        ({"pattern": "bigbird", "impl": "fast"}, "sparse.impl must be"),
    ],
)
def test_bad_pattern_configs_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(vocab_size=11, block_size=128, n_layer=1, n_head=1, n_embd=8, sparse=kw)


def test_bad_switch_leaves_the_model_untouched():
    model = GPT(GPTConfig(vocab_size=61, block_size=64, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="unknown attention option"):
        set_attention_pattern(model, "sliding_window", widow=2)
    with pytest.raises(ValueError, match="does not divide"):
        set_attention_pattern(model, "sliding_window", block_size=48)
    assert model.config.sparse.pattern == "dense" and model.transformer.h[0].attn.pattern is None
    with pytest.raises(ValueError, match="only grows"):
        extend_context(model, 32)
