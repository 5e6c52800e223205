"""Neuro-symbolic hybrids: a language model combined with exact symbolic parts.

- :mod:`.regex`: regular expressions compiled to a pruned DFA over bytes
- :mod:`.index`: the DFA's token-level index over a BPE vocabulary (Willard and Louf 2023)
- :mod:`.decode`: constrained decoding with that index (every output matches)
- :mod:`.tools`: a calculator tool called from the text, failures recorded
- :mod:`.verify`: sample n candidates, keep what an exact checker (``ast``) accepts
"""

from minift.neurosym.decode import Generated, generate_constrained
from minift.neurosym.index import TokenIndex, build_index, vocabulary_bytes
from minift.neurosym.regex import DFA, compile_regex
from minift.neurosym.tools import ToolError, calculate, execute, pending_call
from minift.neurosym.verify import first_accepted, is_python_call, is_python_expression

__all__ = [
    "DFA",
    "Generated",
    "TokenIndex",
    "ToolError",
    "build_index",
    "calculate",
    "compile_regex",
    "execute",
    "first_accepted",
    "generate_constrained",
    "is_python_call",
    "is_python_expression",
    "pending_call",
    "vocabulary_bytes",
]
