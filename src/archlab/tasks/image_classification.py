"""Image classification: MNIST digits, for CNNs and CapsNets.

Splits: 55,000 training images, ``val_size`` (5,000) validation images carved from
the training set by a fixed data seed, the 10,000 test images and, with
``data.affine``, the affine-transformed test set (see :mod:`archlab.data.mnist`).
Metrics: the model's own loss and accuracy (argmax of the class scores).

Training images are shifted at random by up to ``shift`` pixels per axis (Sabour et
al.'s 2-pixel shifts), drawn from a generator seeded by (seed, step), so a resumed
run sees exactly the images an uninterrupted one would.

``canvas`` decides the input size:
- 28 (default): MNIST as it is.  The affine split (40 x 40) is brought back to
  28 x 28 by MNIST's own normalisation, centring each digit on its centre of mass,
  so the models see its rotation, shear and scale but not its translation.
- 40: Sabour et al.'s affNIST setup -- every digit on a 40 x 40 black canvas,
  placed at random during training (set ``shift: 6`` for anywhere on the canvas),
  centred for validation and test; the affine split is used as it is.

The model takes images (batch, 1, size, size) with values in [0, 1].  An image
classifier (``cnn``; :class:`archlab.models.roles.ImageClassifier`) returns class
logits, trained with the cross-entropy, its probabilities the softmax.  A capsule
classifier (``capsnet``; :class:`archlab.models.roles.CapsuleClassifier`) returns
digit capsules v, trained with Sabour et al.'s margin loss plus the reconstruction
loss of its decoder (the true class's capsule decoded, the squared pixel errors
summed per image and scaled by ``reconstruction_scale``), its probabilities the
capsule lengths ||v_j||; the loss settings are the model config's.

``predict`` reads image files of any size and mode with Pillow and converts them as
MNIST was made: grey, white digit on black (inverted if the background is light;
the alpha channel is the ink when the image has one), cropped to the digit,
scaled to fit 20 x 20 and centred by its centre of mass in a 28 x 28 field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Count, OneOf
from archlab.data.batching import TrainBatches, stream_seed
from archlab.data.mnist import (
    AFFINE_CANVAS,
    IMAGE_SIZE,
    MNISTSplitData,
    affine_test_set,
    center_of_mass_crop,
    place,
    random_shift,
)
from archlab.errors import ArchlabError, ConfigError
from archlab.models import roles
from archlab.nn.capsule import capsule_lengths, margin_loss
from archlab.tasks import Task, register_task, score_each, unwrap

MNIST_LABELS = tuple(str(d) for d in range(10))
CANVASES = (IMAGE_SIZE, AFFINE_CANVAS)


@dataclass
class ImageClassificationData(MNISTSplitData):
    shift: Count = 2  # training images shifted by up to this many pixels per axis; 0 = off
    # 28: MNIST as is; 40: digits on a 40 x 40 canvas (affNIST setup)
    canvas: Annotated[int, OneOf(CANVASES)] = 28
    affine: bool = False  # also evaluate on the affine-transformed test set ("affine")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shift >= self.canvas // 2:
            raise ConfigError(
                f"{self.key('shift')} must lie in [0, {self.canvas // 2}), got {self.shift}"
            )


@register_task
class ImageClassificationTask(Task):
    name = "image_classification"
    DataConfig = ImageClassificationData
    roles = (roles.ImageClassifier, roles.CapsuleClassifier)
    verbs = frozenset({"predict"})
    predict_inputs = ("IMAGE",)
    metric = "accuracy"
    selectable = ("loss",)
    derived_model_keys = {
        "in_channels": "MNIST's grey images, one channel",
        "input_size": "data.canvas",
        "num_classes": "MNIST's ten digits",
    }
    unit = "img"

    def setup(self) -> None:
        d = self.data
        splits = d.splits()
        images, labels = splits.pop("train")
        self.train = (images, labels)
        self.examples = {
            name: (place(x, d.canvas), y) for name, (x, y) in splits.items()
        }  # uint8 on the canvas
        if d.affine:
            x, y = affine_test_set()
            self.examples["affine"] = (
                x if d.canvas == AFFINE_CANVAS else center_of_mass_crop(x),
                y,
            )
        self.batches = TrainBatches(len(self.train[0]))

    def model_overrides(self) -> dict:
        return {"in_channels": 1, "input_size": self.data.canvas, "num_classes": len(MNIST_LABELS)}

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.batches.per_epoch(batch_size)

    def splits(self) -> tuple[str, ...]:
        return ("val", "test", "affine") if self.data.affine else ("val", "test")

    def train_batch(self, step: int, batch_size: int, seed: int) -> tuple[Tensor, Tensor]:
        images, labels = self.train
        rows = torch.tensor(self.batches.indices(step, batch_size, seed))
        # a stream of its own, apart from the epoch permutations' seeds
        g = torch.Generator().manual_seed(stream_seed(seed, step, stream=1))
        shifted = random_shift(images[rows], self.data.shift, g, size=self.data.canvas)
        return as_input(shifted), labels[rows]

    def batch_size_of(self, batch: tuple[Tensor, Tensor]) -> int:
        return batch[0].shape[0]

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, labels = batch
        return self._loss(unwrap(model), model(images), labels, images)

    @staticmethod
    def _loss(model: nn.Module, out: Tensor, labels: Tensor, images: Tensor) -> Tensor:
        """Cross-entropy of logits; for capsules, margin loss + scaled reconstruction SSE."""
        if model.role is not roles.CapsuleClassifier:
            return F.cross_entropy(out.float(), labels)
        c = model.config
        loss = margin_loss(out, labels, c.m_plus, c.m_minus, c.lam)
        if c.reconstruction_scale > 0:
            error = (model.reconstruct(out, labels).float() - images.float()).pow(2)
            loss = loss + c.reconstruction_scale * error.flatten(1).sum(dim=1).mean()
        return loss

    @staticmethod
    def probabilities(model: nn.Module, out: Tensor) -> Tensor:
        """Class probabilities from the model's output: softmax, or capsule lengths."""
        if model.role is roles.CapsuleClassifier:
            return capsule_lengths(out)
        return out.float().softmax(dim=1)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        images, labels = self.examples[split]
        inner = unwrap(model)
        total, correct = 0.0, 0
        for i in range(0, len(images), batch_size):
            x, y = as_input(images[i : i + batch_size]), labels[i : i + batch_size]
            out = model(x)
            total += float(self._loss(inner, out, y, x)) * len(y)
            correct += int((self.probabilities(inner, out).argmax(dim=1) == y).sum())
        return {"loss": total / len(images), "accuracy": correct / len(images)}

    def prediction_labels(self) -> list[str]:
        return list(MNIST_LABELS)

    @torch.no_grad()
    def predict_scores(self, model: nn.Module, inputs: list[str]) -> list[Tensor | str]:
        """The digit probabilities of each image file."""

        def score(digits: list[Tensor]) -> Tensor:
            x = as_input(place(torch.stack(digits), self.data.canvas))
            return self.probabilities(model, model(x))

        return score_each(inputs, read_digit, score)


