"""Ratings files (reading, appending, resuming, the bad inputs), the shared terminal loop,
the simulated panel, uncertainty ordering, and the agreement table."""

import json
import math

import numpy as np
import pytest

from minift import ask
from minift.rating import (
    Item,
    SimulatedRater,
    agreement_table,
    append_ratings,
    category_counts,
    cohen_kappa,
    confidence_order,
    correlations,
    fleiss_kappa,
    krippendorff_alpha,
    labelling_curve,
    margin_order,
    panel,
    rated_items,
    rating_matrix,
    ratings_to_reach,
    read_ratings,
    simulate_ratings,
)
from minift.rating.records import item_id


def score_row(rater, prompt, output, score):
    return {"rater": rater, "item": item_id(prompt, [output]), "prompt": prompt, "outputs": [output], "score": score}  # fmt: skip


def write_rows(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


# --- the ratings file -------------------------------------------------------------------


def test_append_then_read_round_trip_and_resume_keys(tmp_path):
    path = tmp_path / "r.jsonl"
    rows = [score_row("ana", "Return", f" the file {i}\u2028x", 1 + i % 5) for i in range(4)]
    rows.append({"rater": "bo", "item": "p1", "outputs": ["a", "b"], "preferred": 2, "sources": ["m1", "m2"]})  # fmt: skip
    append_ratings(path, rows[:2])
    append_ratings(path, rows[2:])
    assert read_ratings(path) == rows
    assert rated_items(path, "ana") == {r["item"] for r in rows[:4]}
    assert rated_items(path, "bo") == {"p1"} and rated_items(tmp_path / "none.jsonl", "x") == set()


def test_a_complete_last_line_without_newline_is_kept_and_extended(tmp_path):
    path = tmp_path / "r.jsonl"
    first, second = score_row("ana", "Open", " a", 4), score_row("bo", "Open", " a", 2)
    path.write_text(json.dumps(first))  # written by hand: valid, no final newline
    append_ratings(path, [second])
    assert read_ratings(path) == [first, second] and path.read_text().endswith("}\n")


def test_a_torn_last_line_is_a_clear_error_and_nothing_is_rewritten(tmp_path):
    path = tmp_path / "r.jsonl"
    good = [score_row("ana", "Open", " a file", 4), score_row("bo", "Open", " a file", 3)]
    write_rows(path, good, tail='{"rater": "ana", "item": "x", "outp')
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"r\.jsonl line 3: torn last line .* 2 row\(s\) above it are intact"):  # fmt: skip
        read_ratings(path)
    with pytest.raises(ValueError, match="torn last line"):
        append_ratings(path, [score_row("cy", "Open", " a file", 5)])
    assert path.read_bytes() == before
    # a bad line that is not the last one is invalid JSON, not a torn write
    write_rows(path, good[:1], tail="{oops\n" + json.dumps(good[1]) + "\n")
    with pytest.raises(ValueError, match="line 2: invalid JSON"):
        read_ratings(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("rater"), r"line 2: missing field 'rater' \(who gave this rating\)"),
        (lambda r: r.update(raterr=r.pop("rater")), r"line 2: unknown field\(s\) \['raterr'\]"),
        (lambda r: r.update(rater=""), "line 2: field 'rater' must be a non-empty string"),
        (lambda r: r.update(rater=7), "line 2: field 'rater' must be a non-empty string"),
        (lambda r: r.update(score=6), "score must be an integer from 1 to 5"),
        (lambda r: r.update(score=True), "score must be an integer"),
        (lambda r: r.update(preferred=1), "exactly one of 'score'"),
        (lambda r: r.update(outputs=[]), "'outputs' must be a list of 1 or 2 strings"),
        (
            lambda r: r.update(sources=["a", "b"]),
            "'sources' must be a list of strings, one per output",
        ),  # fmt: skip
    ],
)
def test_bad_rows_name_file_line_and_problem(tmp_path, change, message):
    path = tmp_path / "r.jsonl"
    rows = [score_row("ana", "Open", " a file", 4), score_row("bo", "Open", " a file", 3)]
    change(rows[1])
    write_rows(path, rows)
    with pytest.raises(ValueError, match=message):
        read_ratings(path)
    assert str(path) in str(pytest.raises(ValueError, read_ratings, path).value)


def test_a_rater_rating_the_same_item_twice_is_named(tmp_path):
    path = tmp_path / "r.jsonl"
    write_rows(path, [score_row("ana", "Open", " a", 4), score_row("ana", "Open", " a", 2)])
    with pytest.raises(ValueError, match=r"line 2: rater 'ana' rated item .* twice \(first on line 1\)"):  # fmt: skip
        read_ratings(path)


