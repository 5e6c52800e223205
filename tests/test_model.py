"""The GPT against Hugging Face's GPT-2, and its invariants (cache, padding, encoder mode)."""

import json

import pytest
import torch

from minift.model import GPT, GPTConfig

VARIANTS = [
    dict(),
    dict(norm="rmsnorm", pos_emb="rope", mlp="swiglu", bias=False),
    dict(pos_emb="rope", tie_weights=False, n_inner=40),
]


def tiny(**kw) -> GPT:
    cfg = dict(vocab_size=97, block_size=48, n_layer=2, n_head=3, n_embd=24)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    cfg = GPT2Config(
        vocab_size=103,
        n_positions=41,
        n_embd=30,
        n_layer=3,
        n_head=5,
        n_inner=52,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(cfg).eval()
    # Random, non-trivial biases and norms, so a dropped or untransposed tensor shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path_factory.mktemp("hf_gpt2")
    model.save_pretrained(path)
    return path, model


def test_logits_match_transformers(hf_dir):
    path, hf = hf_dir
    model = GPT.from_pretrained(path).eval()
    idx = torch.randint(0, 103, (3, 41))
    with torch.no_grad():
        ref = hf(idx).logits
        out = model(idx).logits
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert model.config.n_inner == 52 and model.config.block_size == 41


def test_greedy_generation_matches_transformers(hf_dir):
    path, hf = hf_dir
    model = GPT.from_pretrained(path).eval()
    idx = torch.randint(1, 103, (2, 7))
    ref = hf.generate(idx, max_new_tokens=25, do_sample=False, pad_token_id=0, eos_token_id=None)
    out = model.generate(idx, 25, temperature=0)
    assert torch.equal(out, ref)


def test_from_pretrained_accepts_unprefixed_gpt2model_keys(hf_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    path, hf = hf_dir
    state = load_file(str(path / "model.safetensors"))
    stripped = {k.removeprefix("transformer."): v for k, v in state.items()}
    save_file(stripped, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    a = GPT.from_pretrained(path).eval()
    b = GPT.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 103, (1, 9))
    torch.testing.assert_close(a(idx).logits, b(idx).logits, rtol=0, atol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_kv_cache_generation_equals_uncached(variant):
    torch.manual_seed(3)
    model = tiny(**variant)
    idx = torch.randint(0, 97, (3, 5))
    greedy = model.generate(idx, 30, temperature=0)
    assert torch.equal(greedy, model.generate(idx, 30, temperature=0, use_cache=False))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = model.generate(idx, 30, temperature=0.9, top_k=20, top_p=0.9, generator=g1)
    b = model.generate(idx, 30, temperature=0.9, top_k=20, top_p=0.9, generator=g2, use_cache=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_chunks_equal_one_forward(variant):
    model = tiny(**variant)
    idx = torch.randint(0, 97, (2, 20))
    full = model(idx).logits
    cache = model.new_cache(2)
    first = model(idx[:, :13], cache=cache).logits
    second = model(idx[:, 13:], cache=cache).logits  # 7 queries over 20 keys, end-aligned
    torch.testing.assert_close(torch.cat([first, second], 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_left_padding_does_not_change_a_sequence(variant):
    model = tiny(**variant)
    seq = torch.randint(0, 97, (1, 11))
    alone = model(seq).logits
    batch = torch.cat([torch.randint(0, 97, (1, 4)), seq], dim=1)
    mask = torch.cat([torch.zeros(1, 4), torch.ones(1, 11)], dim=1).long()
    padded = model(batch, attention_mask=mask).logits[:, 4:]
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)


def test_left_padded_batch_generation_equals_each_prompt_alone():
    model = tiny(pos_emb="rope")
    a, b = torch.randint(0, 97, (1, 9)), torch.randint(0, 97, (1, 4))
    batch = torch.cat([a, torch.cat([torch.zeros(1, 5, dtype=torch.long), b], 1)])
    mask = torch.ones_like(batch)
    mask[1, :5] = 0
    out = model.generate(batch, 12, temperature=0, attention_mask=mask)
    assert torch.equal(out[0:1], model.generate(a, 12, temperature=0))
    assert torch.equal(out[1:2, 5:], model.generate(b, 12, temperature=0))


def test_generation_stops_at_eos_and_pads_after():
    model = tiny()
    idx = torch.randint(0, 97, (4, 3))
    free = model.generate(idx, 20, temperature=0)
    eos = int(free[0, 6])  # a token that the first row greedily emits
    out = model.generate(idx, 20, temperature=0, eos_token_id=eos, pad_token_id=96)
    row = out[0, 3:].tolist()
    first = row.index(eos)
    assert all(t == 96 for t in row[first + 1 :])
    assert out.size(1) <= free.size(1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_explicit_attention_path_equals_sdpa(variant):
    model = tiny(**variant)
    idx = torch.randint(0, 97, (2, 17))
    mask = torch.ones(2, 17, dtype=torch.long)
    mask[1, :6] = 0
    fast = model(idx, attention_mask=mask)
    slow = model(idx, attention_mask=mask, output_attentions=True)
    torch.testing.assert_close(fast.logits, slow.logits, rtol=1e-5, atol=1e-5)
    probs = slow.attentions[0]
    assert probs.shape == (2, 3, 17, 17)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, 17))
    assert probs[0].triu(diagonal=1).abs().max() == 0  # causal: nothing above the diagonal
    assert probs[1, :, 8, :6].abs().max() == 0  # padded keys get no weight


def test_encoder_mode_attends_both_ways():
    torch.manual_seed(0)
    enc, dec = tiny(causal=False), tiny()
    dec.load_state_dict(enc.state_dict())
    idx = torch.randint(0, 97, (1, 12))
    changed = idx.clone()
    changed[0, -1] = (idx[0, -1] + 1) % 97
    enc_delta = (enc(idx).logits[0, 0] - enc(changed).logits[0, 0]).abs().max()
    dec_delta = (dec(idx).logits[0, 0] - dec(changed).logits[0, 0]).abs().max()
    assert enc_delta > 1e-4  # a later token changes an earlier position
    assert dec_delta == 0  # ... but never in the causal model
    probs = enc(idx, output_attentions=True).attentions[0]
    assert probs[0, :, 0, -1].min() > 0


def test_loss_ignores_masked_targets():
    model = tiny()
    idx = torch.randint(0, 97, (2, 10))
    targets = torch.randint(0, 97, (2, 10))
    part = targets.clone()
    part[:, :5] = -100
    logits = model(idx).logits
    expected = torch.nn.functional.cross_entropy(
        logits[:, 5:].reshape(-1, 97), targets[:, 5:].reshape(-1)
    )
    torch.testing.assert_close(model(idx, part).loss, expected)


def test_hidden_states_and_param_count():
    model = tiny()
    out = model(torch.randint(0, 97, (1, 8)), output_hidden_states=True)
    assert len(out.hidden_states) == 3
    counted = sum(p.numel() for p in model.parameters())  # parameters() yields tied ones once
    assert model.num_params() == counted
    assert model.num_params(non_embedding=True) == counted - 97 * 24 - 48 * 24
    # training FLOPs are three forwards, and 6N dominates for short sequences
    n = model.num_params(non_embedding=True) + 97 * 24
    assert model.flops_per_token(1) == pytest.approx(6 * n + 3 * 4 * 2 * 24, rel=1e-9)


def test_sequence_longer_than_block_size_is_a_clear_error():
    model = tiny()
    with pytest.raises(ValueError, match="sequence of 49 tokens exceeds block_size 48"):
        model(torch.zeros(1, 49, dtype=torch.long))


def test_unknown_config_key_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown GPTConfig key\(s\) \['n_layers'\].*n_layer"):
        GPTConfig.from_dict({"n_layers": 3})
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig(n_embd=10, n_head=3)


def test_save_load_round_trip(tmp_path):
    model = tiny(norm="rmsnorm")
    model.save(tmp_path / "m")
    again = GPT.load(tmp_path / "m").eval()
    idx = torch.randint(0, 97, (2, 9))
    torch.testing.assert_close(again(idx).logits, model(idx).logits, rtol=0, atol=0)


def test_checkpoint_shape_mismatch_names_the_tensor(tmp_path):
    tiny().save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["n_embd"] = 30
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        ValueError,
        match=r"transformer.wte.weight' has shape \(97, 24\), the config needs \(97, 30\)",
    ):
        GPT.load(tmp_path / "m")


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    tiny().save(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        GPT.load(tmp_path / "m")


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    model = tiny()
    model.save(tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    import minift.model.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError):
        tiny(n_layer=1).save(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.endswith(".tmp")]


def test_model_attention_through_the_triton_kernel_matches_sdpa(monkeypatch):
    """MINIFT_KERNELS=triton routes the model's attention through minift.kernels.attention
    (the interpreter on CPU, the real kernel on CUDA): same logits, same gradients."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = tiny(n_embd=48, n_head=3).to(device)  # head_dim 16, the kernel's smallest
    idx = torch.randint(0, 97, (2, 13), device=device)
    monkeypatch.setenv("MINIFT_KERNELS", "reference")  # SDPA, also on CUDA
    ref = model(idx, torch.roll(idx, -1, 1))
    ref.loss.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    calls = []
    import minift.kernels as K

    real = K.attention
    monkeypatch.setattr(K, "attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setenv("MINIFT_KERNELS", "triton")
    out = model(idx, torch.roll(idx, -1, 1))
    out.loss.backward()
    assert len(calls) == 2  # one per layer
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-5)
    for p, g in zip(model.parameters(), ref_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-3, atol=1e-5)


def test_mlm_masking_follows_bert():
    from minift.model.mlm import mask_tokens

    g = torch.Generator().manual_seed(0)
    idx = torch.randint(5, 97, (64, 64), generator=g)
    inputs, targets = mask_tokens(
        idx, mask_id=1, vocab_size=97, prob=0.15, generator=g, special_ids=(7,)
    )
    chosen = targets != -100
    assert abs(chosen.float().mean().item() - 0.15) < 0.02
    assert torch.equal(targets[chosen], idx[chosen])  # targets are the original tokens
    assert torch.equal(inputs[~chosen], idx[~chosen])  # unchosen positions are untouched
    assert not chosen[idx == 7].any()  # special tokens are never chosen
    as_mask = (inputs[chosen] == 1).float().mean().item()
    kept = (inputs[chosen] == idx[chosen]).float().mean().item()
    assert abs(as_mask - 0.8) < 0.04 and 0.07 < kept < 0.15  # 10% kept (+ random hits)
    with pytest.raises(ValueError, match="mask probability"):
        mask_tokens(idx, 1, 97, prob=0.0)


# ------------------------------------------------------------------ config forms
# A config.json as minift wrote it before the nested sub-configs (every field flat).
OLD_FLAT = dict(
    vocab_size=61, block_size=64, n_layer=2, n_head=2, n_embd=16, n_inner=None, dropout=0.0,
    bias=True, norm="layernorm", norm_eps=1e-5, pos_emb="learned", rope_theta=10000.0,
    mlp="gelu", tie_weights=True, causal=True, attn_pattern="bigbird", attn_impl="efficient",
    attn_block_size=8, attn_window=2, attn_dilation=1, attn_stride=4, attn_summary=1,
    attn_global=1, attn_random=1, attn_seed=3, moe_experts=4, moe_top_k=2, moe_every=2,
    moe_capacity_factor=1.5, moe_aux_weight=0.02, moe_z_weight=0.0, moe_norm_topk=True,
)  # fmt: skip


def test_old_flat_config_files_load_into_the_nested_config(tmp_path):
    from minift.model import MoEConfig, SparseConfig

    config = GPTConfig.from_dict(OLD_FLAT)
    assert config.sparse == SparseConfig(
        "bigbird", "efficient", 8, window=2, n_global=1, n_random=1, seed=3
    )
    assert config.moe == MoEConfig(4, 2, 2, 1.5, 0.02, 0.0, True)
    # A saved model with the old config.json loads and computes what it computed.
    torch.manual_seed(0)
    model = GPT(config).eval()
    model.save(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(OLD_FLAT))
    idx = torch.randint(0, 61, (2, 30))
    torch.testing.assert_close(GPT.load(tmp_path)(idx).logits, model(idx).logits, rtol=0, atol=0)


def test_nested_config_round_trips_through_json():
    from minift.model import MoEConfig, SparseConfig

    config = GPTConfig(
        vocab_size=61, block_size=64, n_layer=2, n_head=2, n_embd=16,
        sparse=SparseConfig(pattern="sliding_window", window=4, block_size=16),
        moe=MoEConfig(experts=4, top_k=1, capacity_factor=2.0),
    )  # fmt: skip
    text = config.to_json()
    assert '"sparse": {' in text and "attn_" not in text and "moe_" not in text
    again = GPTConfig.from_json(text)
    assert again == config and again.moe.norm_topk is None and not again.moe.renormalize
    with pytest.raises(ValueError, match=r"unknown sparse option\(s\) \['widow'\]"):
        GPTConfig.from_dict({"sparse": {"pattern": "sliding_window", "widow": 2}})
    with pytest.raises(ValueError, match="mixes flat keys"):
        GPTConfig.from_dict({"attn_window": 2, "sparse": {}})


def test_attention_chooses_one_path_per_call(monkeypatch):
    """The six paths: dense (flash kernel, SDPA, explicit with probabilities), sparse
    (masked reference, block-sparse kernel, linear-memory gather)."""
    from minift.model import SparseConfig
    from minift.model.attention import AttentionInputs

    def path(sparse=None, need_weights=False, padded=False, dropout=0.0, **kw):
        cfg = dict(vocab_size=11, block_size=64, n_layer=1, n_head=1, n_embd=16)
        attn = GPT(GPTConfig(**cfg, sparse=sparse or SparseConfig())).transformer.h[0].attn
        q = torch.zeros(1, 1, 32, 16, device=device)  # CUDA where there is one, as Triton needs
        pad = torch.ones(1, 32, device=device) if padded else None
        inputs = AttentionInputs(torch.arange(32)[None], None, True, key_padding=pad)
        return attn.choose_path(q, q, q, inputs, 0, dropout, need_weights)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    window = SparseConfig("sliding_window", block_size=16)
    monkeypatch.setenv("MINIFT_KERNELS", "reference")
    assert (path(), path(need_weights=True)) == ("sdpa", "explicit")
    assert path(window) == "sparse_gather"
    assert path(SparseConfig("sliding_window", "masked", 16)) == "sparse_masked"
    assert path(window, need_weights=True) == "sparse_masked"
    pytest.importorskip("triton")
    from minift.kernels import dispatch

    if not (torch.cuda.is_available() or dispatch.interpreting()):
        pytest.skip("the Triton paths need CUDA or TRITON_INTERPRET=1")
    monkeypatch.setenv("MINIFT_KERNELS", "triton")
    assert (path(), path(dropout=0.1)) == ("flash", "sdpa")
    assert (path(window), path(window, padded=True)) == ("block_sparse", "sparse_gather")


def test_a_float64_model_computes_its_loss_in_float64():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=8)).double()
    idx = torch.randint(0, 50, (2, 8))
    out = model(idx, idx)
    assert out.loss.dtype == torch.float64
    ref = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 50), idx.reshape(-1))
    assert out.loss.item() == ref.item()
