"""Byte-level BPE: train a vocabulary in Python, encode with tiktoken.

Byte-pair encoding (Sennrich, Haddow and Birch, 2016) starts from single symbols and
repeatedly replaces the most frequent adjacent pair with a new symbol. GPT-2 (Radford et
al., 2019) made it *byte-level*: the 256 byte values are the base symbols, so every string
is encodable and nothing is ever unknown, and a regex first splits text into "words" (runs
of letters, digits, punctuation, whitespace) so that merges never cross those boundaries.

Training here is exact but incremental. With word counts ``c(w)`` and each word held as a
list of symbols, the count of a pair is ``n(a, b) = sum_w c(w) * occ(a, b, w)``. A merge of
``(a, b)`` only changes the words that contain ``(a, b)``, so we keep ``pair -> words``
and update the counts of just those words, instead of recounting the corpus for every
merge. The best pair comes from a max-heap with lazy deletion: every count change pushes a
fresh entry, and an entry popped with a stale count is skipped.

The result is exported as a ``tiktoken.Encoding``: the merge order becomes the rank of each
token's bytes, which is exactly what tiktoken's (Rust) encoder needs, so encoding runs at
tiktoken speed. The vocabulary is laid out as::

    ids 0..255                  the single bytes (id == byte value)
    ids 256..vocab_size-4       merged tokens, in merge order
    vocab_size-3, -2, -1        EOT, PAD, MASK (the special tokens)
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import os
import pathlib
from collections import Counter, defaultdict
from collections.abc import Iterable

import regex
import tiktoken
from tqdm import tqdm

from minift.io import atomic_path

EOT = "<|endoftext|>"
PAD = "<|pad|>"
MASK = "<|mask|>"
SPECIAL_TOKENS = (EOT, PAD, MASK)

# GPT-2's pre-split regex as tiktoken writes it (possessive quantifiers ``++`` for speed):
# contractions, an optional space + letters, an optional space + digits, an optional space +
# other symbols, and whitespace (trailing whitespace stays apart from the next word).
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

FORMAT_VERSION = 1


def _word_counts(texts: str | Iterable[str], pattern: str) -> Counter[bytes]:
    """Pre-split every text with ``pattern`` and count the UTF-8 bytes of each word."""
    if isinstance(texts, str):
        texts = [texts]
    split = regex.compile(pattern)
    counts: Counter[bytes] = Counter()
    for text in texts:
        counts.update(split.findall(text))
    return Counter({w.encode("utf-8"): c for w, c in counts.items()})


def bpe_merges(
    texts: str | Iterable[str],
    n_merges: int,
    pattern: str = GPT2_PATTERN,
    progress: bool = False,
) -> list[tuple[int, int, bytes, int]]:
    """Learn up to ``n_merges`` merges; return ``(left_id, right_id, new_bytes, count)``.

    Ties between pairs with the same count go to the smallest ``(left_id, right_id)``, so
    training is deterministic. A merge whose bytes already are a token (``"a"+"bc"`` after
    ``"ab"+"c"``) reuses that token's id instead of adding a duplicate, and does not count
    towards ``n_merges`` because it adds nothing to the vocabulary. (A safeguard: greedy
    left-to-right merging makes this rare; it does not happen on pydocs.)
    """
    counts = _word_counts(texts, pattern)
    words = [list(w) for w in counts]  # each word as a list of token ids (bytes to start)
    freq = list(counts.values())
    vocab: list[bytes] = [bytes([i]) for i in range(256)]
    by_bytes = {b: i for i, b in enumerate(vocab)}

    pair_count: dict[tuple[int, int], int] = defaultdict(int)
    pair_words: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_count[pair] += freq[wi]
            pair_words[pair].add(wi)
    # Max-heap via negated counts; the pair itself breaks ties (smallest first).
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int, bytes, int]] = []
    bar = tqdm(total=n_merges, desc="bpe merges", disable=not progress)
    while len(vocab) - 256 < n_merges and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:
            continue  # stale entry: the count changed after it was pushed
        a, b = pair
        new_bytes = vocab[a] + vocab[b]
        new_id = by_bytes.get(new_bytes)
        if new_id is None:
            new_id = by_bytes[new_bytes] = len(vocab)
            vocab.append(new_bytes)
            bar.update(1)
        merges.append((a, b, new_bytes, -neg))

        # Only the words that contain (a, b) change: take their old pairs out of the
        # counts and put their new pairs in. pair_words may keep words that no longer hold
        # a pair; merging such a word changes nothing, so the counts stay exact.
        changed: set[tuple[int, int]] = set()
        for wi in pair_words.pop(pair):
            old, c = words[wi], freq[wi]
            words[wi] = new = _merge_word(old, a, b, new_id)
            for p in zip(old, old[1:]):
                pair_count[p] -= c
                changed.add(p)
            for p in zip(new, new[1:]):
                pair_count[p] += c
                changed.add(p)
                pair_words[p].add(wi)
        del pair_count[pair]
        for p in changed - {pair}:
            if pair_count[p] > 0:
                heapq.heappush(heap, (-pair_count[p], p))
    bar.close()
    return merges


def _merge_word(word: list[int], a: int, b: int, new_id: int) -> list[int]:
    """Replace each (a, b) in ``word`` left to right, non-overlapping ("aaa" -> "aa" "a")."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_bpe(
    texts: str | Iterable[str],
    vocab_size: int,
    name: str = "minift-bpe",
    pattern: str = GPT2_PATTERN,
    progress: bool = False,
) -> tiktoken.Encoding:
    """Train a byte-level BPE with ``vocab_size`` tokens in all and return its encoding.

    ``vocab_size`` counts the 256 bytes, the merges and the 3 special tokens, so
    ``enc.n_vocab == vocab_size``. Raises ValueError when ``vocab_size < 259`` or when the
    text is too small to learn ``vocab_size - 259`` distinct merges.
    """
    n_special = len(SPECIAL_TOKENS)
    if vocab_size < 256 + n_special:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE needs 256 byte tokens "
            f"plus {n_special} special tokens, so vocab_size must be at least {256 + n_special}"
        )
    n_merges = vocab_size - 256 - n_special
    merges = bpe_merges(texts, n_merges, pattern=pattern, progress=progress)
    ranks = {bytes([i]): i for i in range(256)}
    for _, _, new_bytes, _ in merges:
        ranks.setdefault(new_bytes, len(ranks))
    if len(ranks) < 256 + n_merges:
        learned = len(ranks) - 256
        raise ValueError(
            f"the training text only supports {learned} merges but vocab_size={vocab_size} "
            f"needs {n_merges}: give more text or use vocab_size <= {256 + learned + n_special}"
        )
    special = {tok: 256 + n_merges + i for i, tok in enumerate(SPECIAL_TOKENS)}
    return tiktoken.Encoding(
        name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special,
        explicit_n_vocab=vocab_size,
    )  # fmt: skip


