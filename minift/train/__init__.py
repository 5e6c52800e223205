"""Training: the loop, optimizer and schedule, checkpoints, data parallelism."""

from minift.train.trainer import NonFiniteLossError, TrainConfig, Trainer, TrainResult, fit, lm_loss

__all__ = ["NonFiniteLossError", "Trainer", "TrainConfig", "TrainResult", "fit", "lm_loss"]
