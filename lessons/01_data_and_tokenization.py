# %% [markdown]
# # Lesson 01: data preparation and tokenization
#
# A language model sees numbers, not text. Before any training we need:
#
# 1. **a corpus**: here `pydocs`, the docstrings of the Python standard library that is
#    installed on this machine (real English technical prose, no download needed);
# 2. **cleaning**: Unicode normalisation, whitespace, too-short fragments;
# 3. **deduplication**: exact copies and near-copies (MinHash, Broder 1997);
# 4. **a tokenizer**: byte-level BPE (Sennrich et al. 2016; Radford et al. 2019), trained
#    by minift and run by `tiktoken`;
# 5. **a token stream**: every document encoded, an end-of-text token after each, cached.
#
# Run it as a script (`python lessons/01_data_and_tokenization.py`) or open it as a
# notebook with jupytext. `MINIFT_FAST=1` trains a smaller tokenizer.

# %%
import time

import numpy as np

from minift.claims import claim
from minift.data import corpus as cp
from minift.data.clean import clean_text, is_useful
from minift.data.dedup import jaccard, minhash_signature
from minift.data.encoding import default_encoding
from minift.data.tokens import corpus_tokens
from minift.tokenizer import bpe_merges, eot_id, gpt2_available, gpt2_encoding
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
print(f"fast mode: {fast_mode()}")

# %% [markdown]
# ## 1. Harvest the corpus
# `load_corpus` walks the stdlib with `ast`, takes every module, class and function
# docstring, cleans and deduplicates them, and splits them into train and val **by
# module** (a module's docstrings share phrasing; keeping them on one side makes
# validation measure generalisation to unseen modules). The first call builds and caches
# it (a few seconds), later calls read the cache.

# %%
t = time.perf_counter()
stats = cp.corpus_stats("pydocs")
print(f"pydocs ready in {time.perf_counter() - t:.1f}s")
for split in ("train", "val", "all"):
    s = stats[split]
    print(f"  {split:5s}: {s['documents']:5d} documents, {s['modules']:3d} modules, "
          f"{s['bytes'] / 1e6:.2f} MB")  # fmt: skip
docs = cp.load_corpus("pydocs", "train")
example = next(d for d in docs if d.module == "json" and d.name == "loads")
print(f"\nexample document ({example.module}.{example.name}):\n{example.text[:400]}...")

# %% [markdown]
# ## 2. Cleaning
# NFKC normalisation makes visually identical strings identical bytes (a ligature `ﬁ`
# becomes `fi`, a full-width `Ａ` becomes `A`); tabs become spaces, trailing spaces and
# runs of blank lines go. Fragments such as `"Return self."` teach nothing and repeat
# thousands of times, so `is_useful` drops texts under 24 characters.

# %%
messy = "  ﬁle\tname:  Ａ１\n\n\n\n\nNext paragraph.   \n"
print(repr(messy), "->", repr(clean_text(messy)))
for text in ("Return self.", "Return a new sorted list from the items in iterable."):
    print(f"is_useful({text!r}) = {is_useful(text)}")

# %% [markdown]
# ## 3. Deduplication
# Exact duplicates are found by hashing normalised text. Near-duplicates are pairs whose
# sets of word 3-grams ("shingles") have a Jaccard similarity `|A & B| / |A | B|` of at
# least 0.8. MinHash summarises a set by the minima of 128 random hash functions; two
# signatures agree in each position with probability equal to the Jaccard similarity, and
# LSH banding finds the candidate pairs without comparing all pairs. `json.dump` and
# `json.dumps` are a real near-duplicate pair in the stdlib:

# %%
json_files = [(m, p) for m, p in cp.stdlib_files() if m == "json"]
raw_json = {d.name: d.text for d in cp.harvest("pydocs", json_files)}
a, b = raw_json["dump"], raw_json["dumps"]
sig_a, sig_b = minhash_signature(a), minhash_signature(b)
print(f"exact Jaccard(json.dump, json.dumps) = {jaccard(a, b):.3f}, "
      f"MinHash estimate = {np.mean(sig_a == sig_b):.3f}")  # fmt: skip
p = stats["pipeline"]
print(f"\npipeline: {p['harvested']} docstrings harvested, {p['too_short']} too short, "
      f"{p['exact_duplicates']} exact duplicates, {p['near_duplicates']} near duplicates "
      f"removed -> {p['kept']} kept")  # fmt: skip

