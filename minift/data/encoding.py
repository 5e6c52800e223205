"""minift's default tokenizer: a byte-level BPE trained on the ``pydocs`` corpus.

The BPE itself (training, the tiktoken export, saving) is minift.tokenizer; this module
decides what it is trained on and where the result is kept. The normal 4096-token
tokenizer ships with the package (minift/assets/pydocs-bpe4096.json, trained by
:func:`trained_encoding` on Python 3.11.7's pydocs): the shipped base model was trained
with it, and pydocs differs between Python versions, so it is not retrained per machine.
The fast-mode tokenizer is trained on first use and cached.
"""

from __future__ import annotations

import pathlib
import sys

import tiktoken

from minift.cache import build_once
from minift.data import corpus
from minift.shipped import shipped_file
from minift.tokenizer import FORMAT_VERSION as TOKENIZER_FORMAT
from minift.tokenizer import load_encoding, save_encoding, train_bpe
from minift.utils import fast_mode, minift_home

SHIPPED_TOKENIZER = "pydocs-bpe4096.json"
SHIPPED_TOKENIZER_SHA256 = "0f87fb8ffce0180755f4c4de331a363e5067ae390347dfeaba98f22e786e8698"

DEFAULT_VOCAB = 4096
FAST_VOCAB = 512
FAST_CHARS = 300_000  # the fast-mode tokenizer trains on the first ~300 kB of pydocs train

_DEFAULT_CACHE: dict[str, tiktoken.Encoding] = {}


def default_encoding_path(fast: bool | None = None) -> pathlib.Path:
    """Where :func:`default_encoding` caches its tokenizer."""
    fast = fast_mode() if fast is None else fast
    vocab = FAST_VOCAB if fast else DEFAULT_VOCAB
    py = ".".join(map(str, sys.version_info[:3]))
    stem = f"pydocs-bpe{vocab}-py{py}-c{corpus.FORMAT_VERSION}-v{TOKENIZER_FORMAT}"
    return minift_home() / "tokenizers" / f"{stem}.json"


def default_encoding(fast: bool | None = None) -> tiktoken.Encoding:
    """minift's own tokenizer: the shipped 4096-token BPE normally (checked against its
    hash); in fast mode (``MINIFT_FAST=1``) the 512-token one of :func:`trained_encoding`."""
    fast = fast_mode() if fast is None else fast
    if fast:
        return trained_encoding(fast=True)
    path = shipped_file(SHIPPED_TOKENIZER, SHIPPED_TOKENIZER_SHA256)
    key = str(path)
    if key not in _DEFAULT_CACHE:
        _DEFAULT_CACHE[key] = load_encoding(path)
    return _DEFAULT_CACHE[key]


def trained_encoding(fast: bool | None = None) -> tiktoken.Encoding:
    """The default tokenizer trained here on the ``pydocs`` train split, and cached.

    4096 tokens normally; in fast mode (``MINIFT_FAST=1``, how tests run) 512 tokens
    trained on the first ~300 kB, built in a few seconds. The cache file is keyed by the
    vocabulary size, the Python version (the corpus is that version's stdlib) and the
    corpus and file format versions; :func:`minift.cache.build_once` makes parallel
    processes build it once.
    """
    fast = fast_mode() if fast is None else fast
    vocab = FAST_VOCAB if fast else DEFAULT_VOCAB
    path = default_encoding_path(fast)
    key = str(path)
    if key in _DEFAULT_CACHE and path.exists():
        return _DEFAULT_CACHE[key]

    def build(tmp: pathlib.Path) -> None:
        texts = [d.text for d in corpus.load_corpus("pydocs", "train")]
        if fast:
            texts = _take_chars(texts, FAST_CHARS)
        save_encoding(train_bpe(texts, vocab, name="minift-pydocs"), tmp)

    enc = load_encoding(build_once(path, build))
    _DEFAULT_CACHE[key] = enc
    return enc


def _take_chars(texts: list[str], n_chars: int) -> list[str]:
    out, total = [], 0
    for t in texts:
        if total >= n_chars:
            break
        out.append(t)
        total += len(t)
    return out
