"""Spoken digits: which digit (0-9) a recording says, on the Free Spoken Digit Dataset.

Inputs are log-mel features (:mod:`archlab.data.fsdd`: 10 ms frames of ``n_mels``
values, 15 to 229 frames per recording).  Two kinds of model:

- a sequence model (``tcn``, ``seq_lstm``, ``seq_gru``, ``seq_transformer``;
  :class:`archlab.models.roles.SequenceModel`) reads the frames as they are, padded
  to the longest of the batch, and gives an output per frame with ``out_dim`` = 10;
  the recording's logits pool them over its real frames (``data.pooling``):

      z = (1/n) sum_{t<=n} y_t   (mean)      or      z = y_n   (last)

  Each model's outputs are a linear map of its states, y_t = W h_t + b, so mean
  pooling is a linear classifier on the mean state, and ``last`` one on the state
  that has read the whole recording (the models are causal).
- an image classifier (``cnn``; :class:`archlab.models.roles.ImageClassifier`)
  reads the log-mel spectrogram as a square image (1, n_mels, n_mels): mel bands
  down the rows, its time axis stretched or squeezed to ``n_mels`` columns by
  linear interpolation, so that every recording fills the image whatever its length.

Loss: cross-entropy of the logits; metrics: loss and accuracy.  Protocols
(``data.folds``): 0 is the dataset's split (takes 0-4 are the 300 test
recordings); 6 is leave one speaker out, ``data.fold`` the speaker held out, so
``archlab train RECIPE --folds 6`` trains every fold and reports the mean.

Training batches may be augmented (``data.time_masks`` / ``data.freq_masks``,
SpecAugment, Park et al. 2019): each mask sets a band of up to ``mask_width`` frames,
or of up to ``mask_width`` mel bands, to the floor value -1, drawn per recording
from a generator seeded by (seed, step), so a resumed run draws the same masks.

``predict`` reads sound files (:func:`archlab.data.fsdd.read_wav`: stereo
down-mixed, other rates resampled to 8 kHz) and prints the digit and its probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Config, Count, OneOf, Size
from archlab.data import fsdd
from archlab.data.batching import TrainBatches, stream_seed
from archlab.errors import ConfigError
from archlab.models import roles
from archlab.nn.sequence import POOLING, pool_steps
from archlab.tasks import Task, register_task, score_each, unwrap

FLOOR = -1.0  # the features' value at -80 dB (silence)


@dataclass
class SpokenDigitsData(Config):
    section: ClassVar[str] = "data"

    dataset: Annotated[str, OneOf(("fsdd",))] = "fsdd"  # the recordings (archlab.data.fsdd)
    folds: Count = 0  # 0: the dataset's split (takes 0-4 test); 6: leave one speaker out
    fold: Count = 0  # with folds 6: the speaker held out, in the order of fsdd.SPEAKERS
    n_mels: Size = 40  # mel bands per frame (and the CNN's image size)
    pooling: Annotated[str, OneOf(POOLING)] = "mean"  # sequence models: over the real frames
    time_masks: Count = 0  # SpecAugment masks per training recording, along time
    freq_masks: Count = 0  # and along the mel bands
    mask_width: Size = 8  # the widest mask, in frames or bands

    def __post_init__(self) -> None:
        super().__post_init__()
        problem = fsdd.protocol_problem(self.folds, self.fold, prefix=f"{self.section}.")
        if problem:
            raise ConfigError(problem)


@register_task
class SpokenDigitsTask(Task):
    name = "spoken_digits"
    DataConfig = SpokenDigitsData
    roles = (roles.SequenceModel, roles.ImageClassifier)
    verbs = frozenset({"predict"})
    predict_inputs = ("AUDIO",)
    metric = "accuracy"
    selectable = ("loss",)
    # a sequence model takes the first two, the CNN the other three
    derived_model_keys = {
        "in_dim": "data.n_mels (the features per frame)",
        "out_dim": "the ten digits",
        "in_channels": "one log-mel image",
        "input_size": "data.n_mels (the image is n_mels x n_mels)",
        "num_classes": "the ten digits",
    }
    unit = "ex"

    def setup(self) -> None:
        d = self.data
        recs = fsdd.recordings()
        features = fsdd.dataset_features(recs, d.n_mels)
        self.examples = {
            name: (
                [torch.from_numpy(features[i]) for i in rows],
                torch.tensor([recs[i].digit for i in rows]),
            )
            for name, rows in fsdd.split(recs, d.folds, d.fold).items()
        }
        train = self.examples["train"][0]
        self.batches = TrainBatches(len(train), [len(f) for f in train])

    def model_overrides(self) -> dict:
        n, k = self.data.n_mels, len(fsdd.DIGITS)
        return {"in_dim": n, "out_dim": k, "in_channels": 1, "input_size": n, "num_classes": k}

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.batches.per_epoch(batch_size)

    def splits(self) -> tuple[str, ...]:
        return ("val", "test")

    def train_batch(self, step: int, batch_size: int, seed: int) -> tuple[list[Tensor], Tensor]:
        features, labels = self.examples["train"]
        rows = self.batches.indices(step, batch_size, seed)
        g = torch.Generator().manual_seed(stream_seed(seed, step, stream=1))
        return [self._augment(features[i], g) for i in rows], labels[rows]

    def _augment(self, f: Tensor, g: torch.Generator) -> Tensor:
        """``f`` (frames, n_mels) with SpecAugment's time and frequency masks."""
        d = self.data
        if not d.time_masks and not d.freq_masks:
            return f
        f = f.clone()
        for axis, count in ((0, d.time_masks), (1, d.freq_masks)):
            size = f.shape[axis]
            for _ in range(count):
                width = int(torch.randint(min(d.mask_width, size // 2) + 1, (1,), generator=g))
                start = int(torch.randint(size - width + 1, (1,), generator=g))
                f.narrow(axis, start, width).fill_(FLOOR)
        return f

    def batch_size_of(self, batch: tuple[list[Tensor], Tensor]) -> int:
        return len(batch[0])

    def logits(self, model: nn.Module, features: list[Tensor]) -> Tensor:
        """Digit logits (batch, 10) of recordings' features, each (frames, n_mels)."""
        if unwrap(model).role is roles.ImageClassifier:
            return model(spectrogram_images(features, self.data.n_mels))
        lengths = torch.tensor([len(f) for f in features])
        x = torch.nn.utils.rnn.pad_sequence(features, batch_first=True, padding_value=FLOOR)
        return pool_steps(model(x, lengths), lengths, self.data.pooling)

    def loss(self, model: nn.Module, batch: tuple[list[Tensor], Tensor]) -> Tensor:
        features, labels = batch
        return F.cross_entropy(self.logits(model, features).float(), labels)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        features, labels = self.examples[split]
        total, correct = 0.0, 0
        for i in range(0, len(features), batch_size):
            logits = self.logits(model, features[i : i + batch_size]).float()
            y = labels[i : i + batch_size]
            total += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == y).sum())
        return {"loss": total / len(features), "accuracy": correct / len(features)}

    def prediction_labels(self) -> list[str]:
        return list(fsdd.DIGITS)

    @torch.no_grad()
    def predict_scores(self, model: nn.Module, inputs: list[str]) -> list[Tensor | str]:
        """The digit probabilities of each sound file."""

        def read(path: str) -> Tensor:
            return torch.from_numpy(fsdd.features_of_file(path, self.data.n_mels))

        return score_each(inputs, read, lambda f: self.logits(model, f).float().softmax(dim=1))


def spectrogram_images(features: list[Tensor], size: int) -> Tensor:
    """Log-mel features, each (frames, n_mels), as images (batch, 1, n_mels, size).

    Mel bands run down the rows; the time axis is resampled to ``size`` columns by
    linear interpolation.
    """
    return torch.cat(
        [
            F.interpolate(f.T[None], size=size, mode="linear", align_corners=False)[None]
            for f in features
        ]
    )
