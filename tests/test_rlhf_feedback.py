"""The feedback loop run from a file of answers, its output feeding the next DPO run, and
the `minift rlhf` / `minift feedback` commands."""

import argparse
import json

import pytest
import torch

import minift.cli
from minift.cli import rlhf as rlhf_cli
from minift.model import GPT
from minift.recipes.pretrain import load_base
from minift.rlhf.dpo import pair_logprobs
from minift.rlhf.feedback import collect_feedback, read_answers, terminal_answers
from minift.rlhf.preference import encode_pairs, load_preferences

PROMPTS = ["Return the", "Create a", "Open the"]


@pytest.fixture(scope="module")
def base():
    return load_base(verbose=False)


@pytest.fixture(scope="module")
def model_dir(base, tmp_path_factory):
    path = tmp_path_factory.mktemp("policy")
    base[0].save(path)
    return path


def run_cli(argv):
    """Parse and run through this package's register(), as minift.cli will."""
    parser = argparse.ArgumentParser(prog="minift")
    rlhf_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def test_answers_from_a_file_are_recorded_as_preferences(base, tmp_path):
    model, enc = base
    out = tmp_path / "prefs.jsonl"
    shown = []
    result = collect_feedback(
        model, enc, PROMPTS, out, rounds=5, answers=["1", "2", "s", "1", "q"], seed=0,
        show=shown.append,
    )  # fmt: skip
    rows = load_preferences(out)
    assert len(rows) == len(result.recorded) == 3 and result.skipped == 1
    # each row holds what was shown, in the order the answer gave
    screens = [s for s in shown if s.startswith("\nPrompt:")]
    for row, screen, answer in zip(rows, [screens[0], screens[1], screens[3]], ["1", "2", "1"]):
        first = screen.split("\n  [1] ")[1].split("\n  [2] ")[0]
        second = screen.split("\n  [2] ")[1]
        preferred, other = (first, second) if answer == "1" else (second, first)
        assert preferred == row["prompt"] + row["chosen"]
        assert other == row["prompt"] + row["rejected"]
    # a second session appends to the same file
    collect_feedback(
        model, enc, PROMPTS, out, rounds=2, answers=["2", "2"], seed=1, show=lambda s: None
    )
    assert len(load_preferences(out)) == 5


def test_the_next_dpo_run_uses_the_recorded_feedback(base, model_dir, tmp_path):
    model, enc = base
    out = tmp_path / "prefs.jsonl"
    answers = tmp_path / "answers.txt"
    answers.write_text("1\n2\n\n1\n2\n1\n")
    run_cli([
        "feedback", "--model", str(model_dir), "--out", str(out), "--answers", str(answers),
        "--rounds", "5", "--max-new-tokens", "8",
    ])  # fmt: skip
    assert len(load_preferences(out)) == 5
    report_dir = tmp_path / "run"
    run_cli([
        "rlhf", "--method", "dpo", "--data", str(out), "--model", str(model_dir), "--steps", "4",
        "--batch-size", "4", "--eval-samples", "8", "--max-new-tokens", "8", "--out",
        str(report_dir), "--save", str(tmp_path / "trained"),
    ])  # fmt: skip
    report = json.loads((report_dir / "report.json").read_text())
    assert report["method"] == "dpo" and "kl" in report["trained"]
    # The saved policy learned the recorded preferences: DPO's implicit reward margin
    # [log pi(y_c) - log ref(y_c)] - [log pi(y_r) - log ref(y_r)] is positive on them.
    # (A sampled KL estimate on 8 responses is too noisy to show the move.)
    trained = GPT.load(tmp_path / "trained")
    pairs = encode_pairs(load_preferences(out), enc, model.config.block_size)
    pc, pr = pair_logprobs(trained.eval(), pairs, enc)
    rc, rr = pair_logprobs(model.eval(), pairs, enc)
    margin = (pc - rc) - (pr - rr)
    assert margin.mean() > 0, margin


def test_bad_answers_name_the_line_and_nothing_is_written(base, model_dir, tmp_path):
    answers = tmp_path / "answers.txt"
    answers.write_text("1\n2\nmaybe\n")
    with pytest.raises(ValueError, match=r"answers\.txt line 3: 'maybe' is not an answer"):
        read_answers(answers)
    out = tmp_path / "prefs.jsonl"
    with pytest.raises(ValueError, match="line 3"):
        run_cli(
            ["feedback", "--model", str(model_dir), "--out", str(out), "--answers", str(answers)]
        )
    assert not out.exists()


