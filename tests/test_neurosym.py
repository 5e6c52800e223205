"""Neuro-symbolic parts against independent oracles: the DFA against Python's re, the token
index against a brute-force check of every token's bytes, constrained samples, the tool."""

import itertools
import random
import re

import pytest
import torch

from minift.errors import UserError
from minift.neurosym import (
    TokenIndex,
    build_index,
    calculate,
    compile_regex,
    execute,
    first_accepted,
    generate_constrained,
    is_python_call,
    is_python_expression,
    pending_call,
)

PATTERNS = [
    r"[A-Za-z_][A-Za-z0-9_]*",
    r"a(b|c)*d",
    r"(ab|a)+c?",
    r"x{2,3}(y|z){1,}",
    r"[^ab]b?",
    r"f\((a(, a)*)?\)",
    r"\d+(\.\d{1,2})?",
    r"(?:ab)*",
]
ALPHABET = "abcdxyzf(), ._1"


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_dfa_agrees_with_python_re_on_every_short_string(pattern):
    dfa = compile_regex(pattern)
    rng = random.Random(pattern)
    strings = ["".join(s) for n in range(4) for s in itertools.product("abcdxyz(),.1", repeat=n)]
    strings += [
        "".join(rng.choice(ALPHABET) for _ in range(rng.randint(4, 12))) for _ in range(2000)
    ]
    strings += ["f(a, a, a)", "xxzzz", "ababab", "12.34", "_x9", "abbcbd"]
    for s in strings:
        assert dfa.matches(s) == bool(re.fullmatch(pattern, s)), s


def completable(pattern: str, text: str, alphabet: str, extra: int = 3) -> bool:
    """Brute force with Python's re: some string of at most ``extra`` more characters of
    the alphabet completes ``text`` to a full match. (Every viable prefix of the patterns
    below completes within 3 characters, so this is exactly "viable" for them.)"""
    return any(
        re.fullmatch(pattern, text + "".join(w))
        for n in range(extra + 1)
        for w in itertools.product(alphabet, repeat=n)
    )


@pytest.mark.parametrize(
    "pattern, alphabet",
    [(r"a(b|c)*d", "abcd"), (r"f\((a(, a)*)?\)", "f(a, )"), (r"(ab|a)+c?", "abc")],
)
def test_the_token_mask_equals_a_brute_force_check_of_each_tokens_bytes(pattern, alphabet):
    """A small vocabulary of 1-3 character tokens. After every prefix reachable in up to 3
    tokens, a token is allowed iff prefix + token can still be completed to a match (by
    brute force over completions, with re); the end token iff the prefix matches."""
    rng = random.Random(0)
    vocab_strs = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3))) for _ in range(40)})  # fmt: skip
    vocab = [s.encode() for s in vocab_strs] + [None]  # the last id: the end token
    eos = len(vocab) - 1
    index = TokenIndex(compile_regex(pattern), vocab, eos)
    frontier = [("", 0)]
    checked = 0
    for _ in range(3):
        nxt = []
        for prefix, state in frontier:
            allowed = set(index.allowed(state))
            for t, s in enumerate(vocab_strs):
                viable = completable(pattern, prefix + s, alphabet)
                assert (t in allowed) == viable, (prefix, s)
                if viable:
                    nxt.append((prefix + s, index.advance(state, t)))
                checked += 1
            assert (eos in allowed) == bool(re.fullmatch(pattern, prefix)), prefix
        frontier = nxt[:20]
    assert checked > 100


@pytest.fixture(scope="module")
def base():
    from minift.recipes.pretrain import load_base

    return load_base(verbose=False)


