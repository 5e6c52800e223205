"""The `minift` command: every technique's subcommands are reachable from the one entry
point, `minift tasks` lists every registered task, and user errors exit with status 2 and
a one-line message instead of a traceback."""

import pytest

import minift.cli
from minift.recipes.tasks import list_tasks


def subcommands(parser) -> set[str]:
    return set(parser._subparsers._group_actions[0].choices)


def test_every_technique_adds_its_subcommands():
    names = subcommands(minift.cli.build_parser())
    core = {"pretrain", "generate", "finetune", "demo", "tasks"}
    assert core | {"distill", "rlhf", "feedback"} <= names, names


def test_tasks_lists_every_registered_task(capsys):
    assert minift.cli.main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in ("stdlib-package", "sort-words", "long-passkey", "file-words"):
        assert name in list_tasks()
        assert f"{name}:" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["finetune", "--task", "no-such-task"], "no-such-task"),
        (["rlhf", "--data", "/no/such/prefs.jsonl"], "prefs.jsonl"),
        (["demo", "--threads", "0", "--steps", "1"], "threads must be >= 1"),
        (["demo", "--base", "huge", "--steps", "1"], "unknown base size 'huge'"),
        (["pretrain", "--size", "huge"], "unknown base size 'huge'"),
    ],
)
def test_user_errors_exit_2_with_a_message(argv, message, capsys):
    assert minift.cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("minift: error:") and message in err, err


def test_lora_rank_has_a_spelling_torchrun_lets_through():
    """torchrun reads `--r` as an abbreviation of its own options and refuses the command;
    `--rank` reaches minift and sets the same field."""
    from torch.distributed.run import get_args_parser

    parser = minift.cli.build_parser()
    by_rank = parser.parse_args(["finetune", "--method", "lora", "--rank", "4"])
    by_r = parser.parse_args(["finetune", "--method", "lora", "--r", "4"])
    assert by_rank.options == by_r.options == {"r": 4}
    launcher = get_args_parser()
    argv = ["--standalone", "--nproc_per_node=2", "-m", "minift", "finetune", "--method", "lora"]
    assert launcher.parse_args([*argv, "--rank", "4"]).training_script_args[-2:] == ["--rank", "4"]
    with pytest.raises(SystemExit):  # the reason the alias exists
        launcher.parse_args([*argv, "--r", "4"])
