r"""The token-level index of a regular expression over a BPE vocabulary (Willard and Louf
2023, "Efficient Guided Generation for Large Language Models").

A language model emits tokens, each a string of several bytes, while the DFA reads bytes.
Checking every token against the automaton at every step costs O(V) walks per token
generated. The index does that work once, per DFA state s:

    allowed(s) = { t : the DFA reads bytes(t) from s without dying },  next(s, t),

so decoding needs one table lookup per step. Two refinements make every finished text
match:
- the DFA is pruned (:mod:`.regex`), so a state that is alive can always be completed;
- ``distance[s]`` is the fewest tokens from s to an accepting state (a breadth-first
  search backwards over the token graph); a token is allowed with r tokens left (it
  included) only if 1 + distance[next] <= r, so generation never runs out of budget
  mid-match. The end token is allowed exactly in accepting states.

The expression must be spellable by the vocabulary: some token path from the start must
reach acceptance (a vocabulary without a "{" cannot write JSON); otherwise a UserError.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch

from minift.errors import UserError
from minift.neurosym.regex import DFA, compile_regex


def vocabulary_bytes(enc) -> list[bytes | None]:
    """The bytes of each token id of a tiktoken Encoding; None for special tokens (the end
    token is handled apart)."""
    out: list[bytes | None] = []
    special = set(getattr(enc, "special_tokens_set", ()))
    for i in range(enc.n_vocab):
        try:
            data = enc.decode_single_token_bytes(i)
        except KeyError:
            data = None
        out.append(None if data is None or data.decode("utf-8", "replace") in special else data)
    return out


class TokenIndex:
    """allowed tokens and next states per DFA state, for one vocabulary."""

    def __init__(self, dfa: DFA, vocab: Sequence[bytes | None], eos_id: int) -> None:
        self.dfa, self.eos_id, self.vocab_size = dfa, eos_id, len(vocab)
        self.next: list[dict[int, int]] = []  # state -> {token: next state}
        ids = {0: 0}
        states = [0]
        i = 0
        while i < len(states):
            row = {}
            for t, data in enumerate(vocab):
                if data is None or t == eos_id or not data:
                    continue
                nxt = dfa.step(states[i], data)
                if nxt is not None:
                    if nxt not in ids:
                        ids[nxt] = len(states)
                        states.append(nxt)
                    row[t] = ids[nxt]
            self.next.append(row)
            i += 1
        self.dfa_state = states  # index state -> DFA state
        self.accepting = frozenset(i for i, s in enumerate(states) if s in dfa.accepting)
        self.distance = self._distances()
        self._tensors: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.next)
        if self.distance[0] is None:
            raise UserError(
                f"the vocabulary cannot spell any text matching {dfa.pattern!r}: no sequence "
                "of its tokens reaches a full match"
            )

    def _distances(self) -> list[int | None]:
        back: list[list[int]] = [[] for _ in self.next]
        for s, row in enumerate(self.next):
            for t in set(row.values()):
                back[t].append(s)
        dist: list[int | None] = [None] * len(self.next)
        queue = deque(self.accepting)
        for s in self.accepting:
            dist[s] = 0
        while queue:
            s = queue.popleft()
            for p in back[s]:
                if dist[p] is None:
                    dist[p] = dist[s] + 1
                    queue.append(p)
        return dist

    def allowed(self, state: int, tokens_left: int | None = None) -> list[int]:
        """Token ids allowed from ``state`` (the end token included when accepting), with
        ``tokens_left`` (this one included) the budget they must finish within."""
        out = []
        for t, nxt in self.next[state].items():
            d = self.distance[nxt]
            # this token, then d more to reach a match (stopping there needs no end token)
            if d is not None and (tokens_left is None or d + 1 <= tokens_left):
                out.append(t)
        if state in self.accepting:
            out.append(self.eos_id)
        return out

    def mask(
        self, state: int, tokens_left: int | None = None, size: int | None = None
    ) -> torch.Tensor:
        """A boolean (vocab,) mask of :meth:`allowed` (``size`` pads to a larger model vocab),
        vectorised: each state's token ids and their distances are tensors built once."""
        if self._tensors[state] is None:
            row = [(t, self.distance[n]) for t, n in self.next[state].items()]
            row = [(t, d) for t, d in row if d is not None]
            ids = torch.tensor([t for t, _ in row], dtype=torch.long)
            self._tensors[state] = (ids, torch.tensor([d for _, d in row], dtype=torch.long))
        ids, dist = self._tensors[state]
        m = torch.zeros(size or self.vocab_size, dtype=torch.bool)
        m[ids if tokens_left is None else ids[dist + 1 <= tokens_left]] = True
        if state in self.accepting:
            m[self.eos_id] = True
        return m

    def advance(self, state: int, token: int) -> int:
        if token not in self.next[state]:
            raise UserError(f"token {token} is not allowed in index state {state}")
        return self.next[state][token]


def build_index(pattern: str, enc) -> TokenIndex:
    """The token index of ``pattern`` for a tiktoken Encoding (its end token as EOS)."""
    from minift.tokenizer import eot_id

    return TokenIndex(compile_regex(pattern), vocabulary_bytes(enc), eot_id(enc))
