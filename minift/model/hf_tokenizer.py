"""GPT-2's tokenizer files <-> a tiktoken Encoding, both ways.

GPT-2's tokenizer files hold the same byte-level BPE as a tiktoken Encoding
(minift.tokenizer), written differently. vocab.json maps each token to its id, the
token's bytes written as printable characters (:func:`bytes_to_unicode`: a space is "Ġ", a
newline "Ċ"); merges.txt lists the merges "a b" in the order they were learned, and
tokenizer.json (the tokenizers library's format) holds both. tiktoken needs only ranks:
it repeatedly merges the adjacent pair whose concatenation has the lowest rank, and a
token's rank is its id. The two agree when the ids of merged tokens grow with the merge
order, as they do when BPE training appends each new token (GPT-2, the tokenizers
library, minift): merge i is then the pair whose concatenation has rank 256 + i.

- :func:`encoding_from_hf_folder`: a Hugging Face GPT-2 folder brings its own tokenizer,
  read offline (tiktoken's own "gpt2" encoding would be downloaded).
- :func:`hf_tokenizer_files`: the inverse, for ``minift export --hf``. A token's merge is
  found by running tiktoken's BPE on its bytes with only lower-ranked tokens allowed (as
  transformers' tiktoken converter does): what is left is the two halves it merges.

Both directions are tested against transformers' GPT2TokenizerFast. minift's regex
(GPT2_PATTERN, tiktoken's spelling with possessive quantifiers and a separate rule for
trailing whitespace) splits every text as GPT-2's original regex does.
"""

from __future__ import annotations

import json
import os
import pathlib

import tiktoken

from minift.io import atomic_path
from minift.tokenizer import EOT, GPT2_PATTERN, MASK, PAD

GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
HF_FILES = "vocab.json and merges.txt (GPT-2's tokenizer files) or tokenizer.json"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character: printable Latin-1 bytes stand
    for themselves, the others (space, control bytes) are shifted to chr(256 + n)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return chars


def _merge_parts(ranks: dict[bytes, int], token: bytes) -> list[bytes]:
    """tiktoken's BPE on ``token``'s bytes using only tokens ranked below it: for a token
    that merging can reach, the last merge's two halves."""
    rank = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        pairs = [(ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        best, i = min(pairs)
        if best >= rank:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def hf_vocab_and_merges(enc: tiktoken.Encoding) -> tuple[dict[str, int], list[str]]:
    """``enc`` as GPT-2's vocab.json (token -> id, special tokens included) and the lines
    of merges.txt. Refuses an encoding that GPT-2's pre-tokenizer or merges cannot express."""
    state = enc.__getstate__()  # the documented way to read its parts
    if state["pat_str"] not in (GPT2_PATTERN, GPT2_REGEX):
        raise ValueError(
            f"encoding {enc.name!r} splits text with its own regex {state['pat_str']!r}; "
            "GPT-2's vocab.json + merges.txt imply GPT-2's regex, so it cannot be exported"
        )
    ranks: dict[bytes, int] = state["mergeable_ranks"]
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(
            f"encoding {enc.name!r} is not byte-level: no token for bytes {missing[:8]}"
        )
    chars = bytes_to_unicode()
    vocab = {"".join(chars[b] for b in tok): r for tok, r in ranks.items()}
    merges = []
    for tok, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) == 1:
            continue
        parts = _merge_parts(ranks, tok)
        if len(parts) != 2:
            raise ValueError(
                f"token {tok!r} of {enc.name!r} is not reachable by merging lower-ranked tokens"
            )
        merges.append(" ".join("".join(chars[b] for b in p) for p in parts))
    vocab.update(state["special_tokens"])
    return vocab, merges


def hf_tokenizer_files(enc: tiktoken.Encoding, max_length: int) -> dict[str, str]:
    """The text of vocab.json, merges.txt and tokenizer_config.json (the special tokens)
    from which transformers' GPT2Tokenizer(Fast) loads ``enc``."""
    vocab, merges = hf_vocab_and_merges(enc)
    specials = enc.special_tokens_set
    config: dict = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": max_length}
    config["add_prefix_space"] = False
    if EOT in specials:
        config.update(bos_token=EOT, eos_token=EOT, unk_token=EOT)
    if PAD in specials:
        config["pad_token"] = PAD
    if MASK in specials:
        config["mask_token"] = MASK
    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(m + "\n" for m in merges),
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
    }


def save_hf_tokenizer(enc: tiktoken.Encoding, folder: str | os.PathLike, max_length: int) -> None:
    """Write ``enc`` into ``folder`` as GPT-2's tokenizer files (hf_tokenizer_files)."""
    for name, text in hf_tokenizer_files(enc, max_length).items():
        with atomic_path(pathlib.Path(folder) / name) as tmp:
            tmp.write_text(text, encoding="utf-8")


