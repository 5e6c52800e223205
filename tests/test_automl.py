"""minift.automl: the search space, successive halving's cut, ASHA's promotion rule on a
scripted sequence of results, reproducibility, and bad input."""

import math
import random

import pytest

from minift.automl import (
    ASHA,
    Choice,
    IntRange,
    LogUniform,
    SearchSpace,
    Uniform,
    asha,
    parse_dimension,
    random_search,
    rungs,
    successive_halving,
)
from minift.automl.schedulers import total_steps_of
from minift.errors import UserError


def synthetic(config, steps):
    """A learning curve: the config's quality x, approached as steps grow."""
    return config["x"] * (1 - math.exp(-steps / 10))


SPACE = SearchSpace({"x": Uniform(0.0, 1.0), "method": Choice(("lora", "dora"))})


def test_rungs():
    assert rungs(1, 27, 3) == [1, 3, 9, 27]
    assert rungs(5, 60, 3) == [5, 15, 45, 60]
    assert rungs(8, 8, 2) == [8]


def test_successive_halving_keeps_the_top_one_over_eta_at_each_rung():
    result = successive_halving(
        synthetic, SPACE, n_trials=10, min_steps=2, max_steps=18, eta=3, seed=4
    )
    by_rung = {s: [t for t in result.trials if s in t.results] for s in (2, 6, 18)}
    assert [len(by_rung[s]) for s in (2, 6, 18)] == [10, 3, 1]
    for lower, upper in ((2, 6), (6, 18)):
        ranked = sorted(by_rung[lower], key=lambda t: t.results[lower], reverse=True)
        assert {t.id for t in by_rung[upper]} == {t.id for t in ranked[: len(by_rung[upper])]}
    assert result.total_steps == 10 * 2 + 3 * 6 + 1 * 18 == total_steps_of(10, 2, 18, 3)["halving"]
    # mode="min" keeps the lowest instead
    low = successive_halving(
        synthetic, SPACE, n_trials=9, min_steps=2, max_steps=6, eta=3, seed=4, mode="min"
    )
    kept = [t.results[2] for t in low.trials if 6 in t.results]
    dropped = [t.results[2] for t in low.trials if 6 not in t.results]
    assert len(kept) == 3 and max(kept) <= min(dropped)


def test_asha_promotes_exactly_as_its_rule_says():
    s = ASHA([1, 3, 9], eta=3, mode="max")
    script = {  # (trial, rung) -> result
        (0, 0): 0.5, (1, 0): 0.9, (2, 0): 0.1, (1, 1): 0.95, (3, 0): 0.7, (4, 0): 0.2,
        (5, 0): 0.8, (5, 1): 0.6, (6, 0): 0.3, (7, 0): 0.75, (8, 0): 0.05, (7, 1): 0.97,
        (7, 2): 0.99, (9, 0): 0.4,
    }  # fmt: skip
    jobs, next_new = [], 0
    for _ in range(len(script)):
        trial, rung = s.next_job()
        if trial is None:
            trial, next_new = next_new, next_new + 1
        jobs.append((trial, rung))
        s.report(trial, rung, script[(trial, rung)])
    assert jobs == [
        (0, 0), (1, 0), (2, 0),  # rung 0 holds 3: its top floor(3/3) = {1}
        (1, 1),                  # promoted at once, without waiting for a full rung
        (3, 0), (4, 0), (5, 0),  # at 4 and 5 results the top 1 is still {1}; at 6 the top 2 = {1, 5}
        (5, 1),                  # 5 goes up; rung 1 holds 2: top floor(2/3) = nobody
        (6, 0), (7, 0), (8, 0),  # rung 0 top 2 stays {1, 5} until it holds 9: top 3 = {1, 5, 7}
        (7, 1),                  # rung 1 = {1: .95, 5: .6, 7: .97}: its top 1 is 7
        (7, 2),                  # so 7 reaches the top rung
        (9, 0),                  # nothing promotable: a new trial
    ]  # fmt: skip
    assert s.promoted == [{1, 5, 7}, {7}, set()]


