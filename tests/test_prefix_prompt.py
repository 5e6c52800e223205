"""Prefix tuning against attention written out by hand, prompt tuning against the model
run on [prompt ; token embeddings]; padding, KV-cache generation, baking the
reparameterisation, initialisation from text, classification, save/load, learning,
bad input."""

import copy
import math

import pytest
import torch
from test_adapters import chains, randomise, tiny, toy_base, toy_finetune

from minift.model.gpt import IGNORE_INDEX
from minift.model.heads import SequenceClassifier
from minift.peft import disable_adapters, load_adapter, save_adapter, set_adapter
from minift.peft.io import WEIGHTS
from minift.peft.prefix import PrefixConfig, apply_prefix_tuning, drop_reparameterization
from minift.peft.prompt import PromptConfig, apply_prompt_tuning


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def heads(t, H):
    B, T, C = t.shape
    return t.view(B, T, H, C // H).transpose(1, 2)


def reference_block(base, idx, prefix, mask=None):
    """One GPT-2 block with P prefix keys/values in front, every line written out."""
    B, T = idx.shape
    H, C = base.config.n_head, base.config.n_embd
    positions = torch.arange(T).expand(B, T) if mask is None else (mask.cumsum(1) - 1).clamp(min=0)
    x = base.transformer.wte(idx) + base.transformer.wpe(positions)
    blk = base.transformer.h[0]
    q, k, v = blk.attn.c_attn(blk.ln_1(x)).split(C, dim=2)
    q, k, v = heads(q, H), heads(k, H), heads(v, H)
    pk, pv = (heads(prefix[i][None].expand(B, -1, -1), H) for i in (0, 1))  # (B, H, P, D)
    K, V = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
    scores = q @ K.transpose(-1, -2) / math.sqrt(C // H)
    P = pk.size(2)
    allowed = torch.zeros(B, T, P + T, dtype=torch.bool)
    for b in range(B):
        for i in range(T):
            allowed[b, i, :P] = True  # every query sees every prefix position
            for j in range(i + 1):  # causal, padding hidden, a query always sees itself
                allowed[b, i, P + j] = j == i or mask is None or bool(mask[b, j])
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    y = (scores.softmax(-1) @ V).transpose(1, 2).reshape(B, T, C)
    x = x + blk.attn.c_proj(y)
    return x + blk.mlp(blk.ln_2(x))


@pytest.mark.parametrize("padding", [None, "right", "left"])
def test_prefix_equals_attention_over_concatenated_keys_and_values(padding):
    base = tiny(n_layer=1)
    model = apply_prefix_tuning(copy.deepcopy(base), PrefixConfig(num_virtual_tokens=3))
    prefix = model.prefix_tuning["default"].prefix
    assert prefix.shape == (1, 2, 3, 24)
    idx = torch.randint(0, 71, (3, 8))
    mask = None if padding is None else torch.ones(3, 8, dtype=torch.long)
    if padding == "right":
        mask[1, 5:], mask[2, 3:] = 0, 0
    elif padding == "left":
        mask[1, :3], mask[2, :5] = 0, 0
    out = model(idx, attention_mask=mask, output_hidden_states=True).hidden_states[1]
    expected = reference_block(base, idx, prefix[0].detach(), mask)
    real = torch.ones(3, 8, dtype=torch.bool) if mask is None else mask.bool()
    torch.testing.assert_close(out[real], expected[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_cached_generation_equals_uncached(method):
    torch.manual_seed(3)
    model = tiny(n_layer=2)
    if method == "prefix":
        apply_prefix_tuning(model, PrefixConfig(num_virtual_tokens=4))
    else:
        apply_prompt_tuning(model, PromptConfig(num_virtual_tokens=4))
        randomise(model, std=0.5)
    idx = torch.randint(0, 71, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1, :2] = 0  # left padding, as generation expects
    for m in (None, mask):
        kw = dict(temperature=0, attention_mask=m)
        cached = model.generate(idx, 10, **kw)
        assert torch.equal(cached, model.generate(idx, 10, use_cache=False, **kw))
    with disable_adapters(model):
        assert not torch.equal(model.generate(idx, 10, temperature=0), cached)


def test_disabled_prefix_and_prompt_give_the_base_output_exactly():
    base = tiny()
    model = apply_prefix_tuning(copy.deepcopy(base), PrefixConfig(num_virtual_tokens=2))
    apply_prompt_tuning(model, PromptConfig(num_virtual_tokens=3))
    idx = torch.randint(0, 71, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, 6:] = 0
    for m in (None, mask):
        assert (
            model(idx, attention_mask=m).logits - base(idx, attention_mask=m).logits
        ).abs().max() > 1e-3
        with disable_adapters(model):
            assert model.transformer.h[0].attn.prefix is None
            assert torch.equal(
                model(idx, attention_mask=m).logits, base(idx, attention_mask=m).logits
            )
    assert model.transformer.h[0].attn.prefix is not None


def test_dropping_the_reparameterization_leaves_outputs_identical(tmp_path):
    base = tiny()
    model = apply_prefix_tuning(
        copy.deepcopy(base),
        PrefixConfig(num_virtual_tokens=3, reparameterize=True, reparam_hidden=16),
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"prefix_tuning.default.embedding"} | {
        f"prefix_tuning.default.mlp.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")
    }
    idx = torch.randint(0, 71, (2, 9))
    before = model(idx).logits
    drop_reparameterization(model)
    assert torch.equal(model(idx).logits, before)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "prefix_tuning.default.prefix"
    }
    save_adapter(model, tmp_path / "baked")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "baked" / WEIGHTS), "pt") as f:
        assert list(f.keys()) == ["prefix_tuning.default.prefix"]
    fresh = load_adapter(copy.deepcopy(base), tmp_path / "baked")
    assert torch.equal(fresh(idx).logits, before)


