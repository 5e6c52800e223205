"""Domain adaptation: the target domain's construction, the A-distance's two ends,
self-training and DANN on synthetic shifts where their effect is known, continued
pretraining, the recipe end to end, `minift adapt`, and the bad inputs."""

import math

import pytest
import torch

import minift.cli
from minift.adapt import (
    DANNConfig,
    comment_blocks,
    continue_pretraining,
    dann_features,
    dann_predict,
    proxy_a_distance,
    pseudo_labels,
    read_target_text,
    self_train,
    stdlib_package_comments_task,
    train_dann,
)
from minift.data.tasks import STDLIB_PACKAGES
from minift.errors import UserError
from minift.train.features import fit_linear_head


def test_comment_blocks_join_adjacent_lines_and_skip_pragmas():
    src = b"""#!/usr/bin/env python
# -*- coding: utf-8 -*-
x = 1  # trailing note
# first line of a block
# second line of it

# noqa: E501
# another block
def f():
    pass
"""
    assert comment_blocks(src) == [
        "trailing note first line of a block second line of it",
        "another block",
    ]


def test_the_target_task_is_balanced_disjoint_and_labelled_like_the_source():
    t = stdlib_package_comments_task(seed=3)
    assert t.labels == list(STDLIB_PACKAGES)
    assert torch.bincount(torch.tensor([r["label"] for r in t.val])).tolist() == [40] * 6
    assert not {r["text"] for r in t.train} & {r["text"] for r in t.val}
    assert t.val != stdlib_package_comments_task(seed=4).val


def test_a_distance_is_near_0_for_one_distribution_and_near_2_for_separate_ones():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(600, 4, dtype=torch.float64, generator=g)
    B = torch.randn(600, 4, dtype=torch.float64, generator=g)
    # eps of 600 held-out rows has SE 0.02, so d_A = 2 - 4 eps has SE 0.08
    assert abs(proxy_a_distance(A, B)) < 0.3
    assert proxy_a_distance(A, B + torch.tensor([6.0, 0, 0, 0], dtype=torch.float64)) > 1.95


