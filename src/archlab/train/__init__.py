"""Training: the Trainer, checkpoints and run logs."""

from archlab.train.trainer import Trainer, TrainerConfig, TrainingStopped

__all__ = ["Trainer", "TrainerConfig", "TrainingStopped"]