def _state(enc: tiktoken.Encoding) -> dict:
    # tiktoken's pickle state is the one documented way to read an encoding's parts back.
    return enc.__getstate__()


def encoding_fingerprint(enc: tiktoken.Encoding) -> str:
    """A short stable hash of the regex, ranked token bytes and special tokens of ``enc``
    (cache keys: two encodings that share a name never share cached tokens)."""
    state = _state(enc)
    h = hashlib.sha1(state["pat_str"].encode("utf-8"))
    for tok, i in sorted(state["special_tokens"].items()):
        h.update(f"{tok}={i};".encode())
    for b, r in sorted(state["mergeable_ranks"].items(), key=lambda kv: kv[1]):
        h.update(r.to_bytes(4, "little") + len(b).to_bytes(2, "little") + b)
    return h.hexdigest()[:12]


def save_encoding(enc: tiktoken.Encoding, path: str | os.PathLike) -> None:
    """Write ``enc`` as JSON: name, regex, special tokens and base64 token bytes by rank."""
    state = _state(enc)
    ranks = state["mergeable_ranks"]
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    obj = {
        "format": "minift-encoding",
        "version": FORMAT_VERSION,
        "name": state["name"],
        "pat_str": state["pat_str"],
        "special_tokens": state["special_tokens"],
        "ranks": [[base64.b64encode(b).decode("ascii"), r] for b, r in by_rank],
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj) + "\n")


def load_encoding(path: str | os.PathLike) -> tiktoken.Encoding:
    """Read an encoding written by :func:`save_encoding`."""
    path = pathlib.Path(path)
    try:
        obj = json.loads(path.read_text())
        if obj.get("format") != "minift-encoding":
            raise ValueError("not a minift encoding file")
        ranks = {base64.b64decode(b): int(r) for b, r in obj["ranks"]}
        return tiktoken.Encoding(
            obj["name"], pat_str=obj["pat_str"], mergeable_ranks=ranks,
            special_tokens={k: int(v) for k, v in obj["special_tokens"].items()},
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot load encoding from {path}: {e}") from e


def gpt2_encoding() -> tiktoken.Encoding:
    """GPT-2's own encoding (50257 tokens) from tiktoken, for real GPT-2 checkpoints.

    tiktoken fetches its two files from the network once and caches them in
    ``$TIKTOKEN_CACHE_DIR``; minift never downloads at run time, so without them this fails.
    """
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:
        raise RuntimeError(
            "tiktoken's 'gpt2' encoding is not available offline. Fetch it once with network "
            "access (python -c \"import tiktoken; tiktoken.get_encoding('gpt2')\") or copy its "
            "files (vocab.bpe and encoder.json, cached under their URL's sha1) into a folder and "
            f"point TIKTOKEN_CACHE_DIR at it. Cause: {type(e).__name__}: {e}"
        ) from e


def gpt2_available() -> bool:
    """True when tiktoken's gpt2 files are already cached locally (no network needed)."""
    import tempfile

    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    cache = cache or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    keys = [hashlib.sha1((base + f).encode()).hexdigest() for f in ("vocab.bpe", "encoder.json")]
    return all(os.path.exists(os.path.join(cache, k)) for k in keys)


def special_id(enc: tiktoken.Encoding, token: str) -> int:
    """The id of special ``token`` in ``enc``; ValueError listing the specials it has."""
    if token not in enc.special_tokens_set:
        raise ValueError(
            f"encoding {enc.name!r} has no special token {token!r}; "
            f"it has {sorted(enc.special_tokens_set)}"
        )
    return enc.encode_single_token(token)


def eot_id(enc: tiktoken.Encoding) -> int:
    """End-of-text id: separates documents in the token stream."""
    return special_id(enc, EOT)


def pad_id(enc: tiktoken.Encoding) -> int:
    """Padding id: ``<|pad|>``, or EOT for encodings without one (GPT-2's, as HF does)."""
    if PAD in enc.special_tokens_set:
        return special_id(enc, PAD)
    return eot_id(enc)


def mask_id(enc: tiktoken.Encoding) -> int:
    """``<|mask|>`` id for the masked-language-model objective."""
    if MASK not in enc.special_tokens_set:
        raise ValueError(
            f"encoding {enc.name!r} has no {MASK} token, which masked-language modelling "
            "needs; use minift's own tokenizer (minift.tokenizer.default_encoding())"
        )
    return special_id(enc, MASK)
