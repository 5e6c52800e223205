"""Tool use: the model writes a call, an executor runs it and writes the result back.

A language model is poor at exact arithmetic and good at copying. So instead of the
answer, it is taught to write a call in the text, ``<<12*(3+4)>>``, and the executor
(here a calculator over Python's ``ast``, which evaluates numbers and + - * / // % and
parentheses, nothing else) appends the result, `` 84``, which the decoding then takes as
the answer (Toolformer, Schick et al. 2023; PAL, Gao et al. 2023, with Python as the
tool). A call that fails (division by zero, a syntax error, a number too large) becomes a
recorded failure, ``error: ...``, never an exception in the generation loop.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass

OPEN, CLOSE = "<<", ">>"
MAX_ABS = 10**12  # results past this are refused: the tool is a calculator, not bignum
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class ToolError(ValueError):
    """A call the tool cannot answer; its message is what the model is shown."""


def calculate(expression: str) -> int | float:
    """The value of an arithmetic expression, by walking its syntax tree (no eval)."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolError(f"syntax error in {expression!r}") from None

    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = value(node.left), value(node.right)
            try:
                result = _BINARY[type(node.op)](left, right)
            except ZeroDivisionError:
                raise ToolError("division by zero") from None
            if abs(result) > MAX_ABS:
                raise ToolError(f"result larger than {MAX_ABS:.0e}")
            return result
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](value(node.operand))
        raise ToolError(f"{type(node).__name__} is not arithmetic the calculator evaluates")

    result = value(tree.body)
    return int(result) if isinstance(result, float) and result.is_integer() else result


@dataclass
class ToolCall:
    expression: str
    result: str  # the text written back
    ok: bool


def execute(expression: str) -> ToolCall:
    """Run one call; a failure is recorded in the result, not raised."""
    try:
        value = calculate(expression)
        text = f"{value:g}" if isinstance(value, float) else str(value)
        return ToolCall(expression, text, True)
    except ToolError as err:
        return ToolCall(expression, f"error: {err}", False)


def pending_call(text: str) -> str | None:
    """The expression of a call just closed at the end of ``text`` (``...<<1+2>>``)."""
    if not text.endswith(CLOSE):
        return None
    start = text.rfind(OPEN, 0, len(text) - len(CLOSE))
    return None if start < 0 else text[start + len(OPEN) : -len(CLOSE)]


@dataclass
class ToolRun:
    text: str  # the continuation, tool results included
    calls: list[ToolCall]
    answer: str | None  # the result of the last call (None: the model made no call)


def generate_with_tool(model, enc, prompt: str, max_new_tokens: int = 24, temperature: float = 0.0,
                       generator=None) -> ToolRun:  # fmt: skip
    """Decode from ``prompt``; when the text closes a call (``<<expr>>``), run it, write
    `` result`` into the text and stop: the tool's result is the answer. Without a call the
    model's own text is all there is (``answer`` None)."""
    import torch

    from minift.model.generation import sample_next
    from minift.tokenizer import eot_id

    eos = eot_id(enc)
    ids = enc.encode_ordinary(prompt) or [eos]
    text = ""
    with torch.no_grad():
        for _ in range(max_new_tokens):
            if len(ids) >= model.config.block_size:
                break
            logits = model(torch.tensor([ids[-model.config.block_size :]])).logits[:, -1, :]
            token = int(sample_next(logits, temperature, generator=generator))
            if token == eos:
                break
            ids.append(token)
            text += enc.decode([token])
            expression = pending_call(text)
            if expression is not None:
                call = execute(expression)
                return ToolRun(text + " " + call.result, [call], call.result)
    return ToolRun(text, [], None)
