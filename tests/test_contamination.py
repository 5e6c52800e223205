"""minift.metrics.contamination: n-gram overlap by hand."""

import pytest

from minift.metrics.contamination import NgramIndex, contamination, split_by_contamination

CORPUS = ["The quick brown fox jumps over the lazy dog.", "Return the logging handler."]


def test_overlap_by_hand():
    index = NgramIndex(CORPUS, n=3)
    texts = [
        "a QUICK brown fox, said the cat",  # "quick brown fox" occurs: dirty
        "return the logging level",  # "return the logging" occurs: dirty
        "nothing in common here at all",  # clean
        "the lazy",  # 2 words < n: no 3-gram, clean
    ]
    r = contamination(texts, index)
    assert r.dirty == [True, True, False, False]
    # 3-grams per text: 5, 2, 4, 0 -> 11 in all; found: 1 ("quick brown fox") + 1
    assert (r.ngrams, r.ngrams_found) == (11, 2)
    assert r.dirty_share == 0.5 and r.ngram_share == pytest.approx(2 / 11)
    assert "2 of 4 examples (50.0%) share a 3-gram" in str(r)
    assert split_by_contamination([1.0, 0.0, 1.0, 0.5], r) == ([1.0, 0.5], [1.0, 0.0])


def test_an_exact_copy_is_fully_found():
    index = NgramIndex(CORPUS, n=2)
    r = contamination([CORPUS[0]], index)
    assert r.dirty == [True] and r.ngram_share == 1.0


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="n must be at least 1"):
        NgramIndex(CORPUS, n=0)
    with pytest.raises(ValueError, match="no 20-gram"):
        NgramIndex(CORPUS, n=20)
    index = NgramIndex(CORPUS, n=2)
    with pytest.raises(ValueError, match="texts is empty"):
        contamination([], index)
    with pytest.raises(ValueError, match="2 values for 1 checked"):
        split_by_contamination([1, 0], contamination(["a b"], index))
