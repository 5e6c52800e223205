"""The `minift` command: pretrain, generate, finetune, demo, tasks, and the subcommands of
the technique packages (distill; rlhf and feedback)."""

from __future__ import annotations

import argparse
import importlib
import sys

from minift.errors import UserError

# Modules with a register(subparsers) function that adds their subcommands; each command
# is a short function that parses nothing itself and calls a recipe.
CLI_MODULES: tuple[str, ...] = (
    "minift.cli.model",
    "minift.cli.finetune",
    "minift.cli.distill",
    "minift.cli.rlhf",
    "minift.cli.multitask",
    "minift.cli.data_shift",
    "minift.cli.prompting",
    "minift.cli.report",
    "minift.cli.personal",
    "minift.cli.tune",
    "minift.cli.trust",
    "minift.cli.rate",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minift", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for module in CLI_MODULES:  # each adds its subcommands, in this order in --help
        importlib.import_module(module).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user's mistake (UserError, a ValueError raised by minift's own
    checks, a missing file, a run that diverged) is one line on stderr and exit status 2;
    Ctrl-C is one line and 130; anything else is a bug and keeps its traceback."""
    from minift.train import NonFiniteLossError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        print(f"minift: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"minift: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minift: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
