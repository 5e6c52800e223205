"""Byte-level BPE: hand-checked merges, determinism, round trips, special tokens, errors."""

import os
import subprocess
import sys

import pytest
import regex
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from minift import tokenizer as tk
from minift.data.encoding import FAST_VOCAB, default_encoding, default_encoding_path
from minift.tokenizer import (
    EOT,
    GPT2_PATTERN,
    MASK,
    PAD,
    bpe_merges,
    encoding_fingerprint,
    eot_id,
    load_encoding,
    mask_id,
    pad_id,
    save_encoding,
    special_id,
    train_bpe,
)

SMALL_TEXT = (
    "Return a new list containing all items from the iterable in ascending order.\n"
    "A custom key function can be supplied to customize the sort order, and the\n"
    "reverse flag can be set to request the result in descending order. 1234 + 5678 = 6912!\n"
    "    Indented lines, tabs\tand   runs of   spaces; unicode: naïve café 東京 🚀.\n"
) * 3


@pytest.fixture(scope="module")
def enc() -> tiktoken.Encoding:
    return default_encoding()


def test_first_merges_hand_checked():
    # "aaabdaaabac" is one word. Pair counts: aa=4 (overlaps count: "aaa" holds two),
    # ab=2, others 1 -> "aa". Then (aa,a)=2 and (a,b)=2 tie; the smaller ids (97,98) win ->
    # "ab". Then (aa,ab)=2 -> "aaab". Then four pairs of count 1; the smallest is (a,c).
    merges = bpe_merges("aaabdaaabac", 4)
    assert [m[2] for m in merges] == [b"aa", b"ab", b"aaab", b"ac"]
    assert [m[3] for m in merges] == [4, 2, 2, 1]
    # With the regex pre-split the words are "hug", " hug" x2, " pug", " pun": "ug" (4),
    # "hug" (3), then " p" (2) beats " hug" (2) on ids (32,112) < (32,257), then "un".
    merges = bpe_merges("hug hug hug pug pun", 5)
    assert [m[2] for m in merges] == [b"ug", b"hug", b" p", b" hug", b"un"]
    # Merges never cross a pre-split boundary: no token holds "g " or "g p".
    assert not any(b"g " in m[2] for m in merges)


def test_trained_encoding_uses_the_merges():
    enc = train_bpe("hug hug hug pug pun", 256 + 5 + 3)
    ug, hug, sp_p, sp_hug = 256, 257, 258, 259
    assert enc.encode_ordinary("hug pug hug") == [hug, sp_p, ug, sp_hug]


def test_deterministic_and_independent_of_hash_seed():
    a, b = train_bpe(SMALL_TEXT, 400), train_bpe(SMALL_TEXT, 400)
    assert a.__getstate__() == b.__getstate__()
    code = (
        "from minift.tokenizer import train_bpe, encoding_fingerprint\n"
        f"print(encoding_fingerprint(train_bpe({SMALL_TEXT!r}, 400)))"
    )
    # This process has a random string-hash seed; a fixed, different one must agree.
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == encoding_fingerprint(a)


@pytest.mark.parametrize("vocab_size", [259, 300, 400])
def test_n_vocab_and_special_ids(vocab_size):
    enc = train_bpe(SMALL_TEXT, vocab_size)
    assert enc.n_vocab == vocab_size
    assert (eot_id(enc), pad_id(enc), mask_id(enc)) == tuple(range(vocab_size - 3, vocab_size))
    assert special_id(enc, EOT) == enc.eot_token == vocab_size - 3
    # Ranks are dense: every id below the specials decodes to a distinct byte string.
    tokens = [enc.decode_single_token_bytes(i) for i in range(vocab_size - 3)]
    assert len(set(tokens)) == vocab_size - 3
    assert tokens[:256] == [bytes([i]) for i in range(256)]


def test_bad_vocab_size_and_too_little_text():
    with pytest.raises(ValueError, match="at least 259"):
        train_bpe(SMALL_TEXT, 258)
    with pytest.raises(ValueError, match="only supports .* merges"):
        train_bpe("tiny text", 4096)


def test_pad_falls_back_to_eot_and_mask_is_required():
    base = train_bpe(SMALL_TEXT, 300).__getstate__()
    only_eot = tiktoken.Encoding(
        "eot-only",
        pat_str=base["pat_str"],
        mergeable_ranks=base["mergeable_ranks"],
        special_tokens={EOT: 297},
    )
    assert pad_id(only_eot) == eot_id(only_eot) == 297
    with pytest.raises(ValueError, match="no <\\|mask\\|> token"):
        mask_id(only_eot)
    with pytest.raises(ValueError, match="no special token '<\\|nope\\|>'"):
        special_id(only_eot, "<|nope|>")


def test_save_load_round_trip(tmp_path):
    enc = train_bpe(SMALL_TEXT, 320, name="round-trip")
    path = tmp_path / "enc.json"
    save_encoding(enc, path)
    back = load_encoding(path)
    assert back.name == "round-trip" and back.n_vocab == 320
    assert back.__getstate__() == enc.__getstate__()
    assert back.encode(SMALL_TEXT + EOT, allowed_special="all") == enc.encode(
        SMALL_TEXT + EOT, allowed_special="all"
    )
    path.write_text(path.read_text()[:100])  # truncated file
    with pytest.raises(ValueError, match="cannot load encoding from .*enc.json"):
        load_encoding(path)


def test_default_encoding_cached(enc):
    assert enc.n_vocab == FAST_VOCAB
    assert {EOT, PAD, MASK} == enc.special_tokens_set
    assert default_encoding() is enc  # in-process memo
    assert load_encoding(default_encoding_path()).__getstate__() == enc.__getstate__()


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_random_unicode(enc, text):
    ids = enc.encode_ordinary(text)
    assert enc.decode(ids) == text
    assert all(0 <= i < enc.n_vocab - 3 for i in ids)  # ordinary text never yields specials


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab c.\n\t'séé1"))))
def test_tokens_respect_pre_split(enc, text):
    # tiktoken splits with the same regex the trainer used, so encoding the pre-split words
    # one by one gives the same tokens as encoding the whole text.
    words = regex.findall(GPT2_PATTERN, text)
    assert sum((enc.encode_ordinary(w) for w in words), []) == enc.encode_ordinary(text)


def test_special_text_is_ordinary_in_encode_ordinary(enc):
    ids = enc.encode_ordinary(f"a{EOT}b")
    assert eot_id(enc) not in ids and enc.decode(ids) == f"a{EOT}b"
    assert eot_id(enc) in enc.encode(f"a{EOT}b", allowed_special={EOT})


def test_compression_beats_bytes(enc):
    from minift.data.corpus import load_corpus

    text = "\n".join(d.text for d in load_corpus("pydocs", "val")[:200])
    assert (
        len(text.encode()) / len(enc.encode_ordinary(text)) > 1.7
    )  # 512 tokens: ~2 bytes per token


def test_gpt2_error_is_clear(monkeypatch):
    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(RuntimeError, match="TIKTOKEN_CACHE_DIR"):
        tk.gpt2_encoding()


@pytest.mark.skipif(not tk.gpt2_available(), reason="tiktoken's gpt2 files are not cached")
def test_gpt2_specials():
    g = tk.gpt2_encoding()
    assert g.n_vocab == 50257 and eot_id(g) == pad_id(g) == 50256
