"""`minift rate`, `minift agreement` and `minift ratings-to-prefs` through minift.cli.main,
with scripted answers: end of input mid-way, resuming, Ctrl-C, the terminal, least sure
first, the bad inputs, and pairwise ratings feeding `minift rlhf --method dpo`."""

import builtins
import json

import pytest

import minift.cli
from minift.rating import read_ratings
from minift.recipes.pretrain import load_base
from minift.recipes.rate import RateJob, ratings_to_preferences, run_rate
from minift.rlhf.preference import load_preferences


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model, _ = load_base(verbose=False)
    path = tmp_path_factory.mktemp("policy")
    model.save(path)
    return path


def rate(tmp_path, model_dir, answers, *extra, rater="ana", out="r.jsonl"):
    f = tmp_path / f"answers-{rater}.txt"
    f.write_text("".join(a + "\n" for a in answers))
    argv = ["rate", "--rater", rater, "--model", str(model_dir), "--out", str(tmp_path / out),
            "--answers", str(f), "--items", "6", "--max-new-tokens", "8", *extra]  # fmt: skip
    return minift.cli.main(argv)


def test_end_of_input_mid_way_then_resume_shows_only_the_rest(tmp_path, model_dir, capsys):
    out = tmp_path / "r.jsonl"
    assert rate(tmp_path, model_dir, ["4", "s", "2"]) == 0
    first = capsys.readouterr().out
    assert "end of input: recorded 2 rating(s)" in first and "(1 skipped)" in first
    rows = read_ratings(out)
    assert [r["score"] for r in rows] == [4, 2] and {r["rater"] for r in rows} == {"ana"}
    before = out.read_text()
    # the second session skips the two rated items, shows the other four, appends
    assert rate(tmp_path, model_dir, ["1", "5", "3", "3", "3"]) == 0
    second = capsys.readouterr().out
    assert "2 already rated by ana" in second and second.count("Prompt:") == 4
    assert out.read_text().startswith(before) and len(read_ratings(out)) == 6
    assert "no items left" in second
    # every rated item was shown exactly as recorded
    for r in read_ratings(out):
        assert f"{r['prompt']}{r['outputs'][0]}" in first + second
    # another rater rates the same items: agreement is computed over them
    assert rate(tmp_path, model_dir, ["4", "2", "1", "5", "3", "3"], rater="bo") == 0
    capsys.readouterr()
    assert minift.cli.main(["agreement", str(out)]) == 0
    table = capsys.readouterr().out
    assert "12 score rating(s) by 2 rater(s): ana, bo" in table
    assert "Krippendorff's alpha (ordinal)" in table and "Cohen's kappa (quadratic) ana vs bo" in table  # fmt: skip


def test_quit_and_ctrl_c_keep_what_was_recorded(tmp_path, model_dir, capsys):
    out = tmp_path / "r.jsonl"
    job = RateJob(rater="cy", model=str(model_dir), out=str(out), items=5, max_new_tokens=8)

    def interrupted():
        yield "3"
        raise KeyboardInterrupt

    result = run_rate(job, answers=interrupted())
    assert result.stopped == "interrupted" and [r["score"] for r in read_ratings(out)] == [3]
    assert "interrupted (Ctrl-C): recorded 1 rating(s)" in capsys.readouterr().out
    assert rate(tmp_path, model_dir, ["5", "q", "1"], rater="cy") == 0
    assert "quit: recorded 1 rating(s)" in capsys.readouterr().out
    assert [r["score"] for r in read_ratings(out)] == [3, 5]


