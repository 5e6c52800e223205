"""minift.prompting: label scoring against a one-prompt-at-a-time float64 reference, the
demonstration selectors (TF-IDF against scikit-learn), contextual calibration by hand,
the shot budget, and clear errors."""

import numpy as np
import pytest
import torch

from minift.data.tasks import Task
from minift.errors import UserError
from minift.model import GPT, GPTConfig
from minift.prompting import (
    CONTENT_FREE,
    Selector,
    Template,
    TfIdf,
    calibrate,
    classify,
    label_probs,
    label_token_ids,
    max_shots,
    order_accuracies,
)
from minift.tokenizer import train_bpe

WORDS = "red green blue cat dog bird fish tree moon sun rain snow wind fire stone water".split()


@pytest.fixture(scope="module")
def enc():
    labels = " colour animal nature" * 30  # so that each label word is one token
    return train_bpe(" ".join(WORDS * 20) + " See also:" + labels, 256 + 3 + 60)


def make_task(n_train=30, n_val=13, seed=0):
    rng = np.random.default_rng(seed)
    groups = [WORDS[0:3], WORDS[3:7], WORDS[7:]]

    def row():
        label = int(rng.integers(0, 3))
        n = int(rng.integers(1, 6))
        return {"text": " ".join(rng.choice(groups[label], size=n)), "label": label}

    return Task(
        "colours", "classification", [row() for _ in range(n_train)],
        [row() for _ in range(n_val)], ["colour", "animal", "nature"],
        template=" See also:", verbalizer=[" colour", " animal", " nature"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def model(enc):
    torch.manual_seed(1)
    config = GPTConfig(vocab_size=enc.n_vocab, block_size=40, n_layer=2, n_head=2, n_embd=32)
    return GPT(config).double().eval()


def test_template_builds_the_k_shot_prompt():
    t = Template("Q: {text} A:", separator=" | ")
    assert t.prompt("x", [("a", " 1"), ("b", " 2")]) == "Q: a A: 1 | Q: b A: 2 | Q: x A:"
    assert t.prompt("x") == "Q: x A:"


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_label_probs_match_one_prompt_at_a_time(enc, model, batch_size):
    prompts = ["red", "cat dog bird fish " * 4, "tree moon sun rain snow wind", "blue green"]
    ids = label_token_ids(enc, [" colour", " animal", " nature"])
    probs, truncated = label_probs(model, enc, prompts, ids, block_size=12, batch_size=batch_size)
    assert truncated == 1  # the long one keeps its last 12 tokens
    for row, text in zip(probs, prompts):
        tokens = enc.encode_ordinary(text)[-12:]
        logits = model(torch.tensor([tokens])).logits[0, -1].double()
        expected = torch.softmax(logits[ids], dim=-1)
        torch.testing.assert_close(row, expected, rtol=1e-12, atol=1e-12)


def test_tfidf_cosine_matches_scikit_learn():
    text_mod = pytest.importorskip("sklearn.feature_extraction.text")
    task = make_task(40)
    texts = [r["text"] for r in task.train]
    ours = TfIdf(texts)
    vec = text_mod.TfidfVectorizer(token_pattern=r"[a-z0-9]+", smooth_idf=True, norm="l2")
    matrix = vec.fit_transform(texts).toarray()
    for i, v in enumerate(ours.vectors):
        dense = np.zeros(matrix.shape[1])
        for w, x in v.items():
            dense[vec.vocabulary_[w]] = x
        np.testing.assert_allclose(dense, matrix[i], atol=1e-12)
    q = texts[5]
    sims = matrix @ vec.transform([q]).toarray()[0]
    nearest = ours.nearest(q, 4)
    assert nearest[-1] == int(np.argmax(sims)) or sims[nearest[-1]] == pytest.approx(sims.max())
    np.testing.assert_allclose(sorted(sims[nearest]), np.sort(sims)[-4:], atol=1e-12)


def test_selectors():
    task = make_task(31)
    r = Selector(task.train, 5, "random", seed=3)
    a = r.select("x", 0)
    assert len(set(a)) == 5 and a == Selector(task.train, 5, "random", seed=3).select("x", 0)
    assert a != r.select("x", 1)  # a fresh draw per query
    b = Selector(task.train, 7, "balanced", seed=0).select("x", 2)
    counts = np.bincount([task.train[i]["label"] for i in b], minlength=3)
    assert len(set(b)) == 7 and counts.max() - counts.min() <= 1
    s = Selector(task.train, 3, "similar").select(task.train[4]["text"], 0)
    assert task.train[s[-1]]["text"] == task.train[4]["text"]  # itself: most similar, last


def test_contextual_calibration_by_hand():
    # p = (0.6, 0.4), p_cf = (0.75, 0.25): q ~ (0.8, 1.6) -> (1/3, 2/3): the decision flips
    q = calibrate(torch.tensor([[0.6, 0.4]], dtype=torch.float64), torch.tensor([0.75, 0.25], dtype=torch.float64))  # fmt: skip
    torch.testing.assert_close(q, torch.tensor([[1 / 3, 2 / 3]], dtype=torch.float64))
    p_cf = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    torch.testing.assert_close(calibrate(p_cf[None], p_cf), torch.full((1, 3), 1 / 3, dtype=torch.float64))  # fmt: skip


def test_classify_calibrated_divides_by_the_content_free_scores(enc, model):
    task = make_task()
    plain = classify(model, enc, task, 2, "balanced", seed=4)
    cal = classify(model, enc, task, 2, "balanced", seed=4, calibrated=True)
    ids = label_token_ids(enc, task.verbalizer)
    sel = Selector(task.train, 2, "balanced", seed=4)
    template = Template("{text} See also:")
    for i, row in enumerate(task.val):
        demos = [(task.train[j]["text"], task.verbalizer[task.train[j]["label"]]) for j in sel.select(row["text"], i)]  # fmt: skip
        free, _ = label_probs(model, enc, [template.prompt(c, demos) for c in CONTENT_FREE], ids)
        expected = plain.probs[i] / free.mean(0)
        torch.testing.assert_close(cal.probs[i], expected / expected.sum())
    assert 0.0 <= cal.accuracy <= 1.0 and len(cal.correct) == len(task.val)


def test_order_accuracies_first_order_equals_fixed_prompt(enc, model):
    task = make_task()
    accs = order_accuracies(model, enc, task, [0, 1, 2], n_orders=4, seed=0)
    assert len(accs) == 4 and all(0 <= a <= 1 for a in accs)
    ids = label_token_ids(enc, task.verbalizer)
    demos = [(task.train[j]["text"], task.verbalizer[task.train[j]["label"]]) for j in (0, 1, 2)]
    prompts = [Template("{text} See also:").prompt(r["text"], demos) for r in task.val]
    probs, _ = label_probs(model, enc, prompts, ids)
    assert accs[0] == np.mean(probs.argmax(-1).numpy() == [r["label"] for r in task.val])


def test_max_shots_by_hand(enc):
    task = make_task()
    t = Template("{text} See also:")
    demo_len = sorted(
        len(enc.encode_ordinary(t.demonstration(r["text"], task.verbalizer[r["label"]]))) + 1
        for r in task.train
    )
    queries = sorted(len(enc.encode_ordinary(t.fill(r["text"]))) for r in task.val)
    budget = max_shots(enc, task, 40)
    median = int(np.median(demo_len))
    q90 = queries[int(0.9 * len(queries))]
    assert (budget.median_demo, budget.long_query) == (median, q90)
    assert budget.max_shots == (40 - q90) // median
    assert "largest k that fits" in str(budget)


def test_bad_input_is_a_clear_error(enc, model):
    task = make_task(n_train=5)
    with pytest.raises(UserError, match="shots=6 is larger than the training set \\(5"):
        classify(model, enc, task, 6)
    with pytest.raises(UserError, match="unknown selection 'nearest'; choose one of random"):
        classify(model, enc, task, 1, "nearest")
    with pytest.raises(UserError, match="exactly once"):
        Template("no placeholder")
    sft = Task("s", "sft", [{"prompt": "a", "response": "b"}], [{"prompt": "a", "response": "b"}])
    with pytest.raises(UserError, match="is 'sft'"):
        classify(model, enc, sft)
    with pytest.raises(UserError, match="share a first token"):
        label_token_ids(enc, [" colour", " colour"])
    with pytest.raises(UserError, match="n_orders"):
        order_accuracies(model, enc, task, [0], n_orders=0)