def rotated(n, angle, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    X = torch.randn(n, 2, dtype=torch.float64, generator=g) * 0.8
    X[:, 0] += torch.where(y == 1, 2.0, -2.0)
    c, s = math.cos(angle), math.sin(angle)
    return X @ torch.tensor([[c, s], [-s, c]], dtype=torch.float64), y


def test_self_training_follows_a_rotated_target():
    # the target is the source turned by 0.9 rad: the source's boundary cuts through its
    # clusters; confident pseudo-labels pull the boundary round to the gap between them
    gains = []
    for seed in range(3):
        Xs, ys = rotated(400, 0.0, seed)
        Xt, _ = rotated(400, 0.9, seed + 100)
        X_test, y_test = rotated(2000, 0.9, seed + 200)
        W, b = fit_linear_head(Xs, ys, 2, l2=1e-3)
        W2, b2, history = self_train(Xs, ys, Xt, 2, threshold=0.9, rounds=5, l2=1e-3)
        before = ((X_test @ W.T + b).argmax(-1) == y_test).double().mean()
        after = ((X_test @ W2.T + b2).argmax(-1) == y_test).double().mean()
        gains.append(float(after - before))
        assert len(history) == 5 and history[-1]["pseudo_labelled"] > 0
    assert min(gains) > 0.02, gains


def test_pseudo_labels_are_confident_and_capped_per_class():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(300, 3, dtype=torch.float64, generator=g)
    W = torch.randn(4, 3, dtype=torch.float64, generator=g) * 3
    b = torch.tensor([2.0, 0.0, -1.0, 0.5], dtype=torch.float64)
    keep, labels = pseudo_labels(W, b, X, 0.8, balance_ratio=1.5)
    conf = torch.softmax(X @ W.T + b, -1).max(-1)
    assert torch.all(conf.values[keep] >= 0.8) and torch.equal(conf.indices[keep], labels)
    counts = torch.bincount(labels, minlength=4)
    assert int(counts.max()) <= max(1, int(1.5 * int(counts[counts > 0].min())))
    uncapped, _ = pseudo_labels(W, b, X, 0.8, balance_ratio=None)
    assert len(uncapped) == int((conf.values >= 0.8).sum()) >= len(keep)


def shifted(n, shift, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    X = torch.randn(n, 5, dtype=torch.float64, generator=g)
    X[:, 0] += 2.5 * (y - 1)
    X[:, 3] += shift  # the domain lives in a direction the task does not need
    return X, y


def test_dann_makes_the_domains_harder_to_tell_apart_than_the_same_network_without_it():
    plain, adversarial = [], []
    for seed in range(3):
        Xs, ys = shifted(300, 0.0, seed)
        Xt, yt = shifted(300, 3.0, seed + 50)
        for lambd, out in ((0.0, plain), (1.0, adversarial)):
            model = train_dann(Xs, ys, Xt, 3, DANNConfig(steps=400, lambd=lambd, seed=seed, hidden=16))  # fmt: skip
            d = proxy_a_distance(dann_features(model, Xs), dann_features(model, Xt))
            out.append((d, float((dann_predict(model, Xt) == yt).double().mean())))
    mean = lambda rows, i: sum(r[i] for r in rows) / len(rows)  # noqa: E731
    assert mean(adversarial, 0) < mean(plain, 0) - 0.05, (plain, adversarial)
    assert mean(adversarial, 1) > mean(plain, 1) - 0.02  # and the task is not given up


def test_continued_pretraining_lowers_the_target_loss_and_leaves_the_base_alone():
    from minift.data.batching import window_batches
    from minift.data.tokens import encode_documents
    from minift.recipes.pretrain import load_base

    base, enc = load_base(progress=False, verbose=False)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    texts = [r["text"] for r in stdlib_package_comments_task(seed=0).train]
    adapted, history = continue_pretraining(base, texts, enc, steps=30, lr=1e-3, block_size=32)
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())
    x, y = window_batches(encode_documents(texts, enc), 32, 32, seed=99)(0, 0)
    with torch.no_grad():
        assert adapted(x, y).loss < base(x, y).loss
    with pytest.raises(UserError, match="too few"):
        continue_pretraining(base, ["hi"], enc, steps=1)
    with pytest.raises(UserError, match="needs target text"):
        continue_pretraining(base, [], enc, steps=1)


def test_read_target_text(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("first text\n\n  second text  \n", encoding="utf-8")
    assert read_target_text(str(p)) == ["first text", "second text"]
    assert len(read_target_text("pycode", limit=5)) == 5
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(UserError, match="is empty"):
        read_target_text(str(tmp_path / "empty.txt"))
    (tmp_path / "bin.txt").write_bytes(b"\x7fELF\x00\x01")
    with pytest.raises(UserError, match="binary"):
        read_target_text(str(tmp_path / "bin.txt"))
    (tmp_path / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        read_target_text(str(tmp_path / "latin.txt"))
    with pytest.raises(UserError, match="no such file"):
        read_target_text(str(tmp_path / "missing.txt"))


def test_run_adapt_end_to_end_with_labels_and_with_a_users_file(tmp_path):
    from minift.recipes.adapt import AdaptConfig, run_adapt
    from minift.recipes.pretrain import load_base
    from minift.recipes.tasks import get_task

    base, enc = load_base(progress=False, verbose=False)
    task = get_task("stdlib-package", seed=0)
    r = run_adapt(task, "pycode", base, enc, AdaptConfig(method="self-train"))
    assert None not in (r.target_accuracy, r.source_only_target, r.oracle_target)
    assert 0 <= r.target_accuracy <= 1 and len(r.details["pseudo_labelled"]) == 3
    p = tmp_path / "target.txt"
    p.write_text("\n".join(f"the event loop closes transport {i}" for i in range(20)))
    r = run_adapt(task, str(p), base, enc, AdaptConfig(method="dann", dann=DANNConfig(steps=20)))
    assert r.target_accuracy is None and r.gap_closed is None
    assert sum(r.target_predictions.values()) == 20
    with pytest.raises(UserError, match="unknown adaptation method 'mmd'"):
        AdaptConfig(method="mmd")
    with pytest.raises(UserError, match="classification task"):
        run_adapt(get_task("sort-words"), "pycode", base, enc)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "the file is empty"), (b"\x00\x01\x02", "a binary file")],
)
def test_minift_adapt_refuses_bad_target_text(tmp_path, capsys, content, message):
    p = tmp_path / "target.txt"
    p.write_bytes(content)
    assert minift.cli.main(["adapt", "--target-text", str(p)]) == 2
    assert message in capsys.readouterr().err


def test_bad_settings_are_clear_errors():
    X, y = shifted(20, 0.0, 0)
    with pytest.raises(UserError, match="threshold must lie in"):
        self_train(X, y, X, 3, threshold=1.0)
    with pytest.raises(UserError, match="rounds >= 1"):
        self_train(X, y, X, 3, rounds=0)
    with pytest.raises(UserError, match="lambda must be >= 0"):
        DANNConfig(lambd=-1)
    with pytest.raises(UserError, match=">= 4 rows"):
        proxy_a_distance(X[:3], X)
