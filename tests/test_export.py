"""`minift export --hf`: a minift GPT written as a Hugging Face GPT-2 folder that
transformers loads with minift's logits, and its tokenizer as vocab.json + merges.txt that
GPT2TokenizerFast reads into the same tokens as minift's encoding."""

import copy
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minift.model import GPT, GPTConfig, MoEConfig, SparseConfig
from minift.model.hf_export import export_hf
from minift.model.hf_tokenizer import encoding_from_hf_folder
from minift.tokenizer import train_bpe

transformers = pytest.importorskip("transformers")

TEXTS = [
    "Return the   value.\n\n\n    def f(x):\n\treturn x  ",
    "naïve café — Schrödinger's cat isn't 日本語 😀😀 ok",
    "trailing spaces   \n  \n\r\n\u00a0non-breaking\u2028line sep\u3000wide",
    "numbers 3.14159 and 1,000,000; they've we'll I'm you'd",
    "",
    "   ",
    "\n\n",
]
ALPHABET = "ab Zé日本😀 \t\n\r\u00a0'sdvetlm0129.,!?-_"
# Odd sizes everywhere (3 heads of width 7, an MLP of 37), so a transposed or mis-split
# matrix cannot go unnoticed.
ODD = dict(vocab_size=530, block_size=29, n_layer=3, n_head=3, n_embd=21)
VARIANTS = {
    "tied": dict(),
    "untied, n_inner 37": dict(tie_weights=False, n_inner=37),
    "no bias": dict(bias=False),
    "no bias, untied, dropout": dict(bias=False, tie_weights=False, dropout=0.1),
    "eps 1e-6": dict(norm_eps=1e-6),
}


@pytest.fixture(scope="module")
def enc():
    from minift.data.encoding import default_encoding

    return default_encoding()  # 512 tokens in fast mode


def randomised(config: GPTConfig) -> GPT:
    """A GPT whose every parameter (biases and norms included) is far from its init."""
    torch.manual_seed(0)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


@pytest.mark.parametrize("name", list(VARIANTS))
def test_transformers_loads_the_export_with_the_same_logits(enc, tmp_path, name):
    model = randomised(GPTConfig(**ODD, **VARIANTS[name]))
    export_hf(model, enc, tmp_path / "out")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    assert hf.config.tie_word_embeddings == model.config.tie_weights
    idx = torch.randint(0, 530, (3, 29))
    mask = torch.ones(3, 29, dtype=torch.long)
    mask[1, 20:] = 0
    with torch.no_grad():
        ours, theirs = model(idx).logits, hf(idx).logits
        padded = hf(idx, attention_mask=mask).logits[1, :20]
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded, ours[1, :20], rtol=1e-5, atol=1e-5)


def test_the_export_loads_back_into_minift(enc, tmp_path):
    model = randomised(GPTConfig(**ODD, tie_weights=False))
    export_hf(model, enc, tmp_path)
    again = GPT.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 530, (2, 29))
    torch.testing.assert_close(again(idx).logits, model(idx).logits, rtol=1e-6, atol=1e-6)
    back = encoding_from_hf_folder(tmp_path)
    assert all(back.encode_ordinary(t) == enc.encode_ordinary(t) for t in TEXTS)


@pytest.fixture(scope="module")
def exported_tokenizers(enc, tmp_path_factory):
    """GPT2TokenizerFast loaded from the exports of the default tokenizer and of a BPE
    trained here (a different vocabulary, 700 tokens)."""
    from minift.data.corpus import load_corpus

    texts = [d.text for d in load_corpus("pycode", "train")[:60]] + TEXTS
    trained = train_bpe(texts, 700, name="test-bpe")
    out = {}
    for name, e in (("default", enc), ("trained", trained)):
        path = tmp_path_factory.mktemp(name)
        export_hf(GPT(GPTConfig(**{**ODD, "vocab_size": 768, "n_layer": 1})), e, path)
        assert {"vocab.json", "merges.txt"} <= set(os.listdir(path))
        out[name] = (e, transformers.GPT2TokenizerFast.from_pretrained(path))
    return out


