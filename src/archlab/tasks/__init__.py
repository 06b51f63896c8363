"""Tasks: a task knows its data, its loss, its metrics and how to use a trained model.

The Trainer sees only ``train_batch(step, ...)`` and ``loss(model, batch)``.
Batches are a pure function of (seed, step), so a resumed run draws exactly the
batches an uninterrupted one would, and data-parallel ranks can each take their
rows of the same global batch.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from archlab.errors import ConfigError
from archlab.registry import unknown_name_message


class Task(ABC):
    """Base class; subclasses set the class variables and implement the methods."""

    name: ClassVar[str]
    DataConfig: ClassVar[type]  # dataclass of the recipe's ``data`` section
    metric: ClassVar[str] = "loss"  # validation metric that picks the best checkpoint
    maximize: ClassVar[bool] = False
    unit: ClassVar[str] = "ex"  # what train_batch sizes count, for throughput: tok, ex, ...

    def __init__(self, data: Any) -> None:
        self.data = data

    def setup(self) -> None:
        """Read and prepare the data (called once before training or evaluation)."""

    def model_overrides(self) -> dict[str, Any]:
        """Model config fields the data decides (e.g. the vocabulary size)."""
        return {}

    @abstractmethod
    def train_batch(self, step: int, batch_size: int, seed: int) -> Any:
        """The training batch of ``step``: the same (seed, step) always gives the same batch."""

    @abstractmethod
    def batch_size_of(self, batch: Any) -> int:
        """How many ``unit`` a batch holds (tokens for language models)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        """The scalar training loss of ``model`` on ``batch``."""

    @abstractmethod
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        """Metrics of ``model`` on a whole split, as a flat name -> number map."""

    def final_metrics(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        """Metrics for results.json; may add costly ones (BLEU) to :meth:`evaluate`'s."""
        return self.evaluate(model, split, batch_size)

    def steps_per_epoch(self, batch_size: int) -> int | None:
        """Optimizer steps in one pass over the training data, for tasks that have epochs."""
        return None

    def splits(self) -> tuple[str, ...]:
        """The evaluation splits, validation first."""
        return ("val",)

    def save_artifacts(self, run_dir: Path) -> None:
        """Write what inference needs besides the weights (a tokenizer, label names)."""

    def load_artifacts(self, run_dir: Path) -> None:
        """Read back what :meth:`save_artifacts` wrote."""


_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    assert dataclasses.is_dataclass(cls.DataConfig), f"{cls.__name__}.DataConfig"
    _TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> type[Task]:
    from archlab.tasks import char_lm, classification, translation  # noqa: F401  (registers)

    if name not in _TASKS:
        raise ConfigError(unknown_name_message("task", name, list(_TASKS)))
    return _TASKS[name]
