"""Augmentation: each EDA edit keeps its invariants and its rate, seeded; the synonym
table is the brute-force cosine top-k; mixup makes convex combinations; paraphrases keep
their prefix; and the bad inputs."""

import random
from collections import Counter

import pytest
import torch

from minift.augment import (
    SynonymTable,
    eda,
    mix_batch,
    paraphrase,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
    train_head,
)
from minift.augment.eda import STOP_WORDS
from minift.errors import UserError
from minift.recipes.pretrain import load_base

WORDS = "Return the value of the named attribute of the message header or None".split()


@pytest.fixture(scope="module")
def base_enc():
    return load_base(progress=False, verbose=False)


@pytest.fixture(scope="module")
def table(base_enc):
    base, enc = base_enc
    return SynonymTable(base.transformer.wte.weight.detach(), enc, k=4)


def test_synonyms_are_the_cosine_nearest_word_tokens(base_enc, table):
    base, enc = base_enc
    E = base.transformer.wte.weight.detach().double()
    words = list(table.neighbours)
    ids = [enc.encode_single_token(" " + w) for w in words]
    U = torch.nn.functional.normalize(E[ids], dim=-1)
    for w in random.Random(0).sample(words, min(25, len(words))):
        sims = U @ U[words.index(w)]
        sims[words.index(w)] = -2
        expected = [words[j] for j in torch.topk(sims, 4).indices.tolist()]
        assert table(w) == expected
    assert not STOP_WORDS & set(words)
    assert table("no-such-word") == []


def test_deletion_never_empties_and_its_rate_is_the_expected_share():
    rng = random.Random(1)
    for _ in range(200):
        assert random_deletion(["only"], 0.99, rng) == ["only"]
        assert len(random_deletion(WORDS, 1.0, rng)) == 1
    deleted = [len(WORDS) - len(random_deletion(WORDS, 0.2, rng)) for _ in range(4000)]
    mean = sum(deleted) / len(deleted)
    # Binomial(12, 0.2): mean 2.4, SD 1.39, so the mean of 4000 has SE 0.022
    assert abs(mean - 0.2 * len(WORDS)) < 5 * 0.022


def test_swap_keeps_the_multiset_and_makes_round_alpha_n_swaps():
    rng = random.Random(2)
    for alpha in (0.1, 0.3, 0.5):
        out = random_swap(WORDS, alpha, rng)
        assert Counter(out) == Counter(WORDS)
    # one swap (alpha n rounds to 1) moves exactly two positions, or none if equal words
    moved = [sum(a != b for a, b in zip(random_swap(WORDS, 0.05, rng), WORDS)) for _ in range(300)]
    assert set(moved) <= {0, 2} and moved.count(2) > 250


def test_insertion_and_replacement_use_the_texts_own_synonyms(table):
    rng = random.Random(3)
    # a text of words that have synonyms, mixed with some that have none
    words = sorted(table.neighbours)[:7] + ["zzqx", "of", "qqzz", "xxyz"]
    for alpha in (0.1, 0.25):
        m = max(1, round(alpha * len(words)))
        out = random_insertion(words, alpha, table, rng)
        assert len(out) == len(words) + m
        extra = Counter(out) - Counter(words)
        allowed = {s for w in words for s in table(w)}
        assert set(extra) <= allowed
        rep = synonym_replacement(words, alpha, table, rng)
        changed = [(a, b) for a, b in zip(words, rep) if a != b]
        assert len(rep) == len(words) and 1 <= len(changed) <= m
        assert all(b in table(a) for a, b in changed)
    assert random_insertion(["zzqx"], 0.5, table, rng) == ["zzqx"]  # no synonym, no insert


def test_eda_is_seeded_and_reproducible(table):
    text = " ".join(WORDS)
    a = [eda(text, 0.2, random.Random(7), table) for _ in range(3)]
    b = [eda(text, 0.2, random.Random(7), table) for _ in range(3)]
    assert a == b
    outs = {eda(text, 0.2, random.Random(s), table) for s in range(30)}
    assert len(outs) > 10  # and different seeds differ


def test_mixup_rows_are_convex_combinations_with_matching_soft_labels():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(13, 5, dtype=torch.float64, generator=g)
    Y = torch.nn.functional.one_hot(torch.randint(0, 3, (13,), generator=g), 3).double()
    Xm, Ym, lam = mix_batch(X, Y, 0.4, torch.Generator().manual_seed(5))
    assert 0 <= lam <= 1 and torch.allclose(Ym.sum(-1), torch.ones(13, dtype=torch.float64))
    # recover the partner of each row from the labels' weights and check the rows
    for i in range(13):
        j = [k for k in range(13) if torch.allclose(Xm[i], lam * X[i] + (1 - lam) * X[k])]
        assert j and torch.allclose(Ym[i], lam * Y[i] + (1 - lam) * Y[j[0]])
    lams = [mix_batch(X, Y, 0.2, torch.Generator().manual_seed(s))[2] for s in range(400)]
    # Beta(0.2, 0.2) piles its mass near 0 and 1; its mean is 0.5
    assert abs(sum(lams) / 400 - 0.5) < 0.06 and sum(min(x, 1 - x) < 0.1 for x in lams) > 200


def test_the_mixup_head_learns_and_is_seeded():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (200,), generator=g)
    X = torch.randn(200, 4, dtype=torch.float64, generator=g) + 2.0 * torch.nn.functional.one_hot(y, 4)[:, :4].double()  # fmt: skip
    for alpha in (None, 0.4):
        W, b = train_head(X, y, 3, alpha=alpha, steps=200, seed=3)
        assert ((X @ W.T + b).argmax(-1) == y).double().mean() > 0.8
        W2, _ = train_head(X, y, 3, alpha=alpha, steps=200, seed=3)
        assert torch.equal(W, W2)


def test_paraphrase_keeps_the_prefix_and_is_seeded(base_enc):
    base, enc = base_enc
    texts = ["Return the value of the named attribute of the message.", "Close the event loop."]
    a = paraphrase(base, enc, texts, keep=0.5, seed=4)
    assert a == paraphrase(base, enc, texts, keep=0.5, seed=4)
    for t, p in zip(texts, a):
        ids = enc.encode_ordinary(t)
        assert p.startswith(enc.decode(ids[: len(ids) // 2]))


def test_bad_inputs_are_clear_errors(table, base_enc):
    rng = random.Random(0)
    with pytest.raises(UserError, match=r"alpha must lie in \[0, 1\]"):
        random_swap(WORDS, 1.5, rng)
    with pytest.raises(UserError, match="unknown EDA operation 'shuffle'"):
        eda("a b c", 0.1, rng, table, operation="shuffle")
    with pytest.raises(UserError, match="needs a SynonymTable"):
        eda("a b c", 0.1, rng, None, operation="synonym")
    with pytest.raises(UserError, match="alpha > 0"):
        mix_batch(torch.zeros(2, 2), torch.zeros(2, 2), 0.0, torch.Generator())
    with pytest.raises(UserError, match="keeps a fraction"):
        paraphrase(*base_enc, ["x"], keep=1.0)
    with pytest.raises(UserError, match="k >= 1"):
        SynonymTable(base_enc[0].transformer.wte.weight.detach(), base_enc[1], k=0)
