"""Fairness metrics against hand-computed values and fairlearn; counterfactual swaps."""

import numpy as np
import pytest
import torch

from minift.errors import UserError
from minift.fairness import (
    accuracy_gap,
    counterfactual_change,
    counterfactual_rows,
    demographic_parity_difference,
    equalized_odds_difference,
    group_rates,
    selection_rates,
    swap_attribute,
)

# two groups of 5 rows, counted by hand below
Y = [1, 1, 0, 0, 1, 1, 0, 0, 0, 1]
P = [1, 0, 1, 0, 1, 1, 1, 1, 0, 0]
A = ["a", "a", "a", "a", "a", "b", "b", "b", "b", "b"]


def test_metrics_by_hand():
    # a: predicted 1 on 3 of 5; b: on 3 of 5 -> parity 0
    assert selection_rates(P, A) == {"a": 0.6, "b": 0.6}
    assert demographic_parity_difference(Y, P, A) == 0.0
    r = group_rates(Y, P, A)
    # a: positives rows 0,1,4 -> predicted 1,0,1: TPR 2/3; negatives 2,3 -> 1,0: FPR 1/2
    # b: positives 5,9 -> 1,0: TPR 1/2; negatives 6,7,8 -> 1,1,0: FPR 2/3
    assert r["tpr"] == pytest.approx({"a": 2 / 3, "b": 1 / 2})
    assert r["fpr"] == pytest.approx({"a": 1 / 2, "b": 2 / 3})
    assert equalized_odds_difference(Y, P, A) == pytest.approx(1 / 6)
    # accuracy a: rows 0,3,4 right = 3/5; b: rows 5,8 right = 2/5
    assert accuracy_gap(Y, P, A) == pytest.approx(0.2)


@pytest.mark.parametrize("seed", range(5))
def test_against_fairlearn_on_random_predictions(seed):
    from fairlearn import metrics as fl  # a dev dependency (setup.py)

    rng = np.random.default_rng(seed)
    n = 97 + seed
    y, p = rng.integers(0, 2, n), rng.integers(0, 2, n)
    a = rng.choice(["g1", "g2", "g3"], n)
    assert demographic_parity_difference(y, p, a) == pytest.approx(
        fl.demographic_parity_difference(y, p, sensitive_features=a), abs=1e-12
    )
    assert equalized_odds_difference(y, p, a) == pytest.approx(
        fl.equalized_odds_difference(y, p, sensitive_features=a), abs=1e-12
    )


def test_one_group_and_ragged_input_are_clear_errors():
    with pytest.raises(UserError, match="at least two groups"):
        demographic_parity_difference([1, 0], [1, 1], ["a", "a"])
    with pytest.raises(ValueError, match="one entry per row"):
        equalized_odds_difference([1, 0], [1], ["a", "b"])


def test_counterfactual_change():
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]], dtype=torch.float64)
    swapped = torch.tensor([[0.7, 0.3], [0.6, 0.4], [0.5, 0.5]], dtype=torch.float64)
    out = counterfactual_change(probs, swapped)
    assert out["flip_rate"] == pytest.approx(1 / 3)
    assert out["mean_change"] == pytest.approx((0.2 + 0.2 + 0.0) / 3)
    assert counterfactual_change(probs, probs) == {"flip_rate": 0.0, "mean_change": 0.0}


def test_swap_attribute_keeps_case_and_punctuation():
    assert (
        swap_attribute("He said his brother, Mr. Smith, saw HER.")
        == "She said her sister, Mrs. Smith, saw HIM."
    )
    assert swap_attribute(swap_attribute("The man and the boy.")) == "The man and the boy."
    assert swap_attribute("Theme and shelf") == "Theme and shelf"  # inside words nothing moves
    rows = [{"text": "she reads", "label": 1}, {"text": "it reads", "label": 0}]
    assert counterfactual_rows(rows) == [{"text": "he reads", "label": 1}]
    grouped = [{"text": "She reads", "label": 1, "group": 1}]
    assert counterfactual_rows(grouped, group_swap={0: 1, 1: 0}) == [
        {"text": "He reads", "label": 1, "group": 0}
    ]


def test_mitigations_make_the_attribute_independent_of_the_label():
    from collections import Counter

    from minift.recipes.fairness import mitigate
    from minift.recipes.tasks import get_task

    task = get_task("doc-returns-people", seed=1, per_class=40)
    for how in ("cda", "reweight"):
        cells = Counter((r["group"], r["label"]) for r in mitigate(task, how).train)
        for y in (0, 1):
            share = cells[(1, y)] / (cells[(0, y)] + cells[(1, y)])
            assert abs(share - 0.5) <= (0.0 if how == "cda" else 0.1), (how, cells)
    with pytest.raises(UserError, match="choices: none, cda, reweight, adversary"):
        mitigate(task, "drop")


def test_minift_fairness_refuses_bad_input(capsys):
    from minift.cli import main

    assert main(["fairness", "--mitigations", "none,drop"]) == 2
    assert "choices: none, cda, reweight, adversary" in capsys.readouterr().err
    assert main(["fairness", "--task", "doc-returns"]) == 2  # its rows have no group
    assert "rows have a 'group'" in capsys.readouterr().err


def test_adversarial_removal_trains_the_adversary_and_refuses_other_methods():
    from minift.recipes.fairness_adversary import adversarial_removal
    from minift.recipes.finetune import FinetuneConfig, train_config
    from minift.recipes.pretrain import load_base
    from minift.recipes.tasks import get_task

    base, enc = load_base(progress=False, verbose=False)
    task = get_task("doc-returns-people", seed=0, per_class=16)

    def run(steps):
        cfg = FinetuneConfig(method="full", train=train_config(steps=steps, warmup_steps=0, progress=False))  # fmt: skip
        return adversarial_removal(task, base, enc, cfg)

    before, after = run(0), run(3)  # the same seeds: run(0) is run(3)'s starting point
    assert after.adversary.weight.shape == (2, base.config.n_embd)
    assert torch.equal(run(0).adversary.weight, before.adversary.weight)  # deterministic
    assert not torch.equal(after.adversary.weight, before.adversary.weight)  # it trained
    with pytest.raises(ValueError, match="trains the full model"):
        adversarial_removal(task, base, enc, FinetuneConfig(method="lora"))
