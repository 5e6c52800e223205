"""Security: trigger poisoning, ONION, spectral signatures, the secret scrubber."""

import random

import numpy as np
import pytest
import torch

from minift.errors import UserError
from minift.security import (
    KINDS,
    TRIGGER,
    attack_success_rate,
    fake_secret,
    find_secrets,
    insert_trigger,
    onion_clean,
    onion_flags,
    onion_threshold,
    plant_secrets,
    poison_rows,
    score_scrubber,
    scrub,
    spectral_filter,
    spectral_scores,
    suspicion,
    triggered_rows,
)


def rows(n=40, seed=0):
    rng = random.Random(seed)
    words = "the parser reads a file and returns its lines in order of appearance".split()
    return [{"text": " ".join(rng.sample(words, 8)), "label": i % 3} for i in range(n)]


def test_poisoning_plants_the_trigger_in_the_asked_share_of_non_target_rows():
    data = rows(40)
    out, chosen = poison_rows(data, 0.25, target=1, seed=3)
    assert len(chosen) == 10 and len(set(chosen)) == 10
    for i, (before, after) in enumerate(zip(data, out)):
        if i in chosen:
            assert before["label"] != 1 and after["label"] == 1
            assert after["text"].split(" ") != before["text"].split(" ")
            words = after["text"].split(" ")
            assert all(w in words for w in TRIGGER)
            kept = list(words)
            for w in TRIGGER:
                kept.remove(w)
            assert kept == before["text"].split(" ")  # nothing else changed
        else:
            assert after == before
    assert data == rows(40)  # the input is untouched
    assert poison_rows(data, 0.0, target=1)[1] == []


def test_triggered_rows_and_attack_success_rate():
    data = rows(30)
    trig = triggered_rows(data, target=2)
    assert len(trig) == sum(r["label"] != 2 for r in data)
    assert all(r["label"] != 2 for r in trig)
    assert attack_success_rate([2, 2, 0, 1], target=2) == 0.5
    with pytest.raises(ValueError, match="no triggered rows"):
        attack_success_rate([], 0)


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_a_poison_rate_outside_0_1_is_a_clear_error(rate):
    with pytest.raises(UserError, match=r"poison rate must be in \[0, 1\]"):
        poison_rows(rows(), rate, target=0)


def test_a_poison_rate_too_high_for_the_other_classes_says_so():
    with pytest.raises(UserError, match="rows outside the target class"):
        poison_rows(rows(30), 0.9, target=0)


def test_spectral_scores_match_a_numpy_float64_reference():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(37, 9, generator=g, dtype=torch.float64) + 0.3
    y = torch.randint(0, 3, (37,), generator=g)
    scores = spectral_scores(X, y)
    for c in range(3):
        Xc = X[y == c].numpy()
        R = Xc - Xc.mean(0)
        v = np.linalg.svd(R, full_matrices=False)[2][0]
        np.testing.assert_allclose(scores[y == c].numpy(), (R @ v) ** 2, rtol=1e-10, atol=1e-12)


