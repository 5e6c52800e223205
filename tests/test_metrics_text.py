"""minift.metrics.text: BLEU and chrF against sacrebleu, ROUGE against rouge-score (both
test-only dependencies), exact match and token F1 against cases worked out by hand."""

import random

import pytest

from minift.metrics import text as T

sacrebleu = pytest.importorskip("sacrebleu")
rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

# Words, punctuation, numbers, entities, a non-ASCII word: every rule of the tokenisers.
VOCAB = "the cat sat on mat a dog ran fast , . 3.5 it's (x) hello-world 10-20 Ünï &amp; x".split()


def sentence(rng: random.Random, longest: int = 12) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(0, longest)))


def corpus(seed: int):
    """n hypotheses with k references each; empty lines included."""
    rng = random.Random(seed)
    n, k = rng.randint(1, 7), rng.randint(1, 3)
    hyps = [sentence(rng) for _ in range(n)]
    streams = [[sentence(rng) for _ in range(n)] for _ in range(k)]  # sacrebleu's layout
    per_example = [[s[i] for s in streams] for i in range(n)]  # minift's layout
    return hyps, streams, per_example


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("smooth", ["exp", "floor", "add-k", "none"])
@pytest.mark.parametrize("tokenize", ["13a", "none"])
def test_bleu_matches_sacrebleu(seed, smooth, tokenize):
    hyps, streams, refs = corpus(seed)
    theirs = sacrebleu.corpus_bleu(hyps, streams, smooth_method=smooth, tokenize=tokenize)
    ours = T.bleu(hyps, refs, smooth=smooth, tokenize=tokenize)
    assert ours.score == pytest.approx(theirs.score, abs=1e-9)
    assert ours.brevity_penalty == pytest.approx(theirs.bp, abs=1e-12)
    assert (ours.hyp_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)


def test_bleu_smoothing_values_and_lowercase_match_sacrebleu():
    for seed in range(20):
        hyps, streams, refs = corpus(100 + seed)
        for smooth, value in (("floor", 0.3), ("add-k", 2.0)):
            theirs = sacrebleu.corpus_bleu(hyps, streams, smooth_method=smooth, smooth_value=value)
            assert T.bleu(hyps, refs, smooth=smooth, smooth_value=value).score == pytest.approx(theirs.score, abs=1e-9)  # fmt: skip
        upper = [h.upper() for h in hyps]
        theirs = sacrebleu.corpus_bleu(upper, streams, lowercase=True)
        assert T.bleu(upper, refs, lowercase=True).score == pytest.approx(theirs.score, abs=1e-9)


def test_bleu_on_real_sentences_and_by_hand():
    hyp = ["The cat sat on the mat.", "It is raining today, isn't it?"]
    ref = [["The cat is on the mat.", "A cat sat on the mat."], ["It rains today, doesn't it?"]]
    theirs = sacrebleu.corpus_bleu(hyp, [[r[0] for r in ref], [ref[0][1], ref[1][0]]])
    assert T.bleu(hyp, ref).score == pytest.approx(theirs.score, abs=1e-9)
    # By hand: identical texts give 100; one 4-word hypothesis against a 6-word reference,
    # all its n-grams matched, gives the brevity penalty alone: exp(1 - 6/4).
    assert T.bleu(["a b c d"], ["a b c d"]).score == pytest.approx(100.0)
    assert T.bleu(["a b c d"], ["a b c d e f"]).score == pytest.approx(100 * 2.718281828459045 ** (1 - 1.5))  # fmt: skip
    assert T.tokenize_13a("Hello, world: 3.5-4 (x).") == ["Hello", ",", "world", ":", "3.5", "-", "4", "(", "x", ")", "."]  # fmt: skip


def test_bleu_statistics_sum_to_the_corpus_score():
    hyps, _, refs = corpus(7)
    rows = [T.bleu_statistics(h, r) for h, r in zip(hyps, refs)]
    summed = [sum(col) for col in zip(*rows)]
    assert T.bleu_from_statistics(summed).score == T.bleu(hyps, refs).score


@pytest.mark.parametrize("seed", range(80))
def test_chrf_matches_sacrebleu(seed):
    hyps, streams, refs = corpus(seed)
    assert T.chrf(hyps, refs) == pytest.approx(sacrebleu.corpus_chrf(hyps, streams).score, abs=1e-9)


def test_chrf_options_and_chrf_plus_plus_match_sacrebleu():
    from sacrebleu.metrics import CHRF

    for seed in range(30):
        hyps, streams, refs = corpus(200 + seed)
        for order, beta, words in ((4, 1.0, 0), (6, 3.0, 0), (2, 2.0, 0), (6, 2.0, 2), (3, 1.0, 1)):
            theirs = CHRF(char_order=order, word_order=words, beta=beta).corpus_score(hyps, streams)
            assert T.chrf(hyps, refs, order=order, beta=beta, word_order=words) == pytest.approx(theirs.score, abs=1e-9)  # fmt: skip
    assert T.chrf_words("(hi) world, a . x.") == ["(hi", ")", "world", ",", "a", ".", "x", "."]