# %% [markdown]
# ## 4. Byte-pair encoding, step by step
# Start from bytes (256 symbols, so nothing is ever out of vocabulary). Split the text
# into words with GPT-2's regex (merges never cross a word boundary: a leading space
# belongs to the word after it). Then repeatedly merge the most frequent adjacent pair
# into a new token. Each line below is one merge: the pair, the new token, and how often
# the pair occurred (ties go to the pair with the smaller ids).

# %%
tiny = "the cat sat on the mat; the cat ate the rat. that is that."
pieces = {i: bytes([i]) for i in range(256)}
for i, (left, right, new, count) in enumerate(bpe_merges(tiny, 10)):
    pieces[256 + i] = new
    pair = f"{pieces[left]!r} + {pieces[right]!r}"
    print(f"merge {i}: {pair:16s} -> id {256 + i} {new!r:10s} (pair count {count})")

# %% [markdown]
# ## 5. The real tokenizer
# `default_encoding()` trains the same algorithm on the pydocs train split (4096 tokens; 512
# in fast mode) with incremental pair counts: after a merge only the words containing the
# pair are re-counted, and a heap finds the next best pair. The result is a
# `tiktoken.Encoding`, so encoding runs in Rust. Three special tokens come last.

# %%
t = time.perf_counter()
enc = default_encoding()
print(f"tokenizer {enc.name!r}, {enc.n_vocab} tokens, ready in {time.perf_counter() - t:.1f}s")
print(f"specials: {sorted((enc.encode_single_token(s), s) for s in enc.special_tokens_set)}")
sentence = "Return the number of items in the sequence, or raise ValueError."
ids = enc.encode_ordinary(sentence)
print(f"{len(sentence.encode())} bytes -> {len(ids)} tokens:")
print([enc.decode([i]) for i in ids])
words = [enc.decode([i]) for i in range(256, enc.n_vocab - 3)]
words = [w for w in words if w.strip().isalpha()]
print("longest word tokens:", sorted(words, key=len, reverse=True)[:8])

# %% [markdown]
# ## 6. Compression
# Bytes per token measures how much text a context window holds. On unseen modules (the
# val split) and on Python *source code*, a different domain the tokenizer was not
# trained on:

# %%
val_text = "\n".join(d.text for d in cp.load_corpus("pydocs", "val"))
code_text = "\n".join(d.text for d in cp.load_corpus("pycode", "val"))
encoders = {"bytes (no merges)": None, enc.name: enc}
if gpt2_available():
    encoders["gpt2 (50257 tokens)"] = gpt2_encoding()
else:
    print("(tiktoken's gpt2 files are not cached locally: skipping the GPT-2 comparison)")
print(f"{'tokenizer':24s} {'pydocs val':>12s} {'pycode val':>12s}   bytes per token")
for label, e in encoders.items():
    row = []
    for text in (val_text, code_text):
        n_tokens = len(text.encode()) if e is None else len(e.encode_ordinary(text))
        row.append(len(text.encode()) / n_tokens)
    print(f"{label:24s} {row[0]:12.2f} {row[1]:12.2f}")

# %% [markdown]
# ## 7. The token stream
# Every document is encoded and followed by `<|endoftext|>`, then everything is
# concatenated into one array (uint16: every id is below 65536) and cached as `.npy`.
# Pretraining samples random windows from it.

# %%
train_ids = corpus_tokens("pydocs", "train", enc)
val_ids = corpus_tokens("pydocs", "val", enc)
print(f"train: {len(train_ids):,} tokens ({train_ids.nbytes / 1e6:.2f} MB, {train_ids.dtype}), "
      f"val: {len(val_ids):,} tokens; {int((train_ids == eot_id(enc)).sum())} documents")  # fmt: skip

# %% [markdown]
# ## 8. Plots
# Two questions the plots answer. Do token frequencies follow Zipf's law (Zipf 1949:
# the frequency of a *word* is roughly proportional to 1/rank), now that the units are
# BPE tokens instead of words? And how long are the merged tokens: word pieces, whole
# words, or longer?

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

