"""Training: the loop, optimizer and schedule, checkpoints, data parallelism."""

from minift.train.config import TrainConfig
from minift.train.trainer import NonFiniteLossError, Trainer, TrainResult, fit, lm_loss

__all__ = ["NonFiniteLossError", "Trainer", "TrainConfig", "TrainResult", "fit", "lm_loss"]