def test_the_terminal_asks_again_after_an_invalid_answer(tmp_path, model_dir, monkeypatch, capsys):  # fmt: skip
    typed = iter(["9", "good", "2", "1"])

    def fake_input(prompt):
        assert "Which output is better?" in prompt
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr(builtins, "input", fake_input)
    out = tmp_path / "p.jsonl"
    argv = ["rate", "--rater", "dee", "--mode", "pair", "--model", str(model_dir), "--out",
            str(out), "--items", "4", "--max-new-tokens", "8"]  # fmt: skip
    assert minift.cli.main(argv) == 0
    said = capsys.readouterr().out
    assert "'9' is not an answer: type 1, 2, s or q" in said and "'good' is not an answer" in said
    assert [r["preferred"] for r in read_ratings(out)] == [2, 1]
    assert "end of input" in said


def test_pairs_least_sure_first_and_their_preferences_train_dpo(tmp_path, model_dir, capsys):
    from minift.recipes.rate import make_items, uncertainty_order
    from minift.recipes.rlhf import load_policy
    from minift.recipes.rlhf_stages import default_reward_model, task_prompts
    from minift.rlhf.preference import encode_pairs
    from minift.rlhf.reward import score_pairs

    out = tmp_path / "p.jsonl"
    extra = ["--mode", "pair", "--by-uncertainty"]
    assert rate(tmp_path, model_dir, ["1"] * 6, *extra, out="p.jsonl") == 0
    assert rate(tmp_path, model_dir, ["1", "2", "2", "1", "2", "1"], *extra, rater="bo", out="p.jsonl") == 0  # fmt: skip
    assert "least sure first" in capsys.readouterr().out
    rows = read_ratings(out)
    # shown in order of the reward model's |margin|, smallest first
    policy, enc = load_policy(str(model_dir))
    job = RateJob(rater="x", mode="pair", items=6, max_new_tokens=8)
    items, _ = make_items(policy, enc, task_prompts("val"), job)
    rm, _ = default_reward_model(verbose=False)
    pairs = [{"prompt": i.prompt, "chosen": i.outputs[0], "rejected": i.outputs[1]} for i in items]  # fmt: skip
    a, b = score_pairs(rm, encode_pairs(pairs, enc, rm.config.block_size), enc)
    margins = {it.id: abs(float(x - y)) for it, x, y in zip(items, a, b)}
    shown = [margins[r["item"]] for r in rows if r["rater"] == "ana"]
    assert shown == sorted(shown) and len(shown) == len(items)
    assert uncertainty_order(items, [0.0] * len(items), "pair", enc) == sorted(range(len(items)), key=lambda i: margins[items[i].id])  # fmt: skip
    # to preferences: the majority of two raters, ties dropped
    prefs, ties = ratings_to_preferences(rows)
    assert len(prefs) + ties == len(items) and ties == sum(
        len({r["preferred"] for r in rows if r["item"] == it.id}) == 2 for it in items
    )
    for p in prefs:
        assert p["margin"] == 0.5 and p["chosen"] != p["rejected"]
    prefs_path = tmp_path / "prefs.jsonl"
    assert minift.cli.main(["ratings-to-prefs", str(out), "--out", str(prefs_path)]) == 0
    assert load_preferences(prefs_path) == prefs
    assert "minift rlhf --method dpo --data" in capsys.readouterr().out
    argv = ["rlhf", "--method", "dpo", "--data", str(prefs_path), "--model", str(model_dir),
            "--steps", "2", "--batch-size", "2", "--eval-samples", "4", "--max-new-tokens", "4",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert minift.cli.main(argv) == 0
    assert json.loads((tmp_path / "run" / "report.json").read_text())["method"] == "dpo"


def test_bad_inputs_are_one_line_errors_and_nothing_is_lost(tmp_path, model_dir, capsys):
    out = tmp_path / "r.jsonl"
    good = {"rater": "ana", "item": "abc", "prompt": "Open", "outputs": [" x"], "score": 3}
    torn = json.dumps(good) + "\n" + '{"rater": "bo", "item": "ab'
    out.write_text(torn)
    assert rate(tmp_path, model_dir, ["4"]) == 2
    err = capsys.readouterr().err
    assert "r.jsonl line 2: torn last line" in err and err.count("\n") == 1
    assert out.read_text() == torn  # untouched
    assert minift.cli.main(["agreement", str(out)]) == 2
    out.write_text(json.dumps({**good, "name": "ana"}) + "\n")
    assert minift.cli.main(["agreement", str(out)]) == 2
    assert "line 1: unknown field(s) ['name']" in capsys.readouterr().err
    out.write_text(json.dumps({k: v for k, v in good.items() if k != "rater"}) + "\n")
    assert rate(tmp_path, model_dir, ["4"]) == 2
    assert "line 1: missing field 'rater'" in capsys.readouterr().err
    # answers checked before anything is sampled; nothing written
    fresh = tmp_path / "fresh.jsonl"
    assert rate(tmp_path, model_dir, ["4", "seven"], out="fresh.jsonl") == 2
    assert "line 2: 'seven' is not an answer" in capsys.readouterr().err and not fresh.exists()
    # a name is required; a bad mode or count is refused
    with pytest.raises(SystemExit):
        minift.cli.main(["rate"])
    assert minift.cli.main(["rate", "--rater", " ", "--out", str(fresh)]) == 2
    assert "--rater NAME" in capsys.readouterr().err
    assert minift.cli.main(["rate", "--rater", "a", "--items", "0"]) == 2
    assert minift.cli.main(["ratings-to-prefs", str(tmp_path / "none.jsonl"), "--out", str(fresh)]) == 2  # fmt: skip
    scores = tmp_path / "s.jsonl"
    scores.write_text('{"item": "abc", "reward": "high"}\n')
    out.write_text(json.dumps(good) + "\n")
    assert minift.cli.main(["agreement", str(out), "--scores", str(scores)]) == 2
    assert "score 'reward' must be a finite number" in capsys.readouterr().err


def test_agreement_with_automatic_scores(tmp_path, capsys):
    out, scores = tmp_path / "r.jsonl", tmp_path / "s.jsonl"
    rows, auto = [], []
    for i in range(8):
        for rater, shift in (("a", 0), ("b", 1)):
            rows.append({"rater": rater, "item": f"i{i}", "outputs": [f"o{i}"], "score": min(5, 1 + i // 2 + shift)})  # fmt: skip
        auto.append({"item": f"i{i}", "reward": i * 0.5, "perplexity": 100 - i})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scores.write_text("".join(json.dumps(r) + "\n" for r in auto))
    assert minift.cli.main(["agreement", str(out), "--scores", str(scores)]) == 0
    said = capsys.readouterr().out
    line = next(x for x in said.splitlines() if x.startswith("Spearman rho (mean rating, reward)"))
    assert float(line.split()[-2]) > 0.9
    line = next(x for x in said.splitlines() if x.startswith("Kendall tau-b (mean rating, perplexity)"))  # fmt: skip
    assert float(line.split()[-2]) < -0.9


def test_scores_cannot_become_preferences():
    with pytest.raises(ValueError, match="a score, not a preference"):
        ratings_to_preferences([{"rater": "a", "item": "i", "outputs": ["x"], "score": 3}])


def test_single_outputs_least_sure_first_follow_the_policys_log_probability(tmp_path, model_dir, capsys):  # fmt: skip
    from minift.recipes.rate import make_items
    from minift.recipes.rlhf import load_policy
    from minift.recipes.rlhf_stages import task_prompts

    assert rate(tmp_path, model_dir, ["3"] * 6, "--by-uncertainty") == 0
    policy, enc = load_policy(str(model_dir))
    items, certainty = make_items(policy, enc, task_prompts("val"), RateJob(rater="x", items=6, max_new_tokens=8))  # fmt: skip
    sure = {it.id: c for it, c in zip(items, certainty)}
    shown = [sure[r["item"]] for r in read_ratings(tmp_path / "r.jsonl")]
    assert len(shown) == len(items) and shown == sorted(shown)
    assert len(set(certainty)) > 1  # the order is not a tie broken by position
