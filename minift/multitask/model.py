"""One shared backbone, one head per task: hard parameter sharing (Caruana 1997).

    backbone (a GPT, shared)  ->  pool -> head_a   (classification task a)
                              ->  pool -> head_b   (classification task b)
                              ->  lm_head          (a generation task, as SFT trains it)

Every task's gradient flows into the shared blocks; that is where tasks help each other
(transfer) or pull the weights apart (interference). ``view(task)`` is the model as one
task sees it, a :class:`~minift.model.heads.SequenceClassifier` that shares the backbone
or the GPT itself, so each task's own objective (minift.train.objectives) trains and
evaluates it unchanged. The views are not submodules: the parameters are registered once,
in ``backbone`` and ``heads``.
"""

from __future__ import annotations

import torch.nn as nn

from minift.data.tasks import Task
from minift.model import GPT
from minift.model.heads import SequenceClassifier

HEAD_KINDS = ("classification", "sft")


class MultiTaskModel(nn.Module):
    def __init__(
        self,
        backbone: GPT,
        tasks: list[Task],
        pooling: str = "last",
        label_token_ids: dict[str, list[int]] | None = None,
    ) -> None:
        super().__init__()
        check_tasks(tasks)
        self.backbone = backbone
        self.config = backbone.config
        self.kinds = {t.name: t.kind for t in tasks}
        self.heads = nn.ModuleDict()
        views: dict[str, nn.Module] = {}
        for task in tasks:
            if task.kind == "sft":
                views[task.name] = backbone  # the language-model head is the task's head
                continue
            clf = SequenceClassifier(backbone, task.num_labels, pooling=pooling)
            ids = (label_token_ids or {}).get(task.name)
            if ids is not None and len(set(ids)) == len(ids):
                clf.init_head(ids)  # the label words' output embeddings, as finetune does
            self.heads[_key(task.name)] = clf.head
            views[task.name] = clf
        object.__setattr__(self, "_views", views)  # plain dict: not registered twice

    def view(self, task: str) -> nn.Module:
        if task not in self._views:
            raise ValueError(f"no head for task {task!r}; this model has {sorted(self._views)}")
        return self._views[task]

    def forward(self, task: str, *args, **kwargs):
        return self.view(task)(*args, **kwargs)


def _key(name: str) -> str:
    return name.replace(".", "_")  # ModuleDict keys may not hold dots (a .jsonl path might)


def check_tasks(tasks: list[Task]) -> None:
    """One clear error for what one model with one head per task cannot train."""
    names = [t.name for t in tasks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"task listed twice: {', '.join(twice)}; give each task once")
    if not tasks:
        raise ValueError("no tasks given; name at least one")
    bad = [f"{t.name} ({t.kind})" for t in tasks if t.kind not in HEAD_KINDS]
    if bad:
        raise ValueError(
            f"tasks of kinds with no head here: {', '.join(bad)}; a multi-task model takes "
            f"{' and '.join(HEAD_KINDS)} tasks"
        )


def shared_parameters(model: MultiTaskModel) -> list[nn.Parameter]:
    return [p for p in model.backbone.parameters() if p.requires_grad]
