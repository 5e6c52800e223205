"""A corpus split as one flat token array, tokenized once and cached as ``.npy``.

Pretraining reads random windows from a single stream ``doc_1 EOT doc_2 EOT ...``
(Radford et al., 2019): the end-of-text token tells the model where one document stops and
an unrelated one starts. Token ids fit in ``uint16`` when ``n_vocab <= 65536`` (GPT-2's
50257 does), which halves memory against ``int32``.

The cache (built once, by :func:`minift.cache.build_once`) lives in
``$MINIFT_HOME/tokens/<enc.name>-<n_vocab>/`` and its file name also
carries a fingerprint of the encoding's vocabulary, so two different encodings that share a
name and size never read each other's tokens.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import tiktoken

from minift.cache import build_once
from minift.data.corpus import FORMAT_VERSION as CORPUS_VERSION
from minift.data.corpus import load_corpus
from minift.tokenizer import encoding_fingerprint, eot_id
from minift.utils import minift_home

FORMAT_VERSION = 1


def token_dtype(n_vocab: int) -> type[np.unsignedinteger] | type[np.signedinteger]:
    """uint16 when every id fits, else int32."""
    return np.uint16 if n_vocab <= 1 << 16 else np.int32


def cache_path(name: str, split: str, enc: tiktoken.Encoding) -> pathlib.Path:
    py = ".".join(map(str, sys.version_info[:3]))
    stem = f"{name}-{split}-{encoding_fingerprint(enc)}-py{py}-c{CORPUS_VERSION}-v{FORMAT_VERSION}"
    return minift_home() / "tokens" / f"{enc.name}-{enc.n_vocab}" / f"{stem}.npy"


def encode_documents(texts: list[str], enc: tiktoken.Encoding) -> np.ndarray:
    """``texts`` encoded with ``encode_ordinary`` (special-token text stays plain text), an
    EOT after each, concatenated."""
    eot = eot_id(enc)
    dtype = token_dtype(enc.n_vocab)
    pieces = enc.encode_ordinary_batch(texts, num_threads=2)
    total = sum(len(p) for p in pieces) + len(pieces)
    out = np.empty(total, dtype=dtype)
    pos = 0
    for p in pieces:
        out[pos : pos + len(p)] = p
        out[pos + len(p)] = eot
        pos += len(p) + 1
    return out


def corpus_tokens(name: str, split: str, enc: tiktoken.Encoding) -> np.ndarray:
    """The token stream of ``load_corpus(name, split)`` under ``enc``, cached on disk."""

    def build(tmp: pathlib.Path) -> None:
        tokens = encode_documents([d.text for d in load_corpus(name, split)], enc)
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy"
            np.save(f, tokens)

    return np.load(build_once(cache_path(name, split, enc), build))
