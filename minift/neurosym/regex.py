r"""Regular expressions compiled to a deterministic automaton over bytes.

Constrained decoding needs to know, after any prefix, which next bytes keep the text
inside the language. A deterministic finite automaton (DFA) answers that in one table
lookup per byte. The construction is the textbook one:

1. parse the expression into a tree (:mod:`minift.neurosym.regex_syntax`: literals,
   classes, concatenation, ``|``, ``*``, ``+``, ``?``, ``{m,n}``, groups);
2. Thompson's construction (Thompson 1968): each node becomes a small NFA with
   epsilon moves, glued together;
3. the subset construction (Rabin and Scott 1959): each DFA state is the epsilon-closure
   of a set of NFA states; a state is accepting when the set holds the NFA's final state;
4. dead states pruned: a state from which no accepting state can be reached is dropped,
   so a prefix the DFA can still read is always completable.

Supported syntax (over bytes; text is UTF-8): literals, ``.`` (any byte but newline),
classes ``[a-z_]`` and ``[^...]``, escapes ``\d \w \s \D \W \S`` and ``\`` before a
metacharacter, groups ``( )`` and ``(?: )``, alternation ``|``, quantifiers ``* + ?``
and ``{n}``, ``{m,}``, ``{m,n}``. Anchors are implicit: the whole text must match, as
``re.fullmatch``. A bad expression is a UserError naming the position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minift.errors import UserError
from minift.neurosym.regex_syntax import Parser


# ------------------------------------------------------------------------ Thompson NFA
@dataclass
class _NFA:
    moves: list[list[tuple[frozenset[int], int]]] = field(default_factory=list)  # byte sets
    eps: list[list[int]] = field(default_factory=list)

    def state(self) -> int:
        self.moves.append([])
        self.eps.append([])
        return len(self.moves) - 1

    def build(self, node) -> tuple[int, int]:
        """(start, end) of the fragment for ``node``."""
        kind = node[0]
        if kind == "bytes":
            start = cur = self.state()
            for b in node[1]:
                nxt = self.state()
                self.moves[cur].append((frozenset({b}), nxt))
                cur = nxt
            return start, cur
        if kind == "set":
            start, end = self.state(), self.state()
            if node[1]:
                self.moves[start].append((node[1], end))
            return start, end
        if kind == "cat":
            start = cur = self.state()
            for part in node[1]:
                s, e = self.build(part)
                self.eps[cur].append(s)
                cur = e
            return start, cur
        if kind == "alt":
            start, end = self.state(), self.state()
            for option in node[1]:
                s, e = self.build(option)
                self.eps[start].append(s)
                self.eps[e].append(end)
            return start, end
        _, inner, lo, hi = node  # "rep": lo copies, then (hi - lo) optional ones or a star
        start = cur = self.state()
        for _ in range(lo):
            s, e = self.build(inner)
            self.eps[cur].append(s)
            cur = e
        if hi is None:
            s, e = self.build(inner)
            self.eps[cur].append(s)
            self.eps[e].append(s)
            end = self.state()
            self.eps[cur].append(end)
            self.eps[e].append(end)
            return start, end
        end = self.state()
        for _ in range(hi - lo):
            s, e = self.build(inner)
            self.eps[cur].append(s)
            self.eps[cur].append(end)
            cur = e
        self.eps[cur].append(end)
        return start, end

    def closure(self, states) -> frozenset[int]:
        seen, stack = set(states), list(states)
        while stack:
            for t in self.eps[stack.pop()]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return frozenset(seen)


# ------------------------------------------------------------------------ DFA
@dataclass
class DFA:
    """transitions[s] maps a byte to the next state; states absent are dead. State 0 is
    the start; every state can still reach an accepting one."""

    pattern: str
    transitions: list[dict[int, int]]
    accepting: frozenset[int]

    def step(self, state: int, data: bytes) -> int | None:
        """The state after reading ``data`` from ``state``; None once it leaves the language."""
        for b in data:
            state = self.transitions[state].get(b)
            if state is None:
                return None
        return state

    def matches(self, text: str | bytes) -> bool:
        data = text.encode() if isinstance(text, str) else text
        end = self.step(0, data)
        return end is not None and end in self.accepting

    def __len__(self) -> int:
        return len(self.transitions)


def compile_regex(pattern: str) -> DFA:
    """The pruned DFA of ``pattern`` (full match); UserError if it matches nothing."""
    tree = Parser(pattern).parse()
    nfa = _NFA()
    start, final = nfa.build(tree)
    first = nfa.closure([start])
    ids = {first: 0}
    sets, table = [first], [{}]
    i = 0
    while i < len(sets):
        current = sets[i]
        by_byte: dict[int, set[int]] = {}
        for s in current:
            for chars, t in nfa.moves[s]:
                for b in chars:
                    by_byte.setdefault(b, set()).add(t)
        for b, targets in by_byte.items():
            nxt = nfa.closure(targets)
            if nxt not in ids:
                ids[nxt] = len(sets)
                sets.append(nxt)
                table.append({})
            table[i][b] = ids[nxt]
        i += 1
    accepting = {i for i, s in enumerate(sets) if final in s}
    return _prune(pattern, table, accepting)


def _prune(pattern: str, table: list[dict[int, int]], accepting: set[int]) -> DFA:
    """Drop the states that cannot reach acceptance, renumber the rest (start stays 0)."""
    back: list[set[int]] = [set() for _ in table]
    for s, row in enumerate(table):
        for t in row.values():
            back[t].add(s)
    live, stack = set(accepting), list(accepting)
    while stack:
        for s in back[stack.pop()]:
            if s not in live:
                live.add(s)
                stack.append(s)
    if 0 not in live:
        raise UserError(f"regular expression {pattern!r} matches no text at all")
    order = [0] + sorted(live - {0})
    new = {old: i for i, old in enumerate(order)}
    transitions = [{b: new[t] for b, t in table[old].items() if t in live} for old in order]
    return DFA(pattern, transitions, frozenset(new[s] for s in accepting if s in live))