def test_prefix_from_text_holds_the_base_models_own_keys_and_values():
    base = tiny()
    ids = [5, 6, 7]
    model = apply_prefix_tuning(
        copy.deepcopy(base), PrefixConfig(num_virtual_tokens=4, init_text=ids)
    )
    prefix = model.prefix_tuning["default"].prefix  # (L, 2, P, C)
    text = torch.tensor([[5, 6, 7, 5]])
    x = base.transformer.wte(text) + base.transformer.wpe(torch.arange(4))
    blk = base.transformer.h[0]
    _, k, v = blk.attn.c_attn(blk.ln_1(x)).split(24, dim=2)
    torch.testing.assert_close(prefix[0, 0], k[0])
    torch.testing.assert_close(prefix[0, 1], v[0])
    x = base(text, output_hidden_states=True).hidden_states[1]  # block 1 reads block 0's output
    _, k, _ = base.transformer.h[1].attn.c_attn(base.transformer.h[1].ln_1(x)).split(24, dim=2)
    torch.testing.assert_close(prefix[1, 0], k[0])


def test_prompt_equals_the_model_on_prompt_then_token_embeddings():
    base = tiny()
    model = randomise(apply_prompt_tuning(copy.deepcopy(base), PromptConfig(num_virtual_tokens=3)))
    prompt = model.soft_prompt.prompts["default"].embedding.detach()
    idx, targets = torch.randint(0, 71, (2, 8)), torch.randint(0, 71, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    out = model(idx, targets, attention_mask=mask)
    embeds = torch.cat([prompt.expand(2, -1, -1), base.transformer.wte(idx)], dim=1)
    ref = base(
        torch.zeros(2, 11, dtype=torch.long),
        torch.cat([torch.full((2, 3), IGNORE_INDEX), targets], dim=1),
        attention_mask=torch.cat([torch.ones(2, 3, dtype=torch.long), mask], dim=1),
        inputs_embeds=embeds,
    )
    assert out.logits.shape == (2, 8, 71)
    torch.testing.assert_close(out.logits, ref.logits[:, 3:], rtol=0, atol=0)
    torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=0)


def test_prompt_init_from_text_and_from_random_vocabulary_rows():
    base = tiny()
    wte = base.transformer.wte.weight

    class Encoding:  # the one method PromptConfig.from_text needs
        def encode_ordinary(self, text):
            return [ord(c) - ord("a") for c in text]

    config = PromptConfig.from_text("cab", Encoding(), num_virtual_tokens=5)
    assert config.init_text == [2, 0, 1]
    model = apply_prompt_tuning(copy.deepcopy(base), config)
    assert torch.equal(model.soft_prompt.prompts["default"].embedding, wte[[2, 0, 1, 2, 0]])
    assert PromptConfig.from_text("abcd", Encoding()).num_virtual_tokens == 4
    rand = apply_prompt_tuning(copy.deepcopy(base), PromptConfig(num_virtual_tokens=6))
    rows = rand.soft_prompt.prompts["default"].embedding
    assert all(any(torch.equal(r, w) for w in wte) for r in rows)


def test_two_named_prompts_concatenate_and_switch():
    base = tiny()
    model = apply_prompt_tuning(copy.deepcopy(base), PromptConfig(num_virtual_tokens=2))
    apply_prompt_tuning(model, PromptConfig(num_virtual_tokens=3, adapter_name="b"))
    hook = model.soft_prompt
    assert hook.num_tokens == 5 and hook(4).shape == (4, 5, 24)
    idx = torch.randint(0, 71, (2, 7))
    both = model(idx).logits
    set_adapter(model, "b")
    assert hook.num_tokens == 3 and {n for n, p in model.named_parameters() if p.requires_grad} == {
        "soft_prompt.prompts.b.embedding"
    }
    assert not torch.allclose(model(idx).logits, both)