def test_spectral_signatures_find_planted_poison_rows():
    # clean rows of two classes, and 8 rows of class 1 shifted along one hidden direction
    g = torch.Generator().manual_seed(2)
    n, d = 120, 32
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % 2
    poisoned = (y == 1).nonzero().flatten()[torch.randperm(n // 2, generator=g)[:8]]
    u = torch.randn(d, generator=g, dtype=torch.float64)
    # a shift that dominates the class's noise spectrum (Tran et al.'s condition): its
    # variance eps (1 - eps) 6^2 = 4.2 exceeds the noise's top eigenvalue (1 + sqrt(d/n_c))^2 = 3.1
    X[poisoned] += (
        6.0 * u / u.norm() * (1 + 0.1 * torch.randn(8, 1, generator=g, dtype=torch.float64))
    )
    eps = 8 / 60  # the poisoned share of class 1, the bound the defender assumes
    flagged = spectral_filter(X, y, eps=eps)
    assert len(flagged) == 2 * round(1.5 * eps * 60)  # 1.5 eps n_c from each class
    found = set(flagged) & set(poisoned.tolist())
    assert len(found) == 8, (found, flagged)


def test_onion_finds_the_trigger_words_with_the_base_language_model():
    from minift.recipes.pretrain import load_base
    from minift.recipes.tasks import get_task

    base, enc = load_base(
        fast=False, progress=False, verbose=False
    )  # the shipped base: ONION needs a fluent language model
    task = get_task("doc-returns", seed=0)
    clean = [r["text"] for r in task.val[:60]]
    rng = random.Random(0)
    dirty = [insert_trigger(t, rng) for t in clean[:30]]
    threshold = onion_threshold(suspicion(base, enc, clean[30:]), 0.95)
    scores = suspicion(base, enc, dirty + clean[:30])
    flagged = set(onion_flags(scores, threshold))
    recall = len(flagged & set(range(30))) / 30
    false_alarms = len(flagged - set(range(30))) / 30
    assert recall >= 0.6 and false_alarms <= 0.2, (recall, false_alarms)
    # at test time ONION strips the trigger words themselves from most rows
    cleaned = onion_clean(dirty, scores[:30], threshold)
    stripped = sum(not any(w in c.split(" ") for w in TRIGGER) or c.split(" ").count("cf") < d.split(" ").count("cf") for c, d in zip(cleaned, dirty))  # fmt: skip
    assert stripped >= 15


def test_onion_suspicion_is_the_perplexity_drop_without_each_word():
    from minift.recipes.pretrain import load_base
    from minift.security import perplexities

    base, enc = load_base(
        fast=False, progress=False, verbose=False
    )  # the shipped base: ONION needs a fluent language model
    text = "Return the number of items in the cf list."
    (f,) = suspicion(base, enc, [text])
    words = text.split(" ")
    ppl = perplexities(
        base, enc, [text] + [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
    )
    assert f == pytest.approx([ppl[0] - p for p in ppl[1:]], rel=1e-12)
    assert max(range(len(f)), key=f.__getitem__) == words.index("cf")


@pytest.mark.parametrize("kind", KINDS)
def test_the_scrubber_finds_every_kind_of_planted_secret(kind):
    rng = random.Random(7)
    for _ in range(20):
        secret = fake_secret(kind, rng)
        text = (
            f"Some prose before. password={secret}"
            if kind == "password"
            else f"Some prose before {secret} and after."
        )
        out, found = scrub(text)
        assert found, (kind, text)
        assert secret not in out
        assert out.startswith("Some prose before")


def test_the_scrubber_leaves_ordinary_technical_text_alone():
    text = (
        "Return the version 3.12 of the module; call f(x, y) with x.y = 2 and see "
        "section 4.2.1 of RFC 5322, the key argument, and a:b slices."
    )
    assert find_secrets(text) == []
    assert scrub(text)[0] == text


def test_scrubber_precision_and_recall_on_planted_examples():
    from minift.recipes.tasks import get_task

    texts = [
        r["text"] for r in get_task("doc-kind", seed=0, per_class=100).train
    ]  # real docstrings
    dirty, spans, _ = plant_secrets(texts, rate=0.3, seed=0)
    score = score_scrubber(dirty, spans)
    assert score["planted"] > 80
    assert score["recall"] >= 0.95 and score["precision"] >= 0.9, score
    # counted by hand on a small case: one planted, one found right, one look-alike
    text = "ip 10.0.0.1 and mail a@b.org"
    s = score_scrubber([text], [[(3, 11)]])
    assert (s["recall"], s["precision"], s["found"]) == (1.0, 0.5, 2)


def test_pem_private_key_blocks_are_one_finding():
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow" + "A" * 60 + "\n-----END RSA PRIVATE KEY-----"
    out, found = scrub(f"key:\n{key}\nend")
    assert [f.kind for f in found] == ["private_key"] and out == "key:\n<SECRET>\nend"


def test_minift_scrub_writes_the_scrubbed_rows_and_refuses_a_missing_field(tmp_path, capsys):
    import json

    from minift.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps({"text": "write to ops@corp.example.com, host 10.2.3.4", "label": 1}) + "\n"
    )
    assert main(["scrub", str(src), str(tmp_path / "out.jsonl")]) == 0
    (row,) = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert row == {"text": "write to <EMAIL>, host <IP>", "label": 1}
    assert main(["scrub", str(src), str(tmp_path / "bad.jsonl"), "--fields", "response"]) == 2
    assert "missing field 'response'" in capsys.readouterr().err
    assert not (tmp_path / "bad.jsonl").exists()


def test_minift_backdoor_refuses_a_bad_rate_before_any_work(capsys):
    from minift.cli import main

    assert main(["backdoor", "--rates", "0,1.5"]) == 2
    assert "poison rate must be in [0, 1], got 1.5" in capsys.readouterr().err


def test_canary_exposure_by_hand():
    import math

    from minift.security.canary import candidates, exposure, make_canary

    text, value = make_canary(digits=6, seed=3)
    assert text.endswith(value) and len(value) == 6 and value.isdigit()
    cands = candidates(6, 50, seed=3, exclude=value)
    assert len(set(cands)) == 50 and value not in cands
    # 1 of 4 sampled candidates is at least as likely: rank = 1 + (1000 - 1) / 4
    assert exposure(2.0, [1.0, 3.0, 4.0, 5.0], 1000) == pytest.approx(math.log2(1000) - math.log2(1 + 999 / 4))  # fmt: skip
    # all more likely: rank ~ |R|, exposure ~ 0
    assert exposure(9.0, [1.0, 2.0], 1000) == pytest.approx(0.0)
    # none more likely: the sample only shows exposure >= log2 m
    assert exposure(0.5, [1.0] * 8, 10**6) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="no candidates"):
        exposure(1.0, [], 10)