def test_asha_job_sequence_by_brute_force_rule():
    """The same rule written as a direct check: every promotion picks a trial that was,
    at that moment, in the top floor(n/eta) of its rung and not yet promoted."""
    rng = random.Random(0)
    s = ASHA([1, 3, 9], eta=3)
    values, new = {}, 0
    for _ in range(60):
        rungs_before = [dict(r) for r in s.rungs]
        promoted_before = [set(p) for p in s.promoted]
        trial, rung = s.next_job()
        if trial is None:
            for k in range(2):
                top = sorted(rungs_before[k], key=rungs_before[k].get, reverse=True)
                top = top[: len(top) // 3]
                assert set(top) <= promoted_before[k]  # nobody could be promoted
            trial, new = new, new + 1
            values[trial] = rng.random()
        else:
            k = rung - 1
            top = sorted(rungs_before[k], key=rungs_before[k].get, reverse=True)
            assert trial in top[: len(top) // 3] and trial not in promoted_before[k]
            for j in range(rung, 2):  # higher rungs had nothing promotable
                up = sorted(rungs_before[j], key=rungs_before[j].get, reverse=True)
                assert set(up[: len(up) // 3]) <= promoted_before[j]
        s.report(trial, rung, values[trial] + 0.01 * rung)


def test_search_with_a_fixed_seed_is_reproducible():
    space = SearchSpace({"x": Uniform(0, 1), "lr": LogUniform(1e-4, 1e-1), "r": IntRange(2, 16)})
    for search in (
        lambda seed: random_search(synthetic, space, 6, 9, seed=seed),
        lambda seed: successive_halving(synthetic, space, 9, 1, 9, seed=seed),
        lambda seed: asha(synthetic, space, 9, 1, 9, seed=seed),
    ):
        a, b, c = search(1), search(1), search(2)
        assert [t.config for t in a.trials] == [t.config for t in b.trials]
        assert a.history == b.history
        assert [t.config for t in a.trials] != [t.config for t in c.trials]


def test_asha_spends_fewer_steps_than_random_search_on_the_same_trials():
    rs = random_search(synthetic, SPACE, 27, 27, seed=0)
    ah = asha(synthetic, SPACE, 27, 1, 27, seed=0)
    assert ah.total_steps < rs.total_steps / 2
    # same sampled configs (same seed, same order)
    assert [t.config for t in ah.trials] == [t.config for t in rs.trials]
    assert ah.best().steps == 27 and ah.best().value <= rs.best().value


def test_space_sampling_and_parsing():
    rng = random.Random(0)
    lr = LogUniform(1e-4, 1e-2)
    draws = [lr.sample(rng) for _ in range(4000)]
    assert all(1e-4 <= d <= 1e-2 for d in draws)
    below = sum(d < 1e-3 for d in draws) / len(draws)  # half the log-range lies below 1e-3
    assert abs(below - 0.5) < 4.5 * math.sqrt(0.25 / len(draws))
    assert parse_dimension("lr=1e-4:3e-2:log") == ("lr", LogUniform(1e-4, 3e-2))
    assert parse_dimension("dropout=0:0.3") == ("dropout", Uniform(0.0, 0.3))
    assert parse_dimension("r=2..16") == ("r", IntRange(2, 16))
    assert parse_dimension("method=lora,dora") == ("method", Choice(("lora", "dora")))


def test_bad_input():
    with pytest.raises(UserError, match="range .* is empty"):
        LogUniform(1e-2, 1e-4)
    with pytest.raises(UserError, match="integer range 8..2 is empty"):
        parse_dimension("r=8..2")
    with pytest.raises(UserError, match="uniform range"):
        Uniform(1.0, 1.0)
    with pytest.raises(UserError, match="at least one option"):
        Choice(())
    with pytest.raises(UserError, match="cannot read search dimension"):
        parse_dimension("lr")
    with pytest.raises(UserError, match="cannot read numbers"):
        parse_dimension("lr=a:b")
    with pytest.raises(UserError, match="eta must be >= 2"):
        rungs(1, 9, 1)
    with pytest.raises(UserError, match="min_steps <= max_steps"):
        asha(synthetic, SPACE, 3, 10, 5)
    with pytest.raises(UserError, match="n_trials must be >= 1"):
        random_search(synthetic, SPACE, 0, 5)