def test_rating_matrix_and_mixed_kinds():
    rows = [score_row("a", "p", "x", 1), score_row("b", "p", "y", 5), score_row("a", "p", "y", 3)]
    raters, items, values = rating_matrix(rows)
    assert raters == ["a", "b"] and len(items) == 2
    assert values[0] == [1.0, 3.0] and math.isnan(values[1][0]) and values[1][1] == 5.0
    with pytest.raises(ValueError, match="mix scores and preferences"):
        rating_matrix(rows + [{"rater": "a", "item": "q", "outputs": ["1", "2"], "preferred": 1}])


# --- the terminal loop (minift.ask) -----------------------------------------------------


def test_ask_loop_records_skips_quits_and_resumes(tmp_path):
    out = tmp_path / "answers.jsonl"
    items = ["a", "b", "c", "d", "e"]
    shown = []
    result = ask.ask_loop(items, str.upper, iter(["1", "s", "2", "q"]), lambda it, a: {"it": it, "a": a}, out, show=shown.append)  # fmt: skip
    assert shown == ["A", "B", "C", "D"] and result.stopped == "quit" and result.skipped == 1
    assert [json.loads(x) for x in out.read_text().splitlines()] == [{"it": "a", "a": "1"}, {"it": "c", "a": "2"}]  # fmt: skip
    # resume: items already recorded are passed over unseen; the end of the answers stops it
    shown.clear()
    done = {json.loads(x)["it"] for x in out.read_text().splitlines()}
    result = ask.ask_loop(items, str.upper, iter(["1"]), lambda it, a: {"it": it, "a": a}, out, key=str, done=done, show=shown.append)  # fmt: skip
    assert shown == ["B", "D"] and result.resumed == 2 and result.stopped == "end of input"
    assert len(out.read_text().splitlines()) == 3
    assert "end of input: recorded 1 answer(s)" in ask.summary(result)


def test_ctrl_c_keeps_everything_recorded(tmp_path):
    out = tmp_path / "answers.jsonl"

    def answers():
        yield "1"
        yield "2"
        raise KeyboardInterrupt

    result = ask.ask_loop(range(10), str, answers(), lambda it, a: {"it": it}, out, show=lambda s: None)  # fmt: skip
    assert result.stopped == "interrupted" and len(result.recorded) == 2
    assert out.read_text() == '{"it": 0}\n{"it": 1}\n'
    assert ask.summary(result).startswith("interrupted (Ctrl-C): recorded 2")


def test_terminal_asks_again_and_answers_file_is_checked(tmp_path, capsys):
    typed = iter(["7", "3", "", "q"])

    def fake_input(prompt):
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    choices = {"1": "", "2": "", "3": "", "s": "", "q": ""}
    assert list(ask.terminal_answers("? ", choices, fake_input)) == ["3", "q"]
    assert "'7' is not an answer: type 1, 2, 3, s or q" in capsys.readouterr().out
    f = tmp_path / "a.txt"
    f.write_text("1\n\n S \n9\n")
    with pytest.raises(ValueError, match=r"a\.txt line 4: '9' is not an answer"):
        ask.read_answers(f, choices)
    with pytest.raises(FileNotFoundError, match="answers file"):
        ask.read_answers(tmp_path / "missing.txt", choices)


# --- the simulated panel ----------------------------------------------------------------


def judge(text: str) -> float:
    return float(text.count("file"))


ITEMS = [Item("Open", (f" {'file ' * (i % 4)}x{i}",)) for i in range(40)]


def test_noise_free_raters_agree_perfectly_and_follow_the_judge():
    rows = simulate_ratings(panel(3, noise=0.0), ITEMS, judge)
    raters, items, values = rating_matrix(rows)
    x = np.array(values)
    assert (x == np.array([[2 + judge(it.outputs[0]) for it in ITEMS]] * 3)).all()
    assert krippendorff_alpha(x, "ordinal") == 1.0 and fleiss_kappa(category_counts(x)[1]) == 1.0


def test_agreement_falls_as_noise_rises():
    alphas = []
    for noise in (0.3, 1.0, 3.0):
        x = np.array(rating_matrix(simulate_ratings(panel(4, noise, seed=1), ITEMS * 3, judge))[2])  # fmt: skip
        alphas.append(krippendorff_alpha(x, "interval"))
    assert alphas[0] > alphas[1] > alphas[2], alphas


def test_bias_coverage_and_pairs():
    lenient, harsh = SimulatedRater("l", 0.0, bias=1.0), SimulatedRater("h", 0.0, bias=-1.0)
    rows = simulate_ratings([lenient, harsh], ITEMS, judge)
    lv = [r["score"] for r in rows if r["rater"] == "l"]
    hv = [r["score"] for r in rows if r["rater"] == "h"]
    assert all(a >= b for a, b in zip(lv, hv)) and sum(lv) > sum(hv)
    partial = simulate_ratings([SimulatedRater("p", 0.5, coverage=0.5, seed=3)], ITEMS * 5, judge)
    assert 0.3 < len(partial) / 200 < 0.7
    pairs = [Item("Open", (" file x", " y")), Item("Open", (" y", " file x"))]
    prefs = simulate_ratings([SimulatedRater("c", 0.0)], pairs, judge)
    assert [r["preferred"] for r in prefs] == [1, 2]
    first = simulate_ratings([SimulatedRater("f", 0.0, bias=5.0)], pairs, judge)
    assert [r["preferred"] for r in first] == [1, 1]  # a strong position bias wins
    with pytest.raises(ValueError, match="noise"):
        SimulatedRater("x", noise=-1)
    with pytest.raises(ValueError, match="coverage"):
        SimulatedRater("x", coverage=0)


