"""The error a user can cause and fix: bad data, options, paths, checkpoints.

``UserError`` subclasses ValueError, so code that catches ValueError keeps working. The
command line prints it as one line (``minift: error: ...``, exit status 2); any other
exception is a bug in minift and keeps its traceback. Its message names the problem and
what would be valid: "sequence of 300 tokens exceeds block_size 256", not an index error
from deep inside.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input a user can fix; the message says what is wrong and what would be valid."""