@pytest.mark.parametrize(
    "pattern, budget",
    [
        (r"[A-Za-z_][A-Za-z0-9_]*", 12),
        (r"[a-z_]+\((([a-z_]+|[0-9]+)(, ([a-z_]+|[0-9]+))*)?\)", 16),
        (r"\{\"name\": \"[a-z]{1,8}\", \"size\": [0-9]{1,3}\}", 24),
    ],
)
def test_every_sampled_output_matches(base, pattern, budget):
    model, enc = base
    index = build_index(pattern, enc)
    g = torch.Generator().manual_seed(1)
    for _ in range(8):
        out = generate_constrained(model, enc, "Return the", index, budget, 1.5, g)
        assert re.fullmatch(pattern, out.text), out.text
    # With the budget exactly the shortest match, it still finishes inside the language.
    out = generate_constrained(model, enc, "Return", index, index.distance[0], 1.0, g)
    assert re.fullmatch(pattern, out.text)


def test_bad_expressions_and_unspellable_ones_are_named(base):
    model, enc = base
    for bad, what in [("(ab", "closing"), ("*a", "nothing to repeat"), ("a{3,1}", "m <= n"),
                      ("[b-a]", "bad range"), ("a\\", "trailing"), ("\\q", "unknown escape")]:  # fmt: skip
        with pytest.raises(UserError, match=what):
            compile_regex(bad)
    with pytest.raises(UserError, match="matches no text"):
        compile_regex(r"a[^\s\S]b")
    with pytest.raises(UserError, match="cannot spell"):
        TokenIndex(compile_regex(r"\{a\}"), [b"a", b"b", None], 2)
    index = build_index(r"[0-9]{6}", enc)
    with pytest.raises(UserError, match="needs at least"):
        generate_constrained(model, enc, "x", index, index.distance[0] - 1)


def test_the_calculator_equals_python_arithmetic_and_records_failures():
    rng = random.Random(3)
    for _ in range(300):
        a, b, c = (rng.randint(-50, 50) for _ in range(3))
        op1, op2 = rng.choice("+-*"), rng.choice(["+", "-", "*", "//", "%"])
        expr = f"({a} {op1} {b}) {op2} {c}" if c else f"{a} {op1} {b}"
        assert calculate(expr) == eval(expr)  # the oracle: Python itself, on trusted text
    assert calculate("7 / 2") == 3.5 and calculate("-(3)") == -3
    assert execute("1 / 0").result == "error: division by zero" and not execute("1/0").ok
    assert execute("2 +* 3").result.startswith("error: syntax error")
    assert not execute("__import__('os')").ok  # names and calls are not arithmetic
    assert not execute("9" * 7 + " * " + "9" * 7).ok  # past the size limit
    assert pending_call("so <<3 * (4+1)>>") == "3 * (4+1)" and pending_call("so <<3") is None


def test_the_checkers_and_first_accepted():
    assert is_python_call("open(path, 'r')") and not is_python_call("open(path")
    assert not is_python_call("a.b(c)") and not is_python_call("x + 1")
    assert (
        is_python_expression("x + 1")
        and not is_python_expression("")
        and not is_python_expression("def")
    )
    found = first_accepted(["f(", "g)", "h(1)", "k()"], is_python_call)
    assert found.accepted == "h(1)" and found.tried == 3
    none = first_accepted(["f(", "g)"], is_python_call)
    assert none.accepted is None and none.tried == 2


def test_the_vectorised_mask_equals_the_allowed_list_at_every_budget(base):
    _, enc = base
    index = build_index(r"[a-z_]+\((([a-z_]+|[0-9]+)(, ([a-z_]+|[0-9]+))*)?\)", enc)
    for state in range(len(index.next)):
        for left in (None, 1, 2, 3, 5, 30):
            want = torch.zeros(enc.n_vocab + 7, dtype=torch.bool)
            want[index.allowed(state, left)] = True
            assert torch.equal(index.mask(state, left, size=enc.n_vocab + 7), want)


def test_the_verifier_check_compares_expressions_by_their_trees():
    from minift.recipes.neurosym import same_expression

    assert same_expression(" 72+97", "72 + 97")  # a call keeps the prompt's leading space
    assert not same_expression("72+97", "97+72") and not same_expression("72+", "72")