def as_input(images: Tensor) -> Tensor:
    """uint8 images (batch, size, size) -> float (batch, 1, size, size) in [0, 1]."""
    return images.unsqueeze(1).float().div_(255)


def read_digit(path: str | Path) -> Tensor:
    """An image file as an MNIST-style digit: uint8 (28, 28), white on black, centred.

    A file that is missing, unreadable or blank raises :class:`ArchlabError` saying
    what is wrong with it (without its name, which the caller prints beside it).
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        raise ArchlabError("no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = "not an image Pillow can read" if isinstance(exc, UnidentifiedImageError) else exc
        raise ArchlabError(f"cannot be read as an image ({reason})") from None
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if "A" in image.getbands() and image.getchannel("A").getextrema()[0] < 255:
        ink = np.asarray(image.getchannel("A"), dtype=np.float32)  # strokes are the opaque part
    else:
        ink = np.asarray(image.convert("L"), dtype=np.float32)
        if np.median(_border(ink)) > 127:  # dark digit on a light background
            ink = 255 - ink
    ink = np.clip(ink - np.median(_border(ink)), 0, None)  # background to 0
    if ink.max() <= 0:
        raise ArchlabError("holds no digit: the image is blank")
    rows, cols = np.nonzero(ink > 0.1 * ink.max())
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] * (255 / ink.max())
    h, w = ink.shape
    scale = 20 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    digit = Image.fromarray(ink.astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    field = torch.zeros(IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    top, left = (IMAGE_SIZE - size[1]) // 2, (IMAGE_SIZE - size[0]) // 2
    field[top : top + size[1], left : left + size[0]] = torch.from_numpy(np.asarray(digit).copy())
    return center_of_mass_crop(field[None])[0]


def _border(pixels):
    """The outermost rows and columns of a 2-D array, as one flat array."""
    import numpy as np

    return np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
