"""Prompt engineering: classify with the language model itself, no weight changed.

- :mod:`minift.prompting.templates`: a template around the text and a verbalizer (one
  label word per class); k-shot prompts.
- :mod:`minift.prompting.selection`: which k demonstrations: random, similar (TF-IDF
  nearest neighbours), balanced by class.
- :mod:`minift.prompting.scoring`: class probabilities from the label words' next-token
  logits.
- :mod:`minift.prompting.calibration`: contextual calibration (Zhao et al. 2021).
- :mod:`minift.prompting.fewshot`: zero- and few-shot classification, the largest k that
  fits the context, the spread over demonstration orders.
"""

from minift.prompting.calibration import CONTENT_FREE, calibrate
from minift.prompting.fewshot import (
    PromptResult,
    ShotBudget,
    classify,
    max_shots,
    order_accuracies,
)
from minift.prompting.scoring import label_probs
from minift.prompting.selection import STRATEGIES, Selector, TfIdf
from minift.prompting.templates import Template, label_token_ids, task_template

__all__ = [
    "CONTENT_FREE",
    "STRATEGIES",
    "PromptResult",
    "Selector",
    "ShotBudget",
    "Template",
    "TfIdf",
    "calibrate",
    "classify",
    "label_probs",
    "label_token_ids",
    "max_shots",
    "order_accuracies",
    "task_template",
]