def test_prompt_tuning_classifies_through_a_sequence_classifier():
    """The classifier's features are those of the backbone run with the prompt in front,
    and a soft prompt trained with the head beats the head alone on a task that hangs on
    the whole chain: the class of the symbol that follows it (mod 3)."""
    torch.manual_seed(0)
    clf = SequenceClassifier(toy_base(), num_labels=3)
    probe = copy.deepcopy(clf)
    apply_prompt_tuning(clf, PromptConfig(num_virtual_tokens=4))
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert trainable == {
        "backbone.soft_prompt.prompts.default.embedding",
        "head.weight",
        "head.bias",
    }
    xv, yv, _ = chains(96, seed=50_000, with_mode=False)
    mask = torch.ones_like(xv)
    mask[:, 12:] = 0  # right padding: the classifier pools the last real token
    with torch.no_grad():
        embeds = torch.cat([clf.backbone.soft_prompt(96), clf.backbone.transformer.wte(xv)], 1)
        full_mask = torch.cat([torch.ones(96, 4, dtype=torch.long), mask], dim=1)
        ids = torch.zeros(full_mask.shape, dtype=torch.long)  # only their shape is read
        with disable_adapters(clf):
            hidden = clf.backbone(ids, attention_mask=full_mask, inputs_embeds=embeds).last_hidden
        torch.testing.assert_close(clf.features(xv, mask), hidden[:, 4 + 11], rtol=1e-5, atol=1e-6)

    def train(model) -> tuple[float, float]:
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
        for step in range(60):
            x, y, _ = chains(32, seed=step, with_mode=False)
            model(x, labels=y[:, -1] % 3).loss.backward()
            opt.step()
            opt.zero_grad()
        with torch.no_grad():
            out = model(xv, labels=yv[:, -1] % 3)
        return out.loss.item(), (out.logits.argmax(-1) == yv[:, -1] % 3).float().mean().item()

    probe.backbone.requires_grad_(False)  # the baseline: a linear probe on frozen features
    (loss, accuracy), (probe_loss, _) = train(clf), train(probe)
    assert loss < 0.85 * probe_loss and accuracy > 0.85, (loss, probe_loss, accuracy)


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_save_then_load_onto_a_fresh_base_reproduces_outputs(method, tmp_path):
    base = SequenceClassifier(tiny(), num_labels=2).eval()
    model = copy.deepcopy(base)
    if method == "prefix":
        apply_prefix_tuning(model, PrefixConfig(num_virtual_tokens=3, adapter_name="x"))
    else:
        randomise(apply_prompt_tuning(model, PromptConfig(num_virtual_tokens=3, adapter_name="x")))
    save_adapter(model, tmp_path / "ad", adapter_name="x")
    fresh = load_adapter(copy.deepcopy(base), tmp_path / "ad")
    idx = torch.randint(0, 71, (2, 9))
    assert torch.equal(fresh(idx).logits, model(idx).logits)


@pytest.mark.parametrize(
    "make, lr",
    [
        (lambda m: apply_prefix_tuning(m, PrefixConfig(num_virtual_tokens=4)), 3e-2),
        (
            lambda m: apply_prefix_tuning(
                m, PrefixConfig(num_virtual_tokens=4, reparameterize=True)
            ),
            1e-2,
        ),
        (
            lambda m: apply_prefix_tuning(
                m, PrefixConfig(num_virtual_tokens=4, init_text=[0, 1, 2])
            ),
            3e-2,
        ),
        (lambda m: apply_prompt_tuning(m, PromptConfig(num_virtual_tokens=4)), 3e-2),
    ],
    ids=["prefix", "prefix-reparameterized", "prefix-from-text", "prompt"],
)
def test_prefix_and_prompt_tuning_lower_the_validation_loss(make, lr):
    torch.manual_seed(0)
    before, after = toy_finetune(make(toy_base()), lr=lr)
    assert after < 0.5 * before, (before, after)


def test_bad_input_is_a_clear_error_and_changes_nothing():
    for cls in (PrefixConfig, PromptConfig):
        for n in (0, -2, 1.5):
            with pytest.raises(ValueError, match="num_virtual_tokens must be a positive integer"):
                cls(num_virtual_tokens=n)
        with pytest.raises(ValueError, match="init_text is empty"):
            cls(init_text=[])
    with pytest.raises(ValueError, match="use one or the other"):
        PrefixConfig(init_text=[1, 2], reparameterize=True)
    model = tiny()
    snapshot, names = str(model), set(model.state_dict())
    with pytest.raises(ValueError, match=r"token ids \[99\] outside the vocabulary \[0, 71\)"):
        apply_prefix_tuning(model, PrefixConfig(init_text=[1, 99]))
    with pytest.raises(ValueError, match=r"token ids \[-1\] outside the vocabulary"):
        apply_prompt_tuning(model, PromptConfig(init_text=[-1]))
    with pytest.raises(ValueError, match="40 virtual tokens leave no room in block_size 32"):
        apply_prompt_tuning(model, PromptConfig(num_virtual_tokens=40))
    with pytest.raises(ValueError, match="contains no minift GPT"):
        apply_prefix_tuning(torch.nn.Linear(3, 3))
    assert str(model) == snapshot and set(model.state_dict()) == names
    assert model.soft_prompt is None and all(b.attn.prefix is None for b in model.transformer.h)
    apply_prefix_tuning(model, PrefixConfig(num_virtual_tokens=2))
    snapshot = str(model)
    with pytest.raises(ValueError, match="already has a prefix adapter named 'default'"):
        apply_prefix_tuning(model, PrefixConfig(num_virtual_tokens=2))
    assert str(model) == snapshot
