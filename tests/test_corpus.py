"""Corpora: harvest, cleaning, dedup, split by module, token cache."""

import hashlib
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from minift.data import corpus as cp
from minift.data.clean import clean_text, is_useful
from minift.data.dedup import dedup, exact_dedup, jaccard, minhash_signature, near_dedup
from minift.data.encoding import default_encoding
from minift.data.tokens import cache_path, corpus_tokens, encode_documents
from minift.tokenizer import eot_id

# ---------------------------------------------------------------- cleaning


def test_clean_text_rules():
    assert clean_text("  \n\nHello  \n\n\n\n\nworld\t\n\n") == "Hello\n\nworld"
    assert clean_text("a\tb") == "a   b"  # tab to the next multiple of 4 columns
    assert clean_text("a\n\tx") == "a\n    x"  # inner indentation survives
    assert clean_text("ﬁle Ａ１ x²") == "file A1 x2"  # NFKC: ligature, full-width, superscript
    assert clean_text("line  \r\nnext\rlast") == "line\nnext\nlast"
    assert clean_text("one\n\ntwo") == "one\n\ntwo"  # a single blank line is kept


def test_is_useful():
    assert not is_useful("Return self.")
    assert not is_useful("1234 5678 9012 3456 7890 ++ -- ** //")
    assert is_useful("Return a new sorted list from the items in iterable.")
    assert is_useful("short but ok", min_chars=5)


# ---------------------------------------------------------------- dedup

rng = random.Random(0)
VOCAB = [f"word{i}" for i in range(500)]
BASE = " ".join(rng.choice(VOCAB) for _ in range(50))
ONE_WORD_CHANGED = " ".join(BASE.split()[:25] + ["different"] + BASE.split()[26:])
UNRELATED = " ".join(rng.choice(VOCAB) for _ in range(50))


def test_jaccard_and_minhash_estimate():
    # One word out of 50 changed removes 3 of 48 word-3-shingles and adds 3: J = 45/51.
    assert jaccard(BASE, ONE_WORD_CHANGED) == pytest.approx(45 / 51)
    assert jaccard(BASE, UNRELATED) < 0.05
    a, b = minhash_signature(BASE, 256), minhash_signature(ONE_WORD_CHANGED, 256)
    assert abs(np.mean(a == b) - 45 / 51) < 0.1
    c = minhash_signature(UNRELATED, 256)
    assert np.mean(a == c) < 0.1
    assert np.array_equal(a, minhash_signature(BASE, 256))  # deterministic


def test_exact_and_near_duplicates_removed():
    texts = [BASE, UNRELATED, "  " + BASE.upper() + "\n", ONE_WORD_CHANGED, "short text here"]
    assert exact_dedup(texts) == [0, 1, 3, 4]  # case and whitespace do not matter
    assert dedup(texts) == [0, 1, 4]
    assert dedup(texts, threshold=0.95) == [0, 1, 3, 4]  # J = 0.88 is below 0.95
    assert near_dedup([UNRELATED, BASE]) == [0, 1]


def test_near_dedup_keeps_first_of_each_cluster():
    variants = [" ".join(BASE.split()[:49] + [f"tail{i}"]) for i in range(5)]
    texts = [UNRELATED] + variants + [BASE]
    assert near_dedup(texts) == [0, 1]


# ---------------------------------------------------------------- corpora


@pytest.fixture(scope="module")
def pydocs():
    return cp.load_corpus("pydocs", "all")


def test_pydocs_harvest(pydocs):
    chars = sum(len(d.text) for d in pydocs)
    assert len(pydocs) > 5000 and 1_000_000 < chars < 3_000_000
    modules = {d.module for d in pydocs}
    assert {"json", "email.mime.text", "collections"} <= modules
    assert not any(m.split(".")[0] in ("test", "idlelib.idle_test") for m in modules)
    assert not any("tests" in m.split(".") or "idle_test" in m for m in modules)
    doc = next(d for d in pydocs if d.module == "json" and d.name == "loads")
    assert "JSON" in doc.text
    assert all(d.text == clean_text(d.text) and is_useful(d.text) for d in pydocs)
    normalised = {" ".join(d.text.lower().split()) for d in pydocs}
    assert len(normalised) == len(pydocs)  # no exact duplicates left


PACKAGES = ("json", "email", "logging")
DIGEST_CODE = f"""
import hashlib
from minift.data import corpus as cp
files = [f for f in cp.stdlib_files() if f[0].split(".")[0] in {PACKAGES!r}]
print(hashlib.sha1(repr(cp.build("pydocs", files)[0]).encode()).hexdigest())
"""


def test_harvest_deterministic_across_hash_seeds():
    files = [f for f in cp.stdlib_files() if f[0].split(".")[0] in PACKAGES]
    assert len(files) > 20
    digest = _digest(cp.build("pydocs", files)[0])
    assert digest == _digest(cp.build("pydocs", files)[0])
    # This process has a random string-hash seed; a fixed, different one must agree.
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", DIGEST_CODE], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == digest


def _digest(docs):
    return hashlib.sha1(repr(docs).encode()).hexdigest()


@pytest.mark.parametrize("name", ["pydocs", "pycode"])
def test_split_by_module(name):
    train, val, every = (cp.load_corpus(name, s) for s in ("train", "val", "all"))
    assert len(train) + len(val) == len(every)
    assert not {d.module for d in train} & {d.module for d in val}
    frac = sum(len(d.text) for d in val) / sum(len(d.text) for d in every)
    assert 0.08 < frac <= 0.10
    assert cp.val_modules(every) == cp.val_modules(list(reversed(every)))  # order-free


def test_pycode_is_code():
    docs = cp.load_corpus("pycode", "all")
    chars = sum(len(d.text) for d in docs)
    assert 1_500_000 < chars < 2_500_000
    assert sum(d.text.startswith(("def ", "class ", "@", "async def")) for d in docs) > 0.95 * len(
        docs
    )


def test_corpus_stats(pydocs):
    s = cp.corpus_stats("pydocs")
    assert s["all"]["documents"] == len(pydocs) == s["pipeline"]["kept"]
    p = s["pipeline"]
    assert p["harvested"] - p["too_short"] - p["exact_duplicates"] - p["near_duplicates"] == len(
        pydocs
    )
    assert p["exact_duplicates"] > 0 and p["too_short"] > 0


def test_unknown_name_or_split():
    with pytest.raises(ValueError, match="valid corpora: pydocs, pycode"):
        cp.load_corpus("wikipedia")
    with pytest.raises(ValueError, match="valid splits: train, val, all"):
        cp.load_corpus("pydocs", "test")


# ---------------------------------------------------------------- tokens


def test_token_cache_round_trip():
    enc = default_encoding()
    docs = cp.load_corpus("pydocs", "val")
    path = cache_path("pydocs", "val", enc)
    tokens = corpus_tokens("pydocs", "val", enc)
    assert path.exists() and path.parent.name == f"{enc.name}-{enc.n_vocab}"
    assert tokens.dtype == np.uint16
    assert np.array_equal(tokens, encode_documents([d.text for d in docs], enc))
    assert np.array_equal(corpus_tokens("pydocs", "val", enc), tokens)  # from the cache
    eot = eot_id(enc)
    assert tokens[-1] == eot and int((tokens == eot).sum()) == len(docs)
    ends = np.flatnonzero(tokens == eot)
    first = enc.decode(tokens[: ends[0]].tolist())
    assert first == docs[0].text
    last = enc.decode(tokens[ends[-2] + 1 : ends[-1]].tolist())
    assert last == docs[-1].text