# --- uncertainty ------------------------------------------------------------------------


def test_margin_and_confidence_order():
    assert margin_order([2.0, -0.1, 0.5, -3.0]).tolist() == [1, 2, 0, 3]
    assert confidence_order([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8]]).tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="distributions"):
        confidence_order([[0.9, 0.3]])


def test_labelling_curve_by_hand_and_uncertainty_beats_random():
    model = np.array([1, 0, 1, 1])
    human = np.array([1, 1, 1, 0])
    truth = np.array([1, 1, 0, 0])
    # start: model right on items 0, 1? (no), 2? (no), 3? (no) -> 1/4
    curve = labelling_curve([1, 3, 2, 0], model, human, truth)
    assert curve.tolist() == [0.25, 0.5, 0.75, 0.75, 0.75]
    assert ratings_to_reach(curve, 0.75) == 2 and ratings_to_reach(curve, 0.9) is None
    # a noisy model whose errors sit at small margins: least-sure-first fixes them sooner
    rng = np.random.default_rng(0)
    n = 300
    truth = rng.integers(0, 2, n)
    margins = (2 * truth - 1) * rng.exponential(1.0, n) + rng.normal(0, 0.5, n)
    model = (margins > 0).astype(int)
    human = np.where(rng.random(n) < 0.9, truth, 1 - truth)
    smart = labelling_curve(margin_order(margins), model, human, truth)
    rand = np.mean([labelling_curve(rng.permutation(n), model, human, truth) for _ in range(20)], 0)  # fmt: skip
    assert smart[-1] == pytest.approx(rand[-1]) and smart[0] == rand[0]
    assert smart[n // 5] > rand[n // 5] + 0.02
    with pytest.raises(ValueError, match="permutation"):
        labelling_curve([0, 0, 1, 2], model[:4], human[:4], truth[:4])


# --- the agreement table ----------------------------------------------------------------


def test_agreement_table_agrees_with_the_functions():
    rows = simulate_ratings(panel(3, 0.8, coverage=0.8, seed=2), ITEMS, judge)
    table = {r.measure: r for r in agreement_table(rows)}
    raters, items, values = rating_matrix(rows)
    x = np.array(values)
    both = ~np.isnan(x[0]) & ~np.isnan(x[1])
    q = table["Cohen's kappa (quadratic) sim1 vs sim2"]
    assert q.value == cohen_kappa(x[0, both], x[1, both], "quadratic") and q.n == both.sum()
    assert table["Krippendorff's alpha (ordinal)"].value == krippendorff_alpha(x, "ordinal")
    complete = ~np.isnan(x).any(0)
    fleiss = table["Fleiss' kappa (3 raters)"]
    assert fleiss.n == complete.sum() and fleiss.value == fleiss_kappa(category_counts(x[:, complete])[1])  # fmt: skip
    # one rater: only alpha rows, each not computable, with the reason
    lone = agreement_table([r for r in rows if r["rater"] == "sim1"])
    assert all(math.isnan(r.value) and r.note for r in lone)
    # correlation with an automatic score that is the judge itself: positive
    auto = {"judge": {it.id: judge(it.outputs[0]) for it in ITEMS}}
    corr = {r.measure: r.value for r in correlations(rows, auto)}
    assert corr["Spearman rho (mean rating, judge)"] > 0.5


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"item": "a", "reward": 1}\n{"item": 3}\n', r"line 2: a score row is an object with a string field 'item'"),  # noqa: E501
        ('{"item": "a", "reward": "x"}\n', r"line 1: score 'reward' must be a finite number"),
        ("\n", "no scores"),
        ('{"item": "a"}\n{bad\n', r"line 2: invalid JSON"),
        ('{"item": "a", "reward": 1}\n{"item": "b", "rew', r"line 2: torn last line"),
        ("[1]\n", r"line 1: expected a JSON object"),
    ],
)  # fmt: skip
def test_bad_scores_files_name_file_line_and_problem(tmp_path, text, message):
    from minift.rating.records import read_scores

    path = tmp_path / "s.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_scores(path)
    path.write_text('{"item": "a", "reward": 1.5, "ppl": 3}\n{"item": "b", "reward": 2}\n')
    assert read_scores(path) == {"reward": {"a": 1.5, "b": 2.0}, "ppl": {"a": 3.0}}
