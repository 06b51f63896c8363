"""MNIST (LeCun, Cortes & Burges): the four IDX files, a validation split, shifts, affine test set.

Files: the original gzip-compressed IDX files, verified by SHA-256, downloaded from
torchvision's mirror when missing.  IDX is big-endian: a 4-byte magic number
(2051 for images, 2049 for labels), the item count, for images the row and column
counts, then one uint8 per pixel or label.  The parser checks the magic number,
the dimensions and that the file holds exactly the bytes its header announces; it
never unpickles anything.

Images are uint8 tensors (N, 28, 28), 0 = background (white digit on black).

- Validation: ``val_size`` images carved from the 60,000 training images by a
  permutation seeded with ``split_seed`` (a data seed, kept apart from the
  training seed so that every run is evaluated on the same images).
- Shift augmentation (Sabour, Frosst & Hinton 2017, section 5): each training
  image is shifted by up to ``max_shift`` pixels in each direction with zero
  padding -- the same as padding by 2 and cropping a random 28 x 28 window.
  :func:`place` does it with one gather for the whole batch.
- Affine test set (:func:`affine_mnist`): the 10,000 real test images, each
  centred on a 40 x 40 canvas and transformed once, with a fixed generator, by
  rotation U(-20, 20) degrees, shear U(-0.2, 0.2), scale U(0.8, 1.2) per axis,
  then translated by a whole number of pixels drawn so that the digit stays on the
  canvas -- ranges like Tieleman's affNIST, which Sabour et al. used (CapsNet 79 %,
  CNN 66 %).  Resampling is bilinear (``F.affine_grid`` / ``F.grid_sample``).
  A 28 x 28 model sees it through :func:`center_of_mass_crop`, MNIST's own
  normalisation (digits centred by their centre of mass in a 28 x 28 field): the
  translation, which a 28 x 28 input cannot hold, is undone; rotation, shear and
  scale stay.  A 40 x 40 model (trained on digits placed at random on a 40 x 40
  canvas, as Sabour et al. did for affNIST) sees it as is.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from archlab.config import Config, Count, OneOf, Size
from archlab.data.files import DataError, DataFile, Dataset, fetch, register_dataset
from archlab.errors import ConfigError

TRAIN_IMAGES = 60_000  # in MNIST's training split
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = {  # (split, kind) -> file name, SHA-256
    ("train", "images"): (
        "train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    ("train", "labels"): (
        "train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    ("test", "images"): (
        "t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    ("test", "labels"): (
        "t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}
MNIST = register_dataset(
    Dataset(
        name="mnist",
        description="MNIST handwritten digits, 60,000 training and 10,000 test images, 28x28",
        files=tuple(
            DataFile(f"mnist/{name}", sha, MNIST_URL + name) for name, sha in MNIST_FILES.values()
        ),
        licence="none stated by the source; commonly listed as CC BY-SA 3.0",
    )
)

IDX_MAGIC = {"images": 2051, "labels": 2049}  # 0x0803: uint8, 3 dims; 0x0801: uint8, 1 dim
IMAGE_SIZE = 28
AFFINE_CANVAS = 40
AFFINE_SEED = 2017
AFFINE_RANGES = {"rotation_deg": 20.0, "shear": 0.2, "scale": (0.8, 1.2)}


def read_idx(path: str | Path, kind: str) -> Tensor:
    """An IDX file (gzip-compressed if it ends in .gz) as a uint8 tensor.

    ``kind`` is "images" (-> (N, rows, cols)) or "labels" (-> (N,)).  A wrong magic
    number, a header that does not fit, or a file shorter or longer than its header
    says raises :class:`DataError` naming the file and what was expected.
    """
    path = Path(path)
    magic, n_dims = IDX_MAGIC[kind], 3 if kind == "images" else 1
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} cannot be read as gzip-compressed IDX ({exc})") from None
    header_size = 4 + 4 * n_dims
    if len(raw) < header_size:
        raise DataError(
            f"{path} is truncated: an IDX {kind} file needs a {header_size}-byte header, "
            f"it holds {len(raw)} bytes"
        )
    (found,) = struct.unpack(">i", raw[:4])
    if found != magic:
        raise DataError(
            f"{path} is not an IDX {kind} file: its magic number is {found}, expected {magic}"
        )
    dims = struct.unpack(f">{n_dims}i", raw[4:header_size])
    if kind == "images" and dims[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{path} holds {dims[1]}x{dims[2]} images, expected {IMAGE_SIZE}x{IMAGE_SIZE}"
        )
    expected = math.prod(dims)
    if len(raw) - header_size != expected:
        state = "truncated" if len(raw) - header_size < expected else "longer than its header says"
        raise DataError(
            f"{path} is {state}: its header announces {dims[0]:,} {kind} ({expected:,} bytes "
            f"after the header), it holds {len(raw) - header_size:,}"
        )
    data = torch.frombuffer(bytearray(raw[header_size:]), dtype=torch.uint8)
    return data.view(*dims)


@cache
def load_mnist(split: str) -> tuple[Tensor, Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of the official "train" or "test" split.

    The tensors are cached and shared: do not modify them in place.
    """
    paths = fetch("mnist")
    images = read_idx(paths[f"mnist/{MNIST_FILES[(split, 'images')][0]}"], "images")
    labels = read_idx(paths[f"mnist/{MNIST_FILES[(split, 'labels')][0]}"], "labels")
    if len(images) != len(labels):
        raise DataError(f"MNIST {split}: {len(images)} images but {len(labels)} labels")
    return images, labels.long()