@pytest.mark.parametrize("seed", range(100))
def test_rouge_matches_rouge_score(seed):
    rng = random.Random(seed)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rouge3", "rougeL"])
    preds = [sentence(rng, 20) for _ in range(3)]
    refs = [sentence(rng, 20) for _ in range(3)]
    ours = T.rouge(preds, refs, ("rouge1", "rouge2", "rouge3", "rougeL"))
    theirs = [scorer.score(r, p) for p, r in zip(preds, refs)]  # (target, prediction)
    for t, prf in ours.items():
        for field in ("precision", "recall", "fmeasure"):
            expected = sum(getattr(s[t], field) for s in theirs) / 3
            assert getattr(prf, field) == pytest.approx(expected, abs=1e-12), (t, field)


def test_lcs_by_hand():
    assert T.lcs_length("ABCBDAB", "BDCABA") == 4  # CLRS's example: BCBA
    assert T.lcs_length([], ["a"]) == 0
    prf = T.rouge_pair("the cat was found under the bed", "the cat was under the bed", "rougeL")
    assert (prf.precision, prf.recall) == (6 / 7, 6 / 6)


def test_exact_match_and_token_f1_by_hand():
    # normalisation: case, punctuation and articles do not count
    assert T.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert T.exact_match(["the Eiffel Tower."], ["Eiffel tower"]) == 1.0
    assert T.exact_match(["Paris", "Rome"], [["London", "paris"], "Milan"]) == 0.5
    # "a big red ball" vs "the red ball": tokens {big, red, ball} vs {red, ball}:
    # P = 2/3, R = 2/2, F1 = 2 * (2/3) / (5/3) = 0.8
    assert T.token_f1(["a big red ball"], ["the red ball"]) == pytest.approx(0.8)
    # repeated tokens count as a multiset: "red red red" vs "red ball": common 1,
    # P = 1/3, R = 1/2, F1 = 0.4
    assert T.token_f1_scores(["red red red"], ["red ball"]) == [pytest.approx(0.4)]
    # best reference counts; an answer that normalises to nothing matches only nothing
    assert T.token_f1(["blue ball"], [["red cube", "blue ball"]]) == 1.0
    assert T.token_f1_scores(["the", "x"], ["a", "the"]) == [1.0, 0.0]


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: T.bleu(["a", "b"], ["a"]), "different lengths"),
        (lambda: T.bleu([], []), "empty"),
        (lambda: T.bleu("a b", ["a b"]), "one string"),
        (lambda: T.bleu(["a"], [[]]), "empty list"),
        (lambda: T.bleu(["a"], ["a"], smooth="laplace"), "smooth must be one of"),
        (lambda: T.bleu(["a"], ["a"], tokenize="intl"), "tokenize must be one of"),
        (lambda: T.chrf(["a"], ["a", "b"]), "different lengths"),
        (lambda: T.chrf(["a"], ["a"], beta=0), "beta"),
        (lambda: T.chrf(["a"], ["a"], word_order=-1), "word_order"),
        (lambda: T.rouge(["a"], ["a"], ("rougeX",)), "rouge_type must be one of"),
        (lambda: T.rouge(["a", "b"], ["a"]), "different lengths"),
        (lambda: T.exact_match([1], ["a"]), "not a string"),
        (lambda: T.token_f1(["a"], [None]), "string or a list"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bleu_interval_resamples_sentences():
    hyps, streams, refs = corpus(11)
    hyps, refs = hyps * 5, refs * 5  # 5-35 sentences
    est = T.bleu_interval(hyps, refs, n_resamples=300, seed=1)
    assert est.value == pytest.approx(T.bleu(hyps, refs).score, abs=1e-12)
    assert est.low <= est.value <= est.high
    assert T.bleu_interval(hyps, refs, n_resamples=300, seed=1) == est  # seeded
    same = T.bleu_interval(["a b c d e"] * 4, ["a b c d e"] * 4, n_resamples=50)
    assert (same.low, same.high) == pytest.approx((100.0, 100.0))
    # by hand: one resample of sentence indices, summed statistics, corpus BLEU
    import numpy as np

    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(hyps), len(hyps))
    manual = T.bleu([hyps[i] for i in idx], [refs[i] for i in idx]).score
    rows = np.array([T.bleu_statistics(h, r) for h, r in zip(hyps, refs)])
    assert T.bleu_from_statistics(rows[idx].sum(0)).score == pytest.approx(manual, abs=1e-9)
    with pytest.raises(ValueError, match="different lengths"):
        T.bleu_interval(["a"], ["a", "b"])
