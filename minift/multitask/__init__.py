"""Multi-task learning and continual adaptation: the algorithms, no job code.

- sampling:  which task trains at each step (proportional, temperature with cap K, equal)
- weighting: per-task loss weights, fixed or learned by uncertainty (Kendall et al. 2018)
- model:     one shared backbone with one head per task
- continual: EWC (diagonal empirical Fisher), L2-SP, the reservoir replay buffer
- metrics:   the accuracy matrix's ACC, backward transfer and forgetting
- fusion:    AdapterFusion (Pfeiffer et al. 2021) over task adapters

The jobs are minift.recipes.multitask and minift.recipes.continual.
"""

from minift.multitask.continual import EWC, L2SP, ReservoirBuffer, fisher_diagonal
from minift.multitask.fusion import AdapterFusion, apply_adapter_fusion, remove_fusion
from minift.multitask.metrics import average_accuracy, backward_transfer, forgetting, stream_summary
from minift.multitask.model import MultiTaskModel, check_tasks
from minift.multitask.sampling import SCHEMES, TaskSampler, mixing_rates
from minift.multitask.weighting import FixedWeighting, UncertaintyWeighting, make_weighting

__all__ = [
    "AdapterFusion", "apply_adapter_fusion", "remove_fusion",
    "EWC", "L2SP", "SCHEMES", "FixedWeighting", "MultiTaskModel", "ReservoirBuffer",
    "TaskSampler", "UncertaintyWeighting", "average_accuracy", "backward_transfer",
    "check_tasks", "fisher_diagonal", "forgetting", "make_weighting", "mixing_rates",
    "stream_summary",
]  # fmt: skip
