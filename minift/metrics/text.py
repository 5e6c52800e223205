"""Metrics of generated text against references: exact match and token F1 (SQuAD), BLEU,
chrF, ROUGE-1/2/L.

Every function takes ``predictions`` (a list of strings, one per example) and
``references``: for the corpus metrics (BLEU, chrF) either a list of strings (one
reference each) or a list of lists (several references each, any number >= 1 per
example); for the others, one string or a list of acceptable strings per example.
Lengths must match, and no reference may be empty text where the metric needs words.

- **Exact match and token F1** (Rajpurkar et al., "SQuAD: 100,000+ questions for machine
  comprehension of text", EMNLP 2016): both strings normalised (lowercase, punctuation
  removed, the articles a / an / the removed, whitespace collapsed), then EM = [pred =
  ref] and F1 = 2 P R / (P + R) over the multiset of tokens in common; with several
  references the best one counts. Scores in [0, 1].
- **BLEU** (Papineni et al., "BLEU: a method for automatic evaluation of machine
  translation", ACL 2002), corpus level: clipped n-gram counts and lengths summed over the
  corpus first, then BLEU = BP * exp(sum_n (1/N) log p_n), p_n = matched n-grams /
  hypothesis n-grams, BP = exp(1 - r / c) when the hypotheses' total length c is below
  the closest references' total length r, else 1. Smoothing for a p_n of 0 (Chen and
  Cherry, "A systematic comparison of smoothing techniques for sentence-level BLEU", WMT
  2014). Tokenised as mteval-v13a does (sacrebleu's default), or on whitespace. Score in
  [0, 100], as papers and sacrebleu report it.
- **chrF** (Popović, "chrF: character n-gram F-score for automatic MT evaluation", WMT
  2015): character n-grams (n = 1..6, whitespace removed), precision and recall averaged
  over the orders, then F_beta with beta = 2 (recall weighs more). Score in [0, 100].
  ``word_order=2`` adds word unigrams and bigrams: chrF++ (Popović 2017).
- **ROUGE-N and ROUGE-L** (Lin, "ROUGE: a package for automatic evaluation of summaries",
  2004): n-gram overlap, and the longest common subsequence, each as precision, recall
  and F1 of one prediction against one reference, averaged over the examples. Scores in
  [0, 1]. Tokens: lowercase ASCII letters and digits (no stemming).

The tests check BLEU and chrF against sacrebleu, ROUGE against rouge-score, and EM/F1
against cases worked out by hand.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

SMOOTHING = ("exp", "floor", "add-k", "none")
TOKENIZERS = ("13a", "none")


# ------------------------------------------------------------------------- input checks
def _as_texts(values, name: str) -> list[str]:
    if isinstance(values, str):
        raise ValueError(f"{name} must be a list of strings (one per example), got one string")
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty: a metric needs at least one example")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ValueError(f"{name}[{i}] is {type(v).__name__}, not a string")
    return values


def _as_reference_sets(references, n: int) -> list[list[str]]:
    """One list of reference strings per example (a bare string is a list of one)."""
    if isinstance(references, str):
        raise ValueError("references must be a list (one per example), got one string")
    refs = list(references)
    if len(refs) != n:
        raise ValueError(
            f"predictions and references have different lengths ({n} and {len(refs)}): "
            "each prediction must pair with its reference(s)"
        )
    out = []
    for i, r in enumerate(refs):
        if not isinstance(r, (str, list, tuple)):
            raise ValueError(f"references[{i}] must be a string or a list of strings")
        group = [r] if isinstance(r, str) else list(r)
        if not group:
            raise ValueError(f"references[{i}] is an empty list: give at least one reference")
        if not all(isinstance(x, str) for x in group):
            raise ValueError(f"references[{i}] must be a string or a list of strings")
        out.append(group)
    return out


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


# ---------------------------------------------------------------- exact match, token F1
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation, drop articles, one space."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:  # an empty answer is right only against an empty answer
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


def exact_match_scores(predictions, references) -> list[float]:
    """Per example: 1.0 when the normalised prediction equals a normalised reference."""
    preds = _as_texts(predictions, "predictions")
    refs = _as_reference_sets(references, len(preds))
    return [
        float(any(normalize_answer(p) == normalize_answer(r) for r in group))
        for p, group in zip(preds, refs)
    ]


def token_f1_scores(predictions, references) -> list[float]:
    """Per example: the best token F1 of the prediction against any of its references."""
    preds = _as_texts(predictions, "predictions")
    refs = _as_reference_sets(references, len(preds))
    return [max(_token_f1(p, r) for r in group) for p, group in zip(preds, refs)]


def exact_match(predictions, references) -> float:
    """The share of predictions that match a reference after SQuAD normalisation."""
    scores = exact_match_scores(predictions, references)
    return sum(scores) / len(scores)


def token_f1(predictions, references) -> float:
    """The mean over examples of SQuAD's token-level F1 (best reference each)."""
    scores = token_f1_scores(predictions, references)
    return sum(scores) / len(scores)


