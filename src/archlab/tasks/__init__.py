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
from typing import Any, ClassVar, NamedTuple

from torch import Tensor, nn

from archlab.errors import ConfigError
from archlab.registry import unknown_name_message


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, also when the Trainer has wrapped it in DistributedDataParallel."""
    return getattr(model, "module", model)


class Selection(NamedTuple):
    """What a validation result means to the Trainer (see :meth:`Task.select`)."""

    keep: bool  # keep this model as the best so far
    progress: bool  # counts as progress: resets early stopping's patience
    best: dict[str, float]  # the best values to compare the next result with


class Task(ABC):
    """Base class; subclasses set the class variables and implement the methods."""

    name: ClassVar[str]
    DataConfig: ClassVar[type]  # dataclass of the recipe's ``data`` section
    metric: ClassVar[str] = "loss"  # validation metric that picks the best checkpoint
    maximize: ClassVar[bool] = False
    unit: ClassVar[str] = "ex"  # what train_batch sizes count, for throughput: tok, ex, ...
    # whether torchrun ranks may each take their rows of a training batch (a batch that is
    # one graph, or graphs packed into one, cannot be split by rows)
    data_parallel: ClassVar[bool] = True

    def __init__(self, data: Any) -> None:
        self.data = data

    def setup(self) -> None:
        """Read and prepare the data (called once before training or evaluation)."""

    def use_seed(self, seed: int) -> None:
        """Take the run's seed (trainer.seed), for data that depends on it (default: none)."""

    def model_overrides(self) -> dict[str, Any]:
        """Model config fields the data decides (e.g. the vocabulary size)."""
        return {}

    def use_checkpoint(self, path: Path) -> None:
        """Take what a pretrained checkpoint fixes besides its weights (its tokenizer).

        Called before :meth:`setup` when the recipe sets ``model.init_from``.
        """
        raise ConfigError(
            f"the {self.name} task cannot start from a pretrained checkpoint (model.init_from)"
        )

    def train_module(self, model: nn.Module) -> nn.Module:
        """The module :meth:`loss` is given in training (default: the model itself).

        A task whose loss needs another method than forward (a classifier's ``classify``)
        returns a view of the model whose forward is that method: under torchrun the
        Trainer wraps this module in DDP, which averages gradients only through forward.
        """
        return model

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

    def select(self, metrics: dict[str, float], best: dict[str, float] | None) -> Selection:
        """Judge validation ``metrics`` against ``best`` (None before the first evaluation).

        By default on ``metric`` alone: a strictly better value is kept and is progress.
        """
        value = metrics[self.metric]
        if best is not None:
            better = value > best[self.metric] if self.maximize else value < best[self.metric]
            if not better:
                return Selection(False, False, best)
        return Selection(True, True, {self.metric: value})

    def final_metrics(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        """Metrics for results.json; may add costly ones (BLEU) to :meth:`evaluate`'s."""
        return self.evaluate(model, split, batch_size)

    # Optional, for tasks whose models answer single inputs (``archlab predict``):
    #   def predict(self, model, inputs: list[str]) -> list[dict[str, str | float]]
    # one dict per input, e.g. {"label": "positive", "probability": 0.93} or {"value": -0.77}.
    # Optional, for generative image tasks (``archlab sample``):
    #   def sample(self, model, out, n, seed) -> str
    # writes a grid of n generated images to the PNG file out and returns its layout.

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate factors by parameter-name prefix, e.g. ``{"discriminator.": 4.0}``.

        A parameter under a prefix trains at ``trainer.lr`` times its factor (the schedule
        scales every group alike); the others at ``trainer.lr``.
        """
        return {}

    def steps_per_epoch(self, batch_size: int) -> int | None:
        """Optimizer steps in one pass over the training data, for tasks that have epochs."""
        return None

    def splits(self) -> tuple[str, ...]:
        """The evaluation splits, validation first."""
        return ("val",)

    def report(self, model: nn.Module, run_dir: Path) -> None:
        """Write task-specific figures of the kept model into the run directory (at the end)."""

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
    from archlab.tasks import (  # noqa: F401  (registers)
        char_lm,
        classification,
        gan,
        image_classification,
        molecules,
        node_classification,
        translation,
    )

    if name not in _TASKS:
        raise ConfigError(unknown_name_message("task", name, list(_TASKS)))
    return _TASKS[name]
