"""Every task minift ships, by name, for the recipes, the CLI and the lessons.

The registry lives in the trunk (minift.data.tasks, with the tasks built from the standard
library's docstrings). A task that serves one technique lives next to it and registers
there: ``long-passkey`` in minift.longctx.task, ``file-words`` in minift.rlhf.tasks. This
module sits above the technique packages and imports each of them, so that a name given
on the command line finds its task while no library module imports upward.
"""

from __future__ import annotations

from minift.adapt import domains as _adapt_tasks  # registers stdlib-package-comments
from minift.data import docstring_tasks as _docstring_tasks  # registers the doc-* suite
from minift.data.tasks import DEFAULT_TASK, Task, get_task, list_tasks
from minift.fairness import task as _fairness_tasks  # registers doc-returns-people
from minift.imbalance import skew as _imbalance_tasks  # registers stdlib-package-skewed
from minift.longctx import task as _longctx_tasks  # registers long-passkey
from minift.personal import users as _personal_tasks  # registers user-storage ... user-verbose
from minift.rlhf import tasks as _rlhf_tasks  # registers file-words and file-words-sft

TASK_PACKAGES = (
    _docstring_tasks,
    _longctx_tasks,
    _rlhf_tasks,
    _imbalance_tasks,
    _adapt_tasks,
    _personal_tasks,
    _fairness_tasks,
)

__all__ = ["DEFAULT_TASK", "TASK_PACKAGES", "Task", "get_task", "list_tasks"]
