r"""The syntax of minift's regular expressions: a pattern parsed into a tree.

Recursive descent over the pattern's characters (alternation > concatenation >
repetition > atom), giving the tree that :mod:`minift.neurosym.regex` turns into an
automaton. The syntax, over bytes (text is UTF-8): literals, ``.`` (any byte but newline),
classes ``[a-z_]`` and ``[^...]``, escapes ``\d \w \s \D \W \S`` and ``\`` before a
metacharacter, groups ``( )`` and ``(?: )``, alternation ``|``, quantifiers ``* + ?`` and
``{n}``, ``{m,}``, ``{m,n}`` (at most MAX_REPEAT). A bad expression is a UserError naming
the position.
"""

from __future__ import annotations

from minift.errors import UserError

DIGITS = frozenset(b"0123456789")
WORD = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
SPACE = frozenset(b" \t\n\r\f\v")
ALL = frozenset(range(256))
ESCAPES = {"d": DIGITS, "w": WORD, "s": SPACE, "D": ALL - DIGITS, "W": ALL - WORD, "S": ALL - SPACE}
MAX_REPEAT = 64  # {m,n} bounds: the NFA grows linearly in n


class Parser:
    """Recursive descent: alternation > concatenation > repetition > atom."""

    def __init__(self, pattern: str) -> None:
        self.pattern, self.i = pattern, 0

    def error(self, what: str) -> UserError:
        return UserError(f"regular expression {self.pattern!r}, position {self.i}: {what}")

    def peek(self) -> str | None:
        return self.pattern[self.i] if self.i < len(self.pattern) else None

    def take(self) -> str:
        ch = self.pattern[self.i]
        self.i += 1
        return ch

    def parse(self):
        tree = self.alternation()
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek()!r}")
        return tree

    def alternation(self):
        options = [self.concatenation()]
        while self.peek() == "|":
            self.take()
            options.append(self.concatenation())
        return options[0] if len(options) == 1 else ("alt", options)

    def concatenation(self):
        parts = []
        while self.peek() not in (None, "|", ")"):
            parts.append(self.repetition())
        return ("cat", parts)

    def repetition(self):
        atom = self.atom()
        while self.peek() in ("*", "+", "?", "{"):
            op = self.take()
            if op == "*":
                atom = ("rep", atom, 0, None)
            elif op == "+":
                atom = ("rep", atom, 1, None)
            elif op == "?":
                atom = ("rep", atom, 0, 1)
            else:
                atom = ("rep", atom, *self.bounds())
        return atom

    def bounds(self) -> tuple[int, int | None]:
        end = self.pattern.find("}", self.i)
        if end < 0:
            raise self.error("'{' without a closing '}'")
        body, self.i = self.pattern[self.i : end], end + 1
        try:
            if "," in body:
                lo, hi = body.split(",", 1)
                m, n = int(lo or 0), (int(hi) if hi.strip() else None)
            else:
                m = n = int(body)
        except ValueError:
            raise self.error(f"bad repetition {{{body}}}: write {{n}}, {{m,}} or {{m,n}}") from None
        if m < 0 or (n is not None and n < m) or max(m, n or 0) > MAX_REPEAT:
            raise self.error(f"repetition {{{body}}} needs 0 <= m <= n <= {MAX_REPEAT}")
        return m, n

    def atom(self):
        ch = self.peek()
        if ch is None:
            raise self.error("expression ends where an atom was expected")
        if ch in "*+?{":
            raise self.error(f"{ch!r} has nothing to repeat")
        self.take()
        if ch == "(":
            if self.pattern.startswith("?:", self.i):
                self.i += 2
            inner = self.alternation()
            if self.peek() != ")":
                raise self.error("'(' without a closing ')'")
            self.take()
            return inner
        if ch == ".":
            return ("set", ALL - {ord("\n")})
        if ch == "[":
            return ("set", self.char_class())
        if ch == "\\":
            return ("set", self.escape())
        return ("bytes", ch.encode())

    def escape(self) -> frozenset[int]:
        if self.peek() is None:
            raise self.error("trailing backslash")
        ch = self.take()
        if ch in ESCAPES:
            return ESCAPES[ch]
        if ch in "ntr":
            return frozenset({ord({"n": "\n", "t": "\t", "r": "\r"}[ch])})
        if ch.isalnum():
            raise self.error(f"unknown escape \\{ch}")
        return frozenset(ch.encode())

    def char_class(self) -> frozenset[int]:
        negate = self.peek() == "^"
        if negate:
            self.take()
        chosen: set[int] = set()
        first = True
        while True:
            ch = self.peek()
            if ch is None:
                raise self.error("'[' without a closing ']'")
            if ch == "]" and not first:
                self.take()
                break
            first = False
            self.take()
            if ch == "\\":
                chosen |= self.escape()
                continue
            if self.peek() == "-" and self.pattern[self.i + 1 : self.i + 2] not in ("]", ""):
                self.take()
                hi = self.take()
                if ord(hi) < ord(ch):
                    raise self.error(f"bad range {ch}-{hi}")
                chosen |= {b for c in range(ord(ch), ord(hi) + 1) for b in chr(c).encode()}
            else:
                chosen |= set(ch.encode())
        return frozenset(ALL - chosen if negate else chosen)