@dataclass
class MNISTSplitData(Config):
    """The data settings every MNIST task shares (a task's data section extends them)."""

    section: ClassVar[str] = "data"

    dataset: Annotated[str, OneOf(("mnist",))] = "mnist"
    val_size: Size = 5000  # validation images carved from the 60,000 training images
    split_seed: Count = 0  # the data seed that picks them (kept apart from the training seed)
    train_size: Size | None = None  # use only the first N training images (quick checks)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.val_size >= TRAIN_IMAGES:
            raise ConfigError(
                f"{self.key('val_size')} must lie in (0, {TRAIN_IMAGES}), got {self.val_size}"
            )

    def splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """train / val / test images and labels (:func:`mnist_splits`)."""
        return mnist_splits(self.val_size, self.split_seed, self.train_size)


def mnist_splits(
    val_size: int, split_seed: int = 0, train_size: int | None = None
) -> dict[str, tuple[Tensor, Tensor]]:
    """train / val / test; val is ``val_size`` training images picked by a seeded permutation,
    and train keeps its first ``train_size`` images when that is given."""
    images, labels = load_mnist("train")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(split_seed))
    train, val = order[val_size:].sort().values, order[:val_size].sort().values
    train = train[:train_size]
    return {
        "train": (images[train], labels[train]),
        "val": (images[val], labels[val]),
        "test": load_mnist("test"),
    }


