"""A Hugging Face GPT-2 folder brings its own tokenizer: vocab.json + merges.txt (or
tokenizer.json) read into a tiktoken Encoding, checked token for token against
transformers' GPT2TokenizerFast on a byte-level BPE trained here, offline, with the
tokenizers library; and `minift generate --model` on such a folder, with no network."""

import json
import os

import pytest
import tiktoken
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minift.model.hf_tokenizer import bytes_to_unicode, encoding_from_hf_folder
from minift.tokenizer import eot_id

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

TEXTS = [
    "Return the   value.\n\n\n    def f(x):\n\treturn x  ",
    "naïve café — Schrödinger's cat isn't 日本語 😀😀 ok",
    "trailing spaces   \n  \n\r\n\u00a0non-breaking\u2028line sep\u3000wide",
    "numbers 3.14159 and 1,000,000; they've we'll I'm you'd 'tis",
    "",
    " ",
    "\n",
    "<|endoftext|> is text here",
]
ALPHABET = "ab Zé日本😀 \t\n\r\u00a0'sdvetlm0129.,!?-_"


def train_corpus() -> list[str]:
    from minift.data.corpus import load_corpus

    return [d.text for d in load_corpus("pydocs", "train")[:400]] + TEXTS


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A byte-level BPE trained with the tokenizers library and saved as transformers
    saves GPT-2's tokenizer (tokenizer.json, vocab.json, merges.txt, tokenizer_config.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=900,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(train_corpus(), trainer)
    fast = transformers.GPT2TokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    path = tmp_path_factory.mktemp("hf_tok")
    fast.save_pretrained(path)  # tokenizer.json, tokenizer_config.json
    tok.model.save(str(path))  # vocab.json, merges.txt (GPT-2's own files)
    return path


def reference(path):
    return transformers.GPT2TokenizerFast.from_pretrained(path)


@pytest.mark.parametrize("files", ["vocab+merges", "tokenizer.json"])
def test_encoding_matches_gpt2_tokenizer_fast(hf_folder, tmp_path, files):
    keep = ["vocab.json", "merges.txt"] if files == "vocab+merges" else ["tokenizer.json"]
    for name in keep:
        (tmp_path / name).write_bytes((hf_folder / name).read_bytes())
    assert sorted(os.listdir(tmp_path)) == sorted(keep)
    enc, ref = encoding_from_hf_folder(tmp_path), reference(tmp_path)  # the same files
    assert enc.n_vocab == len(ref) == 900
    for text in TEXTS + [d for d in train_corpus()[:50]]:
        ids = enc.encode(text, allowed_special="all")  # HF reads <|endoftext|> as special
        assert ids == ref(text, add_special_tokens=False)["input_ids"], text[:60]
        assert enc.decode(ids) == text
    assert eot_id(enc) == ref.eos_token_id == 0  # <|endoftext|> is special, with its own id


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_random_text_encodes_as_gpt2_tokenizer_fast(hf_folder, text):
    enc, ref = encoding_from_hf_folder(hf_folder), reference(hf_folder)
    assert enc.encode_ordinary(text) == ref(text, add_special_tokens=False)["input_ids"]


def test_a_folder_without_tokenizer_files_is_a_one_line_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as err:
        encoding_from_hf_folder(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert all(name in message for name in ("vocab.json", "merges.txt", "tokenizer.json"))


def test_tokenizers_tiktoken_cannot_match_are_refused(hf_folder, tmp_path):
    obj = json.loads((hf_folder / "tokenizer.json").read_text())
    obj["pre_tokenizer"]["add_prefix_space"] = True
    (tmp_path / "tokenizer.json").write_text(json.dumps(obj))
    with pytest.raises(ValueError, match="add_prefix_space=true"):
        encoding_from_hf_folder(tmp_path)
    obj["pre_tokenizer"] = {"type": "Whitespace"}
    obj["normalizer"] = {"type": "NFC"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(obj))
    with pytest.raises(ValueError, match=r"a normalizer \(NFC\); pre_tokenizer 'Whitespace'"):
        encoding_from_hf_folder(tmp_path)


def test_merges_out_of_id_order_and_missing_bytes_are_refused(hf_folder, tmp_path):
    vocab = json.loads((hf_folder / "vocab.json").read_text())
    lines = (hf_folder / "merges.txt").read_text().splitlines()
    merges = [ln for ln in lines if not ln.startswith("#")]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("\n".join([merges[1], merges[0], *merges[2:]]))
    with pytest.raises(ValueError, match="ids of merged tokens must follow the merge order"):
        encoding_from_hf_folder(tmp_path)
    del vocab[bytes_to_unicode()[0xFF]]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ValueError, match="lacks some of the 256 byte tokens"):
        encoding_from_hf_folder(tmp_path)


def run_cli(argv: list[str]) -> None:
    """Parse and run one of minift.cli.model's commands (its own parser, as `minift` builds)."""
    import argparse

    from minift.cli import model as commands

    parser = argparse.ArgumentParser(prog="minift")
    commands.register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    args.func(args)


def test_generate_on_a_hugging_face_folder_works_offline(hf_folder, tmp_path, monkeypatch, capsys):
    """`minift generate --model` on a GPT-2 folder uses the folder's tokenizer (tiktoken's
    download is made to fail) and samples what transformers samples greedily."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=900, n_positions=64, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path)
    reference(hf_folder).save_pretrained(tmp_path)

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    prompt = "Return the value"
    run_cli(["generate", "--model", str(tmp_path), "--prompt", prompt, "--max-new-tokens", "8",
             "--temperature", "0"])  # fmt: skip
    ours = capsys.readouterr().out.strip()
    ref = reference(tmp_path)
    ids = torch.tensor([ref(prompt)["input_ids"]])
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None
        )
    expected = ref.decode([t for t in out[0].tolist() if t != 0])
    assert ours == expected and len(expected) > len(prompt)