# ------------------------------------------------------------------------------- BLEU
# The tokenisation rules of NIST's mteval-v13a.pl (the WMT standard; sacrebleu's "13a"),
# written as regular expressions: split off every ASCII symbol except . , - and ', then
# periods and commas unless between digits, then a dash after a digit.
_13A_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
)
_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))


def tokenize_13a(text: str) -> list[str]:
    """The tokens mteval-v13a (the WMT standard, sacrebleu's default) makes of a line."""
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in _ENTITIES:
        text = text.replace(entity, char)
    text = f" {text} "
    for pattern, replacement in _13A_RULES:
        text = pattern.sub(replacement, text)
    return text.split()


@dataclass(frozen=True)
class BLEUScore:
    """Corpus BLEU and the statistics it is made of."""

    score: float  # 0..100
    precisions: tuple[float, ...]  # p_1..p_N in percent, after smoothing
    brevity_penalty: float
    hyp_len: int
    ref_len: int

    def __str__(self) -> str:
        ps = "/".join(f"{p:.1f}" for p in self.precisions)
        return (
            f"BLEU = {self.score:.2f} {ps} (BP = {self.brevity_penalty:.3f} "
            f"ratio = {self.hyp_len / max(self.ref_len, 1):.3f} hyp_len = {self.hyp_len} "
            f"ref_len = {self.ref_len})"
        )


def bleu_statistics(
    prediction: str, references: Sequence[str], max_order: int = 4, tokenize: str = "13a"
) -> list[int]:
    """One sentence's sufficient statistics: [c, r, matched_1..N, total_1..N].

    c is the hypothesis length, r the length of the closest reference (the shorter one on
    a tie), matched_n the hypothesis n-grams clipped to the most times any one reference
    holds them. Summed over sentences they give corpus BLEU (so a bootstrap over
    sentences resamples these rows).
    """
    split = tokenize_13a if tokenize == "13a" else str.split
    hyp = split(prediction)
    refs = [split(r) for r in references]
    ref_len = min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    matched, total = [], []
    for n in range(1, max_order + 1):
        counts = _ngrams(hyp, n)
        most: Counter = Counter()
        for r in refs:
            most |= _ngrams(r, n)  # elementwise max over the references
        matched.append(sum(min(c, most[g]) for g, c in counts.items()))
        total.append(max(0, len(hyp) - n + 1))
    return [len(hyp), ref_len, *matched, *total]


def bleu_from_statistics(
    stats: Sequence[int], max_order: int = 4, smooth: str = "exp", smooth_value: float | None = None
) -> BLEUScore:
    """Corpus BLEU from summed :func:`bleu_statistics`.

    Smoothing of an order n whose matched count is 0 (Chen and Cherry 2014):
      - "none": no smoothing, so BLEU is 0 (log 0);
      - "floor": p_n = smooth_value / total_n (default 0.1; their method 1);
      - "add-k": for n >= 2, matched_n and total_n both + smooth_value (default 1; method 2);
      - "exp": the k-th order with no match gets p_n = 1 / (2^k total_n) (method 3, the
        NIST script's; sacrebleu's default).
    With no n-gram matched at any order BLEU is 0 whatever the smoothing. An order with no
    hypothesis n-gram at all (every sentence shorter than n) ends the product there: its
    p_n stays 0, and BLEU is 0.
    """
    if smooth not in SMOOTHING:
        raise ValueError(f"smooth must be one of {SMOOTHING}, got {smooth!r}")
    if smooth_value is None:
        smooth_value = {"floor": 0.1, "add-k": 1.0}.get(smooth, 0.0)
    hyp_len, ref_len = stats[0], stats[1]
    matched = [float(x) for x in stats[2 : 2 + max_order]]
    total = [float(x) for x in stats[2 + max_order : 2 + 2 * max_order]]
    precisions = [0.0] * max_order
    if hyp_len < ref_len:
        bp = math.exp(1.0 - ref_len / hyp_len) if hyp_len > 0 else 0.0
    else:
        bp = 1.0
    if not any(matched):  # smoothing fills gaps; it gives no credit for no match at all
        return BLEUScore(0.0, tuple(precisions), bp, int(hyp_len), int(ref_len))
    unmatched = 0
    for i in range(max_order):
        if smooth == "add-k" and i > 0:
            matched[i] += smooth_value
            total[i] += smooth_value
        if total[i] == 0:
            break
        if matched[i] > 0:
            precisions[i] = 100.0 * matched[i] / total[i]
        elif smooth == "exp":
            unmatched += 1
            precisions[i] = 100.0 / (2**unmatched * total[i])
        elif smooth == "floor":
            precisions[i] = 100.0 * smooth_value / total[i]
    if min(precisions) <= 0.0:
        score = 0.0
    else:
        score = bp * math.exp(sum(math.log(p) for p in precisions) / max_order)
    return BLEUScore(score, tuple(precisions), bp, int(hyp_len), int(ref_len))


