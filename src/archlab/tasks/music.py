"""Polyphonic music modelling: predict the next frame of a piano roll (Bai et al. 2018, 5.3).

A piano roll is a sequence of frames y_1..y_T in {0, 1}^88 (one entry per piano key).
A causal sequence model reads frames 1..t and outputs 88 logits z_{t+1}; each key is an
independent Bernoulli, p = sigmoid(z), so the negative log-likelihood of a frame is the
sum over the keys of the binary cross-entropy:

    NLL(y_{t+1}) = - sum_{k=1}^{88} [ y_k log p_k + (1 - y_k) log(1 - p_k) ]

The figure reported (and the TCN paper's table 1) is the NLL per frame of a split,
exactly as the authors' ``poly_music/music_test.py`` computes it: x = roll[:-1],
y = roll[1:] for every sequence, the NLL summed over all predicted frames of all
sequences, divided by their number (sum of T - 1).  Here it is computed from the logits
(``binary_cross_entropy_with_logits``, in float64), which equals their log of the
sigmoid wherever theirs is finite; sequences are batched with right padding, which a
causal model never sees, and padded frames are left out of both sums.

Training: the authors train one sequence at a time (batch size 1) on the NLL summed over
its frames.  The loss here is a batch's summed NLL divided by a constant, the mean
number of predicted frames of a training sequence times the sequences in the batch, so
it reads as an NLL per frame while weighting frames as their sum does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from archlab.config import Config, OneOf
from archlab.data.batching import TrainBatches
from archlab.data.music import CORPORA, KEYS, load_rolls
from archlab.models import roles
from archlab.tasks import Task, register_task


@dataclass
class MusicData(Config):
    section: ClassVar[str] = "data"

    dataset: Annotated[str, OneOf(tuple(CORPORA))] = "jsb"


def next_frame_batch(rolls: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs x = roll[:-1] and targets y = roll[1:], right-padded to (batch, time, 88),
    and the predicted frames of each sequence (batch,)."""
    x = pad_sequence([r[:-1] for r in rolls], batch_first=True)
    y = pad_sequence([r[1:] for r in rolls], batch_first=True)
    return x, y, torch.tensor([len(r) - 1 for r in rolls])


def frame_nll(logits: Tensor, y: Tensor, lengths: Tensor) -> Tensor:
    """NLL of each frame (batch, time): the sum over keys of the BCE; 0 at padded frames."""
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(dim=2)
    real = torch.arange(y.shape[1], device=y.device) < lengths.to(y.device).unsqueeze(1)
    return torch.where(real, bce, torch.zeros_like(bce))


@register_task
class PolyphonicMusicTask(Task):
    name = "polyphonic_music"
    DataConfig = MusicData
    roles = (roles.SequenceModel,)
    metric = "nll"
    unit = "frame"
    derived_model_keys = {"in_dim": "the 88 piano keys", "out_dim": "the 88 piano keys"}

    def setup(self) -> None:
        self.rolls = load_rolls(self.data.dataset)
        train = self.rolls["train"]
        self.batches = TrainBatches(len(train), [len(r) for r in train])
        self.frames_per_sequence = sum(len(r) - 1 for r in train) / len(train)

    def model_overrides(self) -> dict:
        return {"in_dim": KEYS, "out_dim": KEYS}

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.batches.per_epoch(batch_size)

    def splits(self) -> tuple[str, ...]:
        return ("val", "test")

    def train_batch(self, step: int, batch_size: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
        rows = self.batches.indices(step, batch_size, seed)
        return next_frame_batch([self.rolls["train"][i] for i in rows])

    def batch_size_of(self, batch: tuple[Tensor, Tensor, Tensor]) -> int:
        return int(batch[2].sum())  # predicted frames

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        x, y, lengths = batch
        nll = frame_nll(model(x, lengths).float(), y, lengths).sum()
        return nll / (len(lengths) * self.frames_per_sequence)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        """NLL per frame over the whole split (sequences batched by length)."""
        device = next(model.parameters()).device
        rolls = sorted(self.rolls[split], key=len)
        total, frames = 0.0, 0
        for i in range(0, len(rolls), batch_size):
            x, y, lengths = next_frame_batch(rolls[i : i + batch_size])
            logits = model(x.to(device), lengths.to(device))
            total += float(frame_nll(logits.double(), y.to(device).double(), lengths).sum())
            frames += int(lengths.sum())
        return {"nll": total / frames}
