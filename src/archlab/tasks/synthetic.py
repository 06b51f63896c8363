"""The TCN paper's synthetic long-range tasks (Bai, Kolter & Koltun 2018, section 5.1).

The adding problem (Hochreiter & Schmidhuber 1997): T steps of two inputs, a value
u_t ~ U(0, 1) and a marker that is 1 at two distinct steps a, b and 0 elsewhere (drawn
uniformly over all T steps, as the authors' code draws them; the paper's text puts
one in each half); the target is the sum of the two marked values, read from the
output at the last step:

    y = u_a + u_b,      loss = MSE(f(x)_T, y)          (predicting 1 scores about 0.167)

Copy memory: ten digits d_1..d_10 in 1..8, then T - 1 blanks (0), then the marker 9
eleven times; the target is blank for the first T + 10 steps and the ten digits
over the last ten, so the model must recall them across T steps:

    x = (d_1..d_10, 0 x (T-1), 9 x 11),   y = (0 x (T+10), d_1..d_10)
    loss = cross-entropy over all T + 20 steps      (blanks then a uniform guess among
                                                     8 digits scores 10 ln 8 / (T + 20))

Inputs are fed as the authors feed them: real values, (value, marker) for adding and
the digit itself (one channel) for copy memory.  Each split is drawn once from its
own seeded generator (``data.data_seed``), ``n_train`` / ``n_val`` / ``n_test``
sequences, so every model of a comparison sees the same sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Config, Count, Size
from archlab.data.batching import TrainBatches, stream_seed
from archlab.errors import ConfigError
from archlab.models import roles
from archlab.tasks import Task, register_task

SPLITS = ("train", "val", "test")
MEMORY = 10  # digits to recall in copy memory


@dataclass
class SyntheticData(Config):
    section: ClassVar[str] = "data"

    T: Size = 600  # sequence length (adding) or blank length (copy memory)
    n_train: Size = 50000
    n_val: Size = 1000
    n_test: Size = 1000
    data_seed: Count = 0  # draws the sequences, apart from the training seed


def adding_problem(n: int, T: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """n sequences (n, T, 2) of (value, marker) and their targets (n,)."""
    values = torch.rand(n, T, generator=g)
    first = torch.randint(T, (n,), generator=g)
    second = (first + 1 + torch.randint(T - 1, (n,), generator=g)) % T  # another step
    marker = torch.zeros(n, T)
    rows = torch.arange(n)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    return torch.stack([values, marker], dim=2), values[rows, first] + values[rows, second]


def copy_memory(n: int, T: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """n inputs (n, T + 20, 1) and targets (n, T + 20) of the copy-memory task."""
    digits = torch.randint(1, 9, (n, MEMORY), generator=g)
    x = torch.cat(
        [digits, torch.zeros(n, T - 1, dtype=torch.long), torch.full((n, MEMORY + 1), 9)], dim=1
    )
    y = torch.cat([torch.zeros(n, T + MEMORY, dtype=torch.long), digits], dim=1)
    return x.float().unsqueeze(2), y


class SyntheticTask(Task):
    """Shared: fixed seeded splits, epochs over the training sequences."""

    DataConfig = SyntheticData
    roles = (roles.SequenceModel,)
    splits_drawn = SPLITS
    min_T = 2

    def _check(self) -> None:
        d = self.data
        if self.min_T > d.T:
            raise ConfigError(f"data.T must be at least {self.min_T} for {self.name}, got {d.T}")

    def draw(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def setup(self) -> None:
        self._check()
        d = self.data
        sizes = {"train": d.n_train, "val": d.n_val, "test": d.n_test}
        self.examples = {
            split: self.draw(
                sizes[split], torch.Generator().manual_seed(stream_seed(d.data_seed, i))
            )
            for i, split in enumerate(SPLITS)
        }
        self.batches = TrainBatches(d.n_train)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.batches.per_epoch(batch_size)

    def splits(self) -> tuple[str, ...]:
        return ("val", "test")

    def train_batch(self, step: int, batch_size: int, seed: int) -> tuple[Tensor, Tensor]:
        x, y = self.examples["train"]
        rows = torch.tensor(self.batches.indices(step, batch_size, seed))
        return x[rows], y[rows]

    def batch_size_of(self, batch: tuple[Tensor, Tensor]) -> int:
        return batch[0].shape[0] * batch[0].shape[1]  # steps, for throughput

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        x, y = self.examples[split]
        totals: dict[str, float] = {}
        for i in range(0, len(x), batch_size):
            for name, value in self.measure(model(x[i : i + batch_size]), y[i : i + batch_size]):
                totals[name] = totals.get(name, 0.0) + value
        return {name: total / len(x) for name, total in totals.items()}

    def measure(self, out: Tensor, y: Tensor) -> list[tuple[str, float]]:
        """Sums over the batch's sequences of each metric (averaged over the split)."""
        raise NotImplementedError


@register_task
class AddingTask(SyntheticTask):
    name = "adding"
    metric = "mse"
    unit = "tok"  # time steps

    def draw(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        return adding_problem(n, self.data.T, g)

    derived_model_keys = {"in_dim": "the (value, marker) pairs", "out_dim": "the sum"}

    def model_overrides(self) -> dict:
        return {"in_dim": 2, "out_dim": 1}

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return F.mse_loss(model(x)[:, -1, 0].float(), y)

    def measure(self, out: Tensor, y: Tensor) -> list[tuple[str, float]]:
        error = (out[:, -1, 0].float() - y).pow(2)
        return [("mse", float(error.sum())), ("loss", float(error.sum()))]


@register_task
class CopyMemoryTask(SyntheticTask):
    name = "copy_memory"
    metric = "loss"
    selectable = ("accuracy",)
    unit = "tok"  # time steps
    min_T = 1
    n_classes = 10

    def draw(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        return copy_memory(n, self.data.T, g)

    derived_model_keys = {"in_dim": "the symbols, one per step", "out_dim": "the ten symbols"}

    def model_overrides(self) -> dict:
        return {"in_dim": 1, "out_dim": self.n_classes}

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())

    def measure(self, out: Tensor, y: Tensor) -> list[tuple[str, float]]:
        """Cross-entropy per step, and the share of the ten recalled digits that are right."""
        ce = F.cross_entropy(out.flatten(0, 1).float(), y.flatten(), reduction="none")
        ce = ce.view(y.shape).mean(dim=1)
        recalled = out[:, -MEMORY:].argmax(dim=2) == y[:, -MEMORY:]
        return [("loss", float(ce.sum())), ("accuracy", float(recalled.float().mean(1).sum()))]