def bleu(
    predictions,
    references,
    *,
    max_order: int = 4,
    smooth: str = "exp",
    smooth_value: float | None = None,
    tokenize: str = "13a",
    lowercase: bool = False,
) -> BLEUScore:
    """Corpus-level BLEU of ``predictions`` against ``references`` (see the module doc)."""
    if tokenize not in TOKENIZERS:
        raise ValueError(f"tokenize must be one of {TOKENIZERS}, got {tokenize!r}")
    if smooth not in SMOOTHING:
        raise ValueError(f"smooth must be one of {SMOOTHING}, got {smooth!r}")
    if max_order < 1:
        raise ValueError(f"max_order must be at least 1, got {max_order}")
    preds = _as_texts(predictions, "predictions")
    refs = _as_reference_sets(references, len(preds))
    if lowercase:
        preds = [p.lower() for p in preds]
        refs = [[r.lower() for r in group] for group in refs]
    summed = [0] * (2 + 2 * max_order)
    for p, group in zip(preds, refs):
        for j, x in enumerate(bleu_statistics(p, group, max_order, tokenize)):
            summed[j] += x
    return bleu_from_statistics(summed, max_order, smooth, smooth_value)


# ------------------------------------------------------------------------------- chrF
def _char_ngrams(text: str, order: int) -> list[Counter]:
    text = "".join(text.split())  # chrF ignores whitespace
    return [Counter(text[i : i + n] for i in range(len(text) - n + 1)) for n in range(1, order + 1)]


def chrf_words(text: str) -> list[str]:
    """chrF++'s words: split on whitespace, then one ASCII punctuation mark split off the
    end of a word (or, when none ends it, off its start); one-character words stay whole."""
    out = []
    for w in text.split():
        if len(w) > 1 and w[-1] in _PUNCTUATION:
            out += [w[:-1], w[-1]]
        elif len(w) > 1 and w[0] in _PUNCTUATION:
            out += [w[0], w[1:]]
        else:
            out.append(w)
    return out


def _chrf_ngrams(text: str, order: int, word_order: int) -> list[Counter]:
    words = chrf_words(text) if word_order else []
    return _char_ngrams(text, order) + [_ngrams(words, n) for n in range(1, word_order + 1)]


def _chrf_from_statistics(stats: Sequence[float], order: int, beta: float) -> float:
    """F_beta of the precision and recall averaged over the orders that have n-grams on
    both sides (an order with none, in a short text, is left out of the average)."""
    precision = recall = 0.0
    orders = 0
    for i in range(order):
        n_hyp, n_ref, n_match = stats[3 * i : 3 * i + 3]
        if n_hyp > 0 and n_ref > 0:
            precision += n_match / n_hyp
            recall += n_match / n_ref
            orders += 1
    if orders == 0:
        return 0.0
    precision, recall = precision / orders, recall / orders
    b2 = beta * beta
    if precision + recall == 0:
        return 0.0
    return 100.0 * (1 + b2) * precision * recall / (b2 * precision + recall)


