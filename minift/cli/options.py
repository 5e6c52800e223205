"""Command-line options generated from a method's config dataclass.

Each field becomes one option: ``target_modules: list[str]`` -> ``--target-modules A,B``.
Its help is the comment written after the field in the dataclass's source, its type and
default; values are parsed by the field's type hint (int, float, str, bool as
true/false, lists comma-separated, ``X | None`` accepting ``none``).

`minift finetune` parses in two stages: MethodOptionsParser reads ``--method`` first,
adds that method's options, then parses everything, so ``--method lora --help`` lists
LoRA's options and an option of another method is an error that lists the valid ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any

from minift.peft.methods import Method

PREFIX = "method_option_"  # namespace attributes of the method's options


def field_comments(cls: type) -> dict[str, str]:
    """The comment after each field in the class's source (``r: int = 8  # rank``)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    found = re.findall(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, flags=re.M)
    return {name: text.strip() for name, text in found}


def type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        name = "|".join(type_name(a) for a in args)
        return name + ("|none" if type(None) in typing.get_args(hint) else "")
    if typing.get_origin(hint) in (list, tuple):
        return f"{type_name(args[0])},..."
    return getattr(hint, "__name__", str(hint))


def show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(map(show, value)) or "(empty)"
    return str(value)


def parse_value(hint: Any, text: str) -> Any:
    """``text`` as a value of type ``hint``; a ValueError says what was expected."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() == "none":
            return None
        options = [a for a in args if a is not type(None)]
        lists = [a for a in options if typing.get_origin(a) in (list, tuple)]
        scalars = [a for a in options if a not in lists]
        # str | list[str]: a comma makes a list ("c_attn,c_fc"), a single name stays one
        pick = lists[0] if lists and ("," in text or not scalars) else scalars[0]
        return parse_value(pick, text)
    if origin in (list, tuple):
        items = [parse_value(args[0], t.strip()) for t in text.split(",") if t.strip()]
        return items if origin is list else tuple(items)
    if hint is bool:
        word = text.strip().lower()
        if word not in ("true", "false", "yes", "no", "1", "0"):
            raise ValueError(f"expected true or false, got {text!r}")
        return word in ("true", "yes", "1")
    if hint in (int, float, str):
        try:
            return hint(text)
        except ValueError:
            raise ValueError(f"expected {'an' if hint is int else 'a'} {hint.__name__}, got {text!r}") from None  # fmt: skip
    raise TypeError(f"no command-line parser for options of type {hint!r}")


def method_option_flags(method: Method) -> list[str]:
    hints = typing.get_type_hints(method.config)
    return [
        f"--{f.name.replace('_', '-')} {type_name(hints[f.name]).upper()}"
        for f in dataclasses.fields(method.config)
    ]


# Longer spellings of one-letter fields: torchrun's parser reads "--r" as an abbreviation of
# its own options (--rdzv-*, --role, ...) and refuses the command before minift sees it.
ALIASES = {"r": ("--rank",)}


def add_method_options(parser: argparse.ArgumentParser, method: Method) -> None:
    """One option per field of the method's config, in a group of their own."""
    hints = typing.get_type_hints(method.config)
    comments = field_comments(method.config)
    valid = ", ".join(method_option_flags(method)) or "none"
    title = f"options of --method {method.name} ({method.config.__name__})"
    description = f"{method.description}; default learning rate {method.lr:g}"
    group = parser.add_argument_group(title, description)
    for name, default in method.option_defaults().items():
        hint = hints[name]

        def convert(text: str, hint: Any = hint) -> Any:
            try:
                return parse_value(hint, text)
            except ValueError as err:
                raise argparse.ArgumentTypeError(
                    f"{err}; the options of --method {method.name} are: {valid}"
                ) from None

        note = comments.get(name, "")
        group.add_argument(
            f"--{name.replace('_', '-')}",
            *ALIASES.get(name, ()),
            dest=PREFIX + name,
            type=convert,
            default=argparse.SUPPRESS,  # only what is given overrides the method's defaults
            metavar=type_name(hint).upper(),
            help=f"{note + '; ' if note else ''}default: {show(default)}".replace("%", "%%"),
        )


class MethodOptionsParser(argparse.ArgumentParser):
    """A parser that reads ``--method`` before anything else and then adds that method's
    options (see the module docstring). Errors are one line: ``minift: error: ...``."""

    methods: Mapping[str, Method] = {}
    default_method = "full"

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        name = self.default_method
        for i, arg in enumerate(args):
            if arg == "--method" and i + 1 < len(args):
                name = args[i + 1]
            elif arg.startswith("--method="):
                name = arg.split("=", 1)[1]
        method = self.methods.get(name)  # an unknown name: --method's choices refuse it
        if method is not None and not getattr(self, "_options_of", None):
            add_method_options(self, method)
            self._options_of = method
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            valid = ", ".join(method_option_flags(method)) if method else "none"
            self.error(
                f"unrecognized argument(s) {' '.join(extras)}; the options of --method "
                f"{name} are: {valid or 'none'} (and those of `minift finetune --help`)"
            )
        options = {k[len(PREFIX) :]: v for k, v in vars(namespace).items() if k.startswith(PREFIX)}
        for key in options:
            delattr(namespace, PREFIX + key)
        namespace.options = options
        return namespace, extras

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"minift: error: {message}\n")


def method_options_parser(sub, name: str, methods: Mapping[str, Method], **kwargs):
    """``sub.add_parser(name, ...)`` as a MethodOptionsParser (argparse builds subparsers
    from one class, so the new parser's class is set after it is made)."""
    parser = sub.add_parser(name, allow_abbrev=False, **kwargs)
    parser.__class__ = MethodOptionsParser
    parser.methods = methods
    return parser
