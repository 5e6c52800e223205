"""Knowledge distillation: a smaller, faster student trained to imitate a frozen teacher.

- students.py   every-k-th-block students (DistilBERT), narrow students sliced from the
                teacher, students from scratch; TinyBERT's uniform layer map
- slicing.py    the width cut: rotate the residual stream onto its principal directions
                and keep the first d (SliceGPT), keep the heads and neurons that write most
- losses.py     output losses: soft targets with temperature and T^2 (Hinton et al.),
                the hard-label mix, forward/reverse KL, generalized JSD (GKD)
- features.py   hidden states through W_h (TinyBERT), cosine (DistilBERT), attention
                MSE (TinyBERT), attention and value-relation KL (MiniLM)
- config.py     what a run optimises (loss weights) and how it trains (a TrainConfig)
- loop.py       the loop on minift.train.Trainer: teacher frozen, once per batch
- objectives.py what to train on: pydocs (LM), a task, a task + transfer set
- onpolicy.py   student-sampled batches (GKD, MiniLLM), teacher sequences (Kim and Rush)
- shape.py      the student's shape within a parameter budget, and how it starts
- report.py     parameters, tokens per second, peak memory, tables and curves

The job (a fine-tuned teacher, a student, the runs and their report) is
minift.recipes.distill; `minift distill` is its command line (minift.cli.distill).
"""

from minift.distill.features import (
    HiddenProjection,
    attention_kl,
    attention_mse,
    block_values,
    cosine_loss,
    hidden_mse,
    value_relation,
    value_relation_kl,
)
from minift.distill.loop import DistillConfig, DistillResult, distill
from minift.distill.losses import (
    divergence,
    forward_kl,
    generalized_jsd,
    kd_loss,
    reverse_kl,
    soft_target_loss,
)
from minift.distill.objectives import Objective, lm_objective, task_objective, transfer_objective
from minift.distill.onpolicy import OnPolicyBatches, sequence_batches, teacher_sequences
from minift.distill.students import (
    SliceInfo,
    check_layer_map,
    every_kth_student,
    narrow_student,
    scratch_student,
    uniform_layer_map,
)

__all__ = [
    "DistillConfig",
    "DistillResult",
    "HiddenProjection",
    "Objective",
    "OnPolicyBatches",
    "SliceInfo",
    "attention_kl",
    "attention_mse",
    "block_values",
    "check_layer_map",
    "cosine_loss",
    "distill",
    "divergence",
    "every_kth_student",
    "forward_kl",
    "generalized_jsd",
    "hidden_mse",
    "kd_loss",
    "lm_objective",
    "narrow_student",
    "reverse_kl",
    "scratch_student",
    "sequence_batches",
    "soft_target_loss",
    "task_objective",
    "teacher_sequences",
    "transfer_objective",
    "uniform_layer_map",
    "value_relation",
    "value_relation_kl",
]