counts = np.bincount(train_ids, minlength=enc.n_vocab)
freq = np.sort(counts[counts > 0])[::-1]
lengths = [len(enc.decode_single_token_bytes(i)) for i in range(256, enc.n_vocab - 3)]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
ranks = np.arange(1, len(freq) + 1)
# The slope of log(count) against log(rank), fitted away from both ends (the first ten
# ranks are spaces and punctuation, the tail is tokens seen a handful of times).
middle = slice(9, len(freq) // 2)
slope = np.polyfit(np.log(ranks[middle]), np.log(freq[middle]), 1)[0]
print(f"log-log slope of count against rank, ranks 10 to {len(freq) // 2}: {slope:.2f} (Zipf: -1)")
print(f"merged tokens: median {np.median(lengths):.0f} bytes, 90th percentile {np.percentile(lengths, 90):.0f}, longest {max(lengths)}")  # fmt: skip
ax1.loglog(ranks, freq, label="tokens")
ax1.loglog(ranks, freq[0] / ranks, "--", label="Zipf: 1/rank")
ax1.legend(loc="best")
ax1.set(xlabel="rank", ylabel="count in train split", title="token frequency vs rank")
ax2.hist(lengths, bins=range(1, max(lengths) + 2), align="left")
ax2.set(xlabel="bytes per merged token", ylabel="tokens", title=f"{enc.name} vocabulary")
fig.tight_layout()
out = output_dir("lessons", "01") / "tokens.png"
fig.savefig(out, dpi=100)
print(f"plot saved to {out}")

# %% [markdown]
# ## What the numbers say
# Each statement is computed from this run. The first five are facts about the algorithms
# and this corpus, checked on the fast tokenizer (512 tokens) and the real one (4096)
# alike. The last is Zipf's law, an observation about *words* in large corpora, which BPE
# tokens on a 1.6 MB corpus may or may not follow.

# %%
claim(
    "byte-level BPE is lossless: decoding the tokens of the whole pydocs val split gives its text back byte for byte",  # fmt: skip
    enc.decode(enc.encode_ordinary(val_text)) == val_text,
    f"{len(val_text.encode()):,} bytes",
)
claim(
    "the near-duplicate pair is real: json.dump and json.dumps share at least 0.8 of their word 3-grams",  # fmt: skip
    jaccard(a, b) >= 0.8,
    f"Jaccard {jaccard(a, b):.3f}",
)
# Each of the 128 MinHash positions agrees with probability J: the estimate's standard
# error is sqrt(J (1 - J) / 128).
j_est, j_true = float(np.mean(sig_a == sig_b)), jaccard(a, b)
j_se = (j_true * (1 - j_true) / len(sig_a)) ** 0.5
claim(
    f"MinHash estimates the Jaccard similarity within 3 standard errors ({len(sig_a)} hash functions)",  # fmt: skip
    abs(j_est - j_true) <= 3 * j_se,
    f"{j_est:.3f} vs {j_true:.3f}, standard error {j_se:.3f}",
)
# GPT-2's split: a merged token is one word (with its leading space), a piece of one, or
# a run of whitespace; a space inside it would mean a merge crossed a word boundary.
crossing = [
    t for t in (enc.decode_single_token_bytes(i) for i in range(256, enc.n_vocab - 3))
    if t.strip() and b" " in t.strip()
]  # fmt: skip
claim(
    "no merged token spans two words (merges never cross the pre-tokenizer's word boundaries)",
    not crossing,
    f"{len(crossing)} of {len(lengths)} merged tokens hold an inner space; median length {np.median(lengths):.0f} bytes",  # fmt: skip
)
bpt = {
    name: len(text.encode()) / len(enc.encode_ordinary(text))
    for name, text in (("pydocs val", val_text), ("pycode val", code_text))
}
claim(
    "the tokenizer compresses its own domain better: more bytes per token on unseen pydocs modules than on Python source code",  # fmt: skip
    bpt["pydocs val"] > bpt["pycode val"],
    f"{bpt['pydocs val']:.2f} vs {bpt['pycode val']:.2f} bytes per token",
)
claim(
    "token frequencies fall roughly as 1/rank, as Zipf's law has word frequencies do: the fitted log-log slope is within 0.25 of -1",  # fmt: skip
    abs(slope + 1) <= 0.25,
    f"slope {slope:.2f} over ranks 10 to {len(freq) // 2}",
    at_scale=True,
)
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Train `minift.tokenizer.train_bpe` on pycode with 1024 tokens. Does it compress code
#    better than the pydocs tokenizer? Which merges differ first?
# 2. Lower the near-duplicate threshold to 0.5 in `minift.data.dedup.dedup`. What is
#    removed now, and is it really a duplicate?
# 3. Replace GPT2_PATTERN with `r"\S+|\s+"` and retrain. What happens to tokens like
#    `" the"`?