def encoding_from_hf_folder(folder: str | os.PathLike) -> tiktoken.Encoding:
    """The tiktoken Encoding of a Hugging Face byte-level BPE tokenizer in ``folder``
    (vocab.json + merges.txt, or tokenizer.json), so a GPT-2 checkpoint on disk brings its
    own tokenizer and nothing is downloaded. Tokens that are neither single bytes nor
    merge results (``<|endoftext|>``) become special tokens."""
    folder = pathlib.Path(folder)
    try:
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
            lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
            merges = [ln.split(" ") for ln in lines if ln and not ln.startswith("#version")]
            added = _added_tokens(folder)
        elif (folder / "tokenizer.json").is_file():
            vocab, merges, added = _read_tokenizer_json(folder / "tokenizer.json")
        else:
            raise FileNotFoundError(f"{folder} holds no tokenizer: it needs {HF_FILES}")
        return _encoding_from_bpe(f"hf-{folder.name}", vocab, merges, added)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"cannot read the tokenizer in {folder}: {type(e).__name__}: {e}") from e


def _added_tokens(folder: pathlib.Path) -> dict[str, int]:
    """Tokens registered beside vocab.json (added_tokens.json, tokenizer_config.json)."""
    added = {}
    if (folder / "added_tokens.json").is_file():
        added.update(json.loads((folder / "added_tokens.json").read_text(encoding="utf-8")))
    if (folder / "tokenizer_config.json").is_file():
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        for i, tok in (config.get("added_tokens_decoder") or {}).items():
            added[tok["content"]] = int(i)
    return added


def _read_tokenizer_json(path: pathlib.Path) -> tuple[dict, list, dict]:
    """vocab, merges and added tokens of a tokenizer.json, refusing what tiktoken with
    GPT-2's regex would encode differently."""
    obj = json.loads(path.read_text(encoding="utf-8"))
    model, pre = obj["model"], obj.get("pre_tokenizer") or {}
    problems = []
    if model.get("type") != "BPE":
        problems.append(f"model type {model.get('type')!r} (only byte-level BPE)")
    if obj.get("normalizer"):
        problems.append(f"a normalizer ({obj['normalizer'].get('type')})")
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        problems.append(f"pre_tokenizer {pre.get('type')!r} (GPT-2's is ByteLevel)")
    elif pre.get("add_prefix_space"):
        problems.append("add_prefix_space=true")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            problems.append(f"{key}={model[key]!r}")
    if problems:
        raise ValueError(f"{path} cannot be read as GPT-2's tokenizer: " + "; ".join(problems))
    merges = [m.split(" ") if isinstance(m, str) else list(m) for m in model["merges"]]
    added = {t["content"]: int(t["id"]) for t in obj.get("added_tokens", [])}
    return model["vocab"], merges, added


def _encoding_from_bpe(name: str, vocab: dict, merges: list, added: dict) -> tiktoken.Encoding:
    decode = {c: b for b, c in bytes_to_unicode().items()}
    as_bytes = {
        tok: bytes(decode[c] for c in tok) for tok in vocab if all(c in decode for c in tok)
    }
    single = {tok for tok, b in as_bytes.items() if len(b) == 1}
    if len({as_bytes[t] for t in single}) < 256:
        raise ValueError(
            f"{name}: the vocabulary lacks some of the 256 byte tokens; not a byte-level BPE"
        )
    ranks = {as_bytes[tok]: int(vocab[tok]) for tok in single}
    last = -1
    for i, pair in enumerate(merges):
        if len(pair) != 2:
            raise ValueError(f"{name}: merge {i + 1} is {' '.join(pair)!r}, not two tokens")
        tok = pair[0] + pair[1]
        if tok not in vocab or tok not in as_bytes or any(p not in vocab for p in pair):
            raise ValueError(
                f"{name}: merge {i + 1} ({' '.join(pair)}) names a token not in the vocabulary"
            )
        if int(vocab[tok]) <= last:
            raise ValueError(
                f"{name}: merge {i + 1} makes token id {vocab[tok]} after id {last}; tiktoken "
                "ranks merges by token id, so the ids of merged tokens must follow the merge order"
            )
        last = ranks[as_bytes[tok]] = int(vocab[tok])
    ids = set(ranks.values())
    special = {tok: int(i) for tok, i in {**vocab, **added}.items() if int(i) not in ids}
    return tiktoken.Encoding(
        name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=special
    )