def test_a_broken_preference_file_is_reported_before_any_question(base, tmp_path):
    model, enc = base
    out = tmp_path / "prefs.jsonl"
    out.write_text('{"prompt": "p", "chosen": "a"}\n')
    asked = []
    with pytest.raises(ValueError, match="line 1: missing field 'rejected'"):
        collect_feedback(model, enc, PROMPTS, out, answers=iter(asked), show=asked.append)
    assert asked == [] and out.read_text() == '{"prompt": "p", "chosen": "a"}\n'


def test_terminal_answers_ask_again_after_an_invalid_one_and_stop_at_eof(capsys):
    typed = iter(["x", " 2 ", "S"])

    def ask(prompt):
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    assert list(terminal_answers(ask)) == ["2", "s"]
    assert "'x' is not an answer" in capsys.readouterr().out


def test_the_commands_plug_into_minift_cli():
    assert "minift.cli.rlhf" in minift.cli.CLI_MODULES
    parser = minift.cli.build_parser()
    args = parser.parse_args(["rlhf", "--method", "best-of-n", "-n", "4"])
    assert args.func is rlhf_cli.cmd_rlhf and args.n == 4
    args = parser.parse_args(["feedback", "--rounds", "3"])
    assert args.func is rlhf_cli.cmd_feedback
    with pytest.raises(SystemExit):
        parser.parse_args(["rlhf", "--method", "reinforce"])
    assert minift.cli.main(["rlhf", "--data", "/no/such/prefs.jsonl"]) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--iterations", "0"], "iterations"),  # once read as "the default" (args.x or 50)
        (["--batch-size", "0"], "batch_size"),
        (["--lr", "0"], "lr must be a finite number > 0"),
        (["--lr", "nan"], "lr must be a finite number > 0"),
        (["--method", "dpo", "--steps", "0"], "steps >= 1"),
        (["--method", "dpo", "--batch-size", "0"], "batch_size >= 1"),
        (["--method", "dpo", "--lr", "-1"], "lr must be a finite number > 0"),
        (["--method", "best-of-n", "--lora", "4"], "best-of-n trains nothing"),
        (["--rm-steps", "0"], "rm_steps"),
    ],
)
def test_invalid_values_are_refused_before_anything_loads(argv, message):
    with pytest.raises(ValueError, match=message):
        run_cli(["rlhf", "--model", "/no/such/model", *argv])


def test_cli_defaults_are_the_configs_defaults():
    from minift.recipes.rlhf import RLHFJob

    parser = argparse.ArgumentParser(prog="minift")
    rlhf_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["rlhf"])
    job = RLHFJob()
    assert (args.iterations, args.steps, args.kl_coef, args.beta) == (
        job.ppo.iterations, job.dpo.train.steps, job.ppo.kl_coef, job.dpo.beta
    )  # fmt: skip
    assert args.batch_size is None and args.lr is None  # each method's own default


def test_dpo_with_lora_from_the_cli_saves_a_policy_that_loads(base, model_dir, tmp_path):
    model, enc = base
    rows = [
        {"prompt": p, "chosen": " the file path.", "rejected": " it."}
        for p in ("Return the", "Open a", "Create the", "Read the")
    ]
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_cli([
        "rlhf", "--method", "dpo", "--lora", "4", "--data", str(data), "--model", str(model_dir),
        "--steps", "6", "--batch-size", "4", "--lr", "1e-2", "--eval-samples", "4",
        "--max-new-tokens", "4", "--out", str(tmp_path / "run"), "--save", str(tmp_path / "p"),
    ])  # fmt: skip
    saved = GPT.load(tmp_path / "p").eval()  # LoRA merged: a plain minift model folder
    assert set(saved.state_dict()) == set(model.state_dict())
    for name, tensor in model.state_dict().items():  # only LoRA's targets moved
        moved = not torch.equal(saved.state_dict()[name], tensor)
        assert moved == name.endswith(("c_attn.weight", "c_fc.weight")), name
    pairs = encode_pairs(rows, enc, model.config.block_size)
    pc, pr = pair_logprobs(saved, pairs, enc)
    rc, rr = pair_logprobs(model.eval(), pairs, enc)
    assert ((pc - rc) - (pr - rr)).mean() > 0  # it learned the preference through LoRA


def test_sample_recorder_keeps_every_truth_and_reward_in_order():
    import torch

    from minift.rlhf.evaluate import SampleRecorder

    rec = SampleRecorder(lambda seqs, mask: seqs.float().sum(1), truth=len)
    assert rec.score("abc") == 3 and rec.score("") == 0
    out = rec(torch.tensor([[1, 2], [3, 4]]), torch.ones(2, 2))
    assert out.tolist() == [3.0, 7.0] and rec.reward == [3.0, 7.0] and rec.truth == [3, 0]
    with pytest.raises(ValueError, match="no reward model"):
        SampleRecorder()(torch.zeros(1, 1), torch.ones(1, 1))