def place(images: Tensor, size: int, shifts: Tensor | None = None) -> Tensor:
    """Each image moved by ``shifts`` (N, 2) = (down, right) pixels on a ``size`` x ``size`` canvas.

    The image's centre goes to the canvas centre plus its shift; pixels that leave
    the canvas are lost and uncovered ones are 0.  One gather for the whole batch,
    any dtype; ``size`` may be larger (padding) or smaller (cropping) than the image.
    """
    n, h, w = images.shape
    if (size - h) % 2 or (size - w) % 2:
        raise ValueError(f"canvas {size} and image {h}x{w} must differ by an even number")
    if shifts is None:
        shifts = torch.zeros(n, 2, dtype=torch.long)
    grid = torch.arange(size)
    rows = grid[None, :] - ((size - h) // 2 + shifts[:, :1])  # source row of each output row
    cols = grid[None, :] - ((size - w) // 2 + shifts[:, 1:])
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    out = images[
        torch.arange(n)[:, None, None],
        rows.clamp(0, h - 1)[:, :, None],
        cols.clamp(0, w - 1)[:, None, :],
    ]
    return out * inside.to(out.dtype)


def random_shift(
    images: Tensor, max_shift: int, generator: torch.Generator, size: int | None = None
) -> Tensor:
    """Sabour et al.'s augmentation: each image shifted by U{-max_shift..max_shift} per axis."""
    shifts = torch.randint(-max_shift, max_shift + 1, (len(images), 2), generator=generator)
    return place(images, size or images.shape[-1], shifts)


def center_of_mass_crop(images: Tensor, size: int = IMAGE_SIZE) -> Tensor:
    """Each image moved so that its centre of mass is pixel (size // 2, size // 2) of a field.

    That is MNIST's rule: over the training set the centre of mass sits at row
    14.00 +- 0.29, column 14.01 +- 0.29 of the 28 x 28 field.
    """
    n, h, w = images.shape
    weights = images.float()
    mass = weights.sum(dim=(1, 2)).clamp(min=1e-6)
    row = (weights.sum(dim=2) * torch.arange(h)).sum(dim=1) / mass
    col = (weights.sum(dim=1) * torch.arange(w)).sum(dim=1) / mass
    # place() puts pixel (h // 2, w // 2) at (size // 2, size // 2) before shifting
    shifts = torch.stack([h // 2 - row, w // 2 - col], dim=1).round().long()
    return place(images, size, shifts)


def affine_mnist(images: Tensor, seed: int = AFFINE_SEED) -> Tensor:
    """The affine-transformed test set: (N, 40, 40) uint8 from (N, 28, 28) digits, deterministic."""
    n = len(images)
    # one row of draws per image, so that image i's transformation does not depend on n
    draws = torch.rand(n, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def uniform(column: int, lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * draws[:, column]

    r = AFFINE_RANGES
    angle = uniform(0, -r["rotation_deg"], r["rotation_deg"]) * math.pi / 180
    shear = uniform(1, -r["shear"], r["shear"])
    scale_x, scale_y = uniform(2, *r["scale"]), uniform(3, *r["scale"])
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shearing = torch.eye(2, dtype=torch.float64).repeat(n, 1, 1)
    shearing[:, 0, 1] = shear
    scaling = torch.diag_embed(torch.stack([scale_x, scale_y], dim=1))
    forward = rotation @ shearing @ scaling  # output = A @ input, about the canvas centre
    # affine_grid maps output coordinates to input ones: the inverse transformation
    theta = torch.cat([torch.linalg.inv(forward), torch.zeros(n, 2, 1, dtype=torch.float64)], 2)
    canvas = place(images, AFFINE_CANVAS).float()[:, None] / 255
    grid = F.affine_grid(theta.float(), [n, 1, AFFINE_CANVAS, AFFINE_CANVAS], align_corners=False)
    warped = F.grid_sample(canvas, grid, mode="bilinear", align_corners=False)
    warped = (warped[:, 0] * 255).round().clamp(0, 255).to(torch.uint8)
    # translate by whole pixels, drawn so that the digit's bounding box stays on the canvas
    ink = warped > 0
    rows, cols = ink.any(dim=2), ink.any(dim=1)
    index = torch.arange(AFFINE_CANVAS)
    top = torch.where(rows, index, AFFINE_CANVAS).amin(dim=1)
    bottom = torch.where(rows, index, -1).amax(dim=1)
    left = torch.where(cols, index, AFFINE_CANVAS).amin(dim=1)
    right = torch.where(cols, index, -1).amax(dim=1)
    down = _integer_between(-top, AFFINE_CANVAS - 1 - bottom, draws[:, 4])
    across = _integer_between(-left, AFFINE_CANVAS - 1 - right, draws[:, 5])
    return place(warped, AFFINE_CANVAS, torch.stack([down, across], dim=1))


def _integer_between(lo: Tensor, hi: Tensor, u: Tensor) -> Tensor:
    """The integer in [lo, hi] that the uniform draw u in [0, 1) picks, per element."""
    hi = torch.maximum(hi, lo)
    return lo + (u * (hi - lo + 1)).floor().long().clamp(max=hi - lo)


@cache
def affine_test_set() -> tuple[Tensor, Tensor]:
    """The affine-transformed MNIST test images (10000, 40, 40) and their labels (cached)."""
    images, labels = load_mnist("test")
    return affine_mnist(images), labels