def chrf(
    predictions, references, *, order: int = 6, beta: float = 2.0, word_order: int = 0
) -> float:
    """Corpus chrF: per sentence, the counts of the reference with the best chrF; counts
    summed over the corpus; then F_beta of the precision and recall averaged over the
    orders (0..100). ``word_order=2`` adds word 1- and 2-grams to the average: chrF++
    (Popović, "chrF++: words helping character n-grams", WMT 2017)."""
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    if word_order < 0:
        raise ValueError(f"word_order must be >= 0, got {word_order}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    preds = _as_texts(predictions, "predictions")
    refs = _as_reference_sets(references, len(preds))
    orders = order + word_order
    summed = [0.0] * (3 * orders)
    for p, group in zip(preds, refs):
        hyp = _chrf_ngrams(p, order, word_order)
        best, best_f = None, -1.0
        for r in group:
            ref = _chrf_ngrams(r, order, word_order)
            stats = []
            for h, g in zip(hyp, ref):
                # A reference too short for order n leaves the hypothesis's n-grams
                # uncounted (chrF++.py and sacrebleu do the same): no precision at n.
                n_hyp = sum(h.values()) if g else 0
                stats += [n_hyp, sum(g.values()), sum((h & g).values())]
            f = _chrf_from_statistics(stats, orders, beta)
            if f > best_f:
                best, best_f = stats, f
        summed = [a + b for a, b in zip(summed, best)]
    return _chrf_from_statistics(summed, orders, beta)


# ------------------------------------------------------------------------------ ROUGE
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 of one prediction against one reference."""

    precision: float
    recall: float
    fmeasure: float


def rouge_tokens(text: str) -> list[str]:
    """ROUGE's tokens: lowercase, every run of characters other than a-z and 0-9 a break."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _prf(overlap: int, n_pred: int, n_ref: int) -> PRF:
    p = overlap / n_pred if n_pred else 0.0
    r = overlap / n_ref if n_ref else 0.0
    return PRF(p, r, 2 * p * r / (p + r) if p + r > 0 else 0.0)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """The length of the longest common subsequence, by dynamic programming (O(|a| |b|))."""
    previous = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b):
            row.append(previous[j] + 1 if x == y else max(previous[j + 1], row[j]))
        previous = row
    return previous[-1]


def rouge_pair(prediction: str, reference: str, rouge_type: str = "rougeL") -> PRF:
    """ROUGE-N (``rouge1``, ``rouge2``, ...) or ROUGE-L of one prediction and one reference.

    ROUGE-N: overlap = sum over n-grams of min(count in prediction, count in reference);
    precision = overlap / prediction n-grams, recall = overlap / reference n-grams.
    ROUGE-L: LCS = the longest common subsequence of the two token lists; precision =
    LCS / prediction tokens, recall = LCS / reference tokens. F1 = 2 P R / (P + R).
    """
    pred, ref = rouge_tokens(prediction), rouge_tokens(reference)
    if rouge_type == "rougeL":
        return _prf(lcs_length(pred, ref), len(pred), len(ref))
    match = re.fullmatch(r"rouge([1-9])", rouge_type)
    if not match:
        raise ValueError(f"rouge_type must be one of {ROUGE_TYPES} (or rouge3..rouge9), got {rouge_type!r}")  # fmt: skip
    n = int(match.group(1))
    p, r = _ngrams(pred, n), _ngrams(ref, n)
    return _prf(sum((p & r).values()), sum(p.values()), sum(r.values()))


def rouge(predictions, references, rouge_types: Sequence[str] = ROUGE_TYPES) -> dict[str, PRF]:
    """Each ROUGE type's precision, recall and F1, averaged over the examples (one
    reference each)."""
    preds = _as_texts(predictions, "predictions")
    refs = _as_texts(references, "references")
    if len(preds) != len(refs):
        raise ValueError(
            f"predictions and references have different lengths ({len(preds)} and {len(refs)})"
        )
    out = {}
    for t in rouge_types:
        pairs = [rouge_pair(p, r, t) for p, r in zip(preds, refs)]
        out[t] = PRF(*(sum(getattr(x, f) for x in pairs) / len(pairs) for f in PRF.__dataclass_fields__))  # fmt: skip
    return out


def bleu_interval(
    predictions,
    references,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    **options,
):
    """A percentile bootstrap interval for corpus BLEU (Koehn, "Statistical significance
    tests for machine translation evaluation", EMNLP 2004): resample the *sentences*, sum
    their statistics, recompute BLEU. Corpus BLEU is not a mean of sentence scores, so the
    sentences' sufficient statistics are resampled, not per-sentence BLEUs. ``options`` are
    :func:`bleu`'s (max_order, smooth, smooth_value, tokenize, lowercase)."""
    import numpy as np

    from minift.metrics.intervals import bootstrap_ci

    score = bleu(predictions, references, **options)  # checks every input and option
    max_order = options.get("max_order", 4)
    split = {k: options[k] for k in ("smooth", "smooth_value") if k in options}
    preds, refs = list(predictions), _as_reference_sets(references, len(predictions))
    if options.get("lowercase"):
        preds = [p.lower() for p in preds]
        refs = [[r.lower() for r in group] for group in refs]
    tok = options.get("tokenize", "13a")
    rows = np.array([bleu_statistics(p, g, max_order, tok) for p, g in zip(preds, refs)])

    def corpus(idx):
        return bleu_from_statistics(rows[np.asarray(idx, dtype=np.int64)].sum(0), max_order, **split).score  # fmt: skip

    del score  # computed first for its checks; the interval's value is the same BLEU
    return bootstrap_ci(np.arange(len(rows)), corpus, n_resamples=n_resamples, confidence=confidence, seed=seed)  # fmt: skip