@pytest.mark.parametrize("which", ["default", "trained"])
def test_gpt2_tokenizer_fast_encodes_as_minift(exported_tokenizers, which):
    from minift.data.corpus import load_corpus

    enc, ref = exported_tokenizers[which]
    docs = [d.text for d in load_corpus("pydocs", "val")[:40]]
    for text in TEXTS + docs:
        ids = enc.encode_ordinary(text)
        assert ref(text, add_special_tokens=False)["input_ids"] == ids, text[:60]
        assert ref.decode(ids) == text
    assert ref.eos_token_id == enc.eot_token and len(ref) == enc.n_vocab


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_random_text_encodes_as_minift(exported_tokenizers, text):
    for enc, ref in exported_tokenizers.values():
        assert ref(text, add_special_tokens=False)["input_ids"] == enc.encode_ordinary(text)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(pos_emb="rope"), "pos_emb='rope'"),
        (dict(mlp="swiglu"), "mlp='swiglu'"),
        (dict(norm="rmsnorm"), "norm='rmsnorm'"),
        (dict(causal=False), "causal=False"),
        (dict(moe=MoEConfig(experts=2)), "moe.experts=2"),
        (dict(sparse=SparseConfig("sliding_window", block_size=1)), "sparse.pattern="),
    ],
)
def test_what_gpt2_cannot_express_is_refused_naming_the_field(enc, tmp_path, kw, field):
    model = GPT(GPTConfig(**{**ODD, "n_embd": 24}, **kw))  # rope needs an even head width
    with pytest.raises(ValueError, match=f"cannot export as GPT-2: {field}"):
        export_hf(model, enc, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


def test_adapters_a_wrapper_and_a_foreign_tokenizer_are_refused(enc, tmp_path):
    from minift.model.heads import SequenceClassifier
    from minift.peft import LoRAConfig, apply_lora, merge_and_unload

    model = GPT(GPTConfig(**ODD))
    lora = apply_lora(copy.deepcopy(model), LoRAConfig(r=2, target_modules=["c_attn"]))
    with pytest.raises(ValueError, match="merge its adapters"):
        export_hf(lora, enc, tmp_path / "out")
    with pytest.raises(ValueError, match="a task head has no place"):
        export_hf(SequenceClassifier(model, 3), enc, tmp_path / "out")
    small = GPT(GPTConfig(**{**ODD, "vocab_size": 300}))
    with pytest.raises(ValueError, match="tokenizer has 512 tokens but the model only 300"):
        export_hf(small, enc, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # Merged, the LoRA model exports and computes what it computed with its adapter.
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_()
    idx = torch.randint(0, 530, (1, 29))
    expected = lora(idx).logits
    export_hf(merge_and_unload(lora), enc, tmp_path / "out")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, expected, rtol=1e-5, atol=1e-5)


def test_a_non_empty_destination_needs_overwrite(enc, tmp_path):
    model = GPT(GPTConfig(**ODD))
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty"):
        export_hf(model, enc, tmp_path)
    export_hf(model, enc, tmp_path, overwrite=True)
    assert (tmp_path / "config.json").exists() and (tmp_path / "keep.txt").read_text() == "mine"


def run_cli(argv: list[str]) -> None:
    """Parse and run one of minift.cli.model's commands (its own parser, as `minift` builds)."""
    import argparse

    from minift.cli import model as commands

    parser = argparse.ArgumentParser(prog="minift")
    commands.register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    args.func(args)


def test_cli_exports_a_saved_minift_model(enc, tmp_path, capsys):
    model = randomised(GPTConfig(**ODD))
    model.save(tmp_path / "saved")
    run_cli(["export", "--hf", str(tmp_path / "saved"), str(tmp_path / "out")])
    assert "wrote" in capsys.readouterr().out
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    idx = torch.randint(0, 530, (2, 29))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx).logits, rtol=1e-5, atol=1e-5)
    tok = transformers.GPT2TokenizerFast.from_pretrained(tmp_path / "out")
    assert tok("Return the value")["input_ids"] == enc.encode_ordinary("Return the value")


def test_cli_exports_a_fine_tuned_folder_with_its_adapter_merged(enc, tmp_path, capsys):
    """A LoRA classifier saved by recipes.saved: the export holds base + B A (merged), not
    the base, and the task head is left out with a note."""
    saved = pytest.importorskip("minift.recipes.saved")
    from minift.data.tasks import DEFAULT_TASK, get_task
    from minift.model.heads import SequenceClassifier
    from minift.peft import LoRAConfig, apply_lora
    from minift.recipes.finetune import FinetuneResult

    base = randomised(GPTConfig(**ODD))
    base.save(tmp_path / "base")
    task = get_task(DEFAULT_TASK)
    clf = SequenceClassifier(GPT.load(tmp_path / "base"), len(task.labels))
    clf = apply_lora(clf, LoRAConfig(r=2, target_modules=["c_attn", "c_fc"]))
    with torch.no_grad():
        for name, p in clf.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a trained adapter: B != 0
    result = FinetuneResult(
        method="lora", task=task.name, metric_name="accuracy", metric=0.5, val_loss=1.0,
        trainable=1, total=1, seconds=0.0, peak_mb=0.0, history=[], model=clf,
    )  # fmt: skip
    ref = saved.base_reference(tmp_path / "base", base)
    saved.save_finetuned(tmp_path / "ft", result, task, enc, ref)
    run_cli(["export", "--hf", str(tmp_path / "ft"), str(tmp_path / "out")])
    assert "task head" in capsys.readouterr().out
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    idx = torch.randint(0, 530, (2, 29))
    from minift.cli.model import load_for_export

    merged = load_for_export(str(tmp_path / "ft"))[0].backbone
    with torch.no_grad():
        adapted, plain = clf.eval().backbone(idx).logits, base(idx).logits
        theirs = hf(idx).logits
        torch.testing.assert_close(theirs, merged(idx).logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(theirs, adapted, rtol=1e-4, atol=1e-4)  # merging rounds
    assert (theirs - plain).abs().max() > 0.1
