"""av-digits: MNIST images paired with FSDD recordings of the same digit, built like AV-MNIST
(Vielzeuf et al. 2018, "CentralNet") from the data on hand.

Pairs (:func:`pair`): each image gets a recording of its digit, drawn by a seeded
permutation per digit and dealt in turn, so every recording of a split serves
floor(n/k) or ceil(n/k) of its k-recording digit's n images:

    split   images                               recordings (FSDD takes)     uses per recording
    train   MNIST train minus val (55,000)        takes 10-49 (2,400)         22.9 (20-26)
    val     ``val_size`` carved from MNIST train  takes 5-9 (300)             16.7 (15-20)
    test    MNIST test (10,000)                   takes 0-4 (300)             33.3 (29-38)

(the FSDD split of :func:`archlab.data.fsdd.split`: takes 0-4 test, 5-49 training,
of which 5-9 are held out for validation), so no image and no recording is in two
splits.  ``split_seed`` fixes the validation images and the pairing.

Degradations, so that neither modality alone is near perfect:

- the image loses a share ``energy_removed`` of its PCA energy (AV-MNIST removes
  75 %): with the principal directions u_1, u_2, ... of the *training* images (the
  eigenvectors of their covariance, eigenvalues lambda_1 >= lambda_2 >= ...), mean mu,
  it keeps the leading k directions, k the fewest with
  sum_{i<=k} lambda_i >= (1 - energy_removed) sum_i lambda_i:

      x' = mu + U_k U_k^T (x - mu)            (pixels in [0, 1], then clipped to [0, 1])

- the audio gets additive noise n at a signal-to-noise ratio ``snr_db``, white
  (Gaussian) or another FSDD speaker saying another digit (from the same split,
  tiled to the recording's length), scaled so that

      10 log10(P_x / P_n) = snr_db,   P = mean square of the samples,

  then goes through the log-mel features of :mod:`archlab.data.fsdd`, which
  ``standardise`` brings to mean 0 and variance 1 per recording (over its frames and
  bands): under noise the features sit high above their floor, and without it an
  audio CNN often sat at chance for its whole epoch (1 seed of 3).

Training draws fresh noise at every step (from a generator seeded by the run's seed
and the step); validation and test noise is fixed per example by ``split_seed``.

Test-time corruption (:data:`CONDITIONS`): the same test pairs with the image
degraded further (``test_energy_removed``), the audio degraded further
(``test_snr_db``), or one modality missing.  ``missing: zeros`` gives a missing
modality as zeros (a black image; zero features) *and* a mask that
tells the model it is absent; ``missing: noise`` replaces it by noise (uniform pixel
noise; white noise as the sound) without a mask, so the model must notice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Annotated, ClassVar

import numpy as np
import torch
from torch import Tensor

from archlab.config import Config, Count, Interval, OneOf, Size
from archlab.data import fsdd
from archlab.data.batching import stream_seed
from archlab.data.files import Dataset, register_dataset
from archlab.data.mnist import MNIST, TRAIN_IMAGES, load_mnist
from archlab.errors import ConfigError

SPLITS = ("train", "val", "test")
# the test-time conditions: (name, image energy removed, SNR, image present, audio present);
# None means the split's default degradation
CONDITIONS = ("clean", "image_degraded", "audio_degraded", "image_missing", "audio_missing")
NOISES = ("white", "speakers")
IMAGE_SIZE = 28

EnergyShare = Annotated[float, Interval(0.0, 1.0, high_open=True)]  # [0, 1)
Decibels = Annotated[float, Interval(-30.0, 60.0)]


@dataclass
class AVDigitsData(Config):
    section: ClassVar[str] = "data"

    dataset: Annotated[str, OneOf(("av-digits",))] = "av-digits"
    val_size: Size = 5000  # validation images carved from MNIST's 60,000 training images
    split_seed: Count = 0  # picks them, pairs images with recordings, fixes eval noise
    train_size: Size | None = None  # use only the first N training pairs (quick checks)
    test_size: Size | None = None  # use only the first N test pairs (quick checks)
    energy_removed: EnergyShare = 0.75  # share of the images' PCA energy removed
    snr_db: Decibels = 0.0  # signal-to-noise ratio of the audio, in dB
    noise: Annotated[str, OneOf(NOISES)] = "white"  # white, or other speakers' recordings
    test_energy_removed: EnergyShare = 0.85  # "image degraded further"
    test_snr_db: Decibels = -10.0  # "audio degraded further"
    missing: Annotated[str, OneOf(("zeros", "noise"))] = "zeros"  # zeros + mask, or noise
    standardise: bool = True  # each recording's features to mean 0, variance 1
    n_mels: Size = 40  # mel bands per audio frame

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.val_size >= TRAIN_IMAGES:
            raise ConfigError(
                f"{self.key('val_size')} must lie in (0, {TRAIN_IMAGES}), got {self.val_size}"
            )
        if self.test_energy_removed < self.energy_removed:
            raise ConfigError(
                f"{self.key('test_energy_removed')} ({self.test_energy_removed:g}) degrades the "
                f"images further, so it must be at least {self.key('energy_removed')} "
                f"({self.energy_removed:g})"
            )
        if self.test_snr_db > self.snr_db:
            raise ConfigError(
                f"{self.key('test_snr_db')} ({self.test_snr_db:g} dB) degrades the audio "
                f"further, so it must be at most {self.key('snr_db')} ({self.snr_db:g} dB)"
            )


# ----- pairing -----


def pair(labels: Tensor, rec_digits: Tensor, generator: torch.Generator) -> Tensor:
    """For each image (its ``labels``), the index into ``rec_digits`` of its recording.

    Per digit, the images are permuted and the recordings of that digit, also
    permuted, are dealt to them in turn: each recording serves floor(n/k) or
    ceil(n/k) images.  A digit without recordings is refused.
    """
    out = torch.empty(len(labels), dtype=torch.long)
    for digit in labels.unique().tolist():
        images = (labels == digit).nonzero().flatten()
        recs = (rec_digits == digit).nonzero().flatten()
        if not len(recs):
            raise ConfigError(f"no recording of the digit {digit} to pair with its images")
        images = images[torch.randperm(len(images), generator=generator)]
        recs = recs[torch.randperm(len(recs), generator=generator)]
        out[images] = recs.repeat(math.ceil(len(images) / len(recs)))[: len(images)]
    return out


@dataclass
class PairedSplit:
    images: Tensor  # uint8 (N, 28, 28)
    labels: Tensor  # (N,)
    recording: Tensor  # (N,) index into AVDigits.recordings
    pool: Tensor  # the split's recordings (indices into AVDigits.recordings)
    index: Tensor  # (N,) each image's index in its MNIST file (train or t10k)


# ----- image degradation -----


@dataclass
class PCA:
    """The principal directions of a set of images: mean (D,), components (D, D), energy (D,).

    Components are columns, in order of decreasing eigenvalue (``energy``).
    """

    mean: Tensor
    components: Tensor
    energy: Tensor

    @classmethod
    def fit(cls, images: Tensor) -> PCA:
        """PCA of uint8 images (N, H, W), pixels scaled to [0, 1] (eigh in float64)."""
        x = images.flatten(1).float() / 255
        mean = x.double().mean(0)
        centred = x - mean.float()
        covariance = (centred.T @ centred).double() / len(x)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a 784 x 784 eigh: 0.2 s on one thread, seconds on busy cores
        try:
            energy, vectors = torch.linalg.eigh(covariance)
        finally:
            torch.set_num_threads(threads)
        order = energy.argsort(descending=True)
        return cls(mean.float(), vectors[:, order].float(), energy[order].clamp(min=0).float())

    def kept(self, energy_removed: float) -> int:
        """k: the fewest leading directions that hold at least 1 - energy_removed of the energy."""
        share = self.energy.double().cumsum(0) / self.energy.double().sum()
        k = int((share < 1 - energy_removed - 1e-12).sum()) + 1
        return min(k, len(self.energy))

    def degrade(self, images: Tensor, energy_removed: float) -> Tensor:
        """Images (N, H, W), uint8 or float in [0, 1], with their trailing directions removed:
        float (N, H, W) in [0, 1]."""
        x = images.flatten(1).float()
        if images.dtype == torch.uint8:
            x = x / 255
        U = self.components[:, : self.kept(energy_removed)]
        y = self.mean + ((x - self.mean) @ U) @ U.T
        return y.clamp(0, 1).view(images.shape)

    def state(self, energy_removed: float) -> dict[str, Tensor]:
        """What a run needs to degrade images as it was trained: the mean and the kept U_k."""
        return {
            "mean": self.mean.contiguous(),
            "components": self.components[:, : self.kept(energy_removed)].contiguous(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> PCA:
        """A PCA that holds only the kept directions (as saved by :meth:`state`)."""
        k = state["components"].shape[1]
        return cls(state["mean"], state["components"], torch.ones(k))


# ----- audio degradation -----


@cache
def waveforms() -> tuple[np.ndarray, ...]:
    """Every FSDD recording's samples (8 kHz float32), in the order of fsdd.recordings()."""
    return tuple(fsdd.read_wav(r.path) for r in fsdd.recordings())


def add_noise(clean: Tensor, noise: Tensor, snr_db: float) -> Tensor:
    """clean + s n, with s such that 10 log10(P_clean / P_(s n)) = snr_db (P: mean square)."""
    p_clean, p_noise = clean.square().mean(), noise.square().mean().clamp(min=1e-12)
    return clean + noise * torch.sqrt(p_clean / (p_noise * 10 ** (snr_db / 10)))


def standardise(features: Tensor, frames: Tensor) -> Tensor:
    """Each recording's features (B, T, F) to mean 0 and variance 1 over its real frames
    (``frames`` (B,)); the padding frames become 0."""
    real = (torch.arange(features.shape[1])[None, :] < frames[:, None])[..., None]
    count = (frames * features.shape[2]).to(features.dtype)[:, None, None]
    mean = (features * real).sum(dim=(1, 2), keepdim=True) / count
    var = ((features - mean).square() * real).sum(dim=(1, 2), keepdim=True) / count
    return ((features - mean) / (var.sqrt() + 1e-5)) * real


def pad_waves(waves: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Recordings as one zero-padded (batch, longest) tensor and their lengths."""
    lengths = torch.tensor([len(w) for w in waves])
    out = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        out[i, : len(w)] = w
    return out, lengths


# ----- the dataset -----

AV_DIGITS = register_dataset(
    Dataset(
        "av-digits",
        "MNIST images paired with FSDD recordings of the same digit (built from both, as AV-MNIST)",
        MNIST.files + fsdd.FSDD.files,
        licence=f"{MNIST.name}: {MNIST.licence}; {fsdd.FSDD.name}: {fsdd.FSDD.licence}",
    )
)


@dataclass
class Batch:
    """Model inputs for a batch of pairs, and their digits."""

    images: Tensor  # (B, 1, 28, 28) in [0, 1]
    audio: Tensor  # (B, T, n_mels) log-mel frames, padded with the floor -1
    lengths: Tensor  # (B,) real frames
    present: Tensor | None  # (B, 2) image, audio: False where a modality is missing; None: all
    labels: Tensor  # (B,)


class AVDigits:
    """The paired splits, the PCA of the training images, and the batches of each condition."""

    def __init__(self, d: AVDigitsData) -> None:
        self.data = d
        recs = fsdd.recordings()
        self.recordings = recs
        self.rec_digits = torch.tensor([r.digit for r in recs])
        self.rec_speakers = torch.tensor([fsdd.SPEAKERS.index(r.speaker) for r in recs])
        parts = {k: torch.tensor(v) for k, v in fsdd.split(recs).items()}
        images, labels = load_mnist("train")
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(d.split_seed))
        train, val = order[d.val_size :].sort().values, order[: d.val_size].sort().values
        train = train[: d.train_size]
        test_images, test_labels = load_mnist("test")
        test = torch.arange(len(test_images))[: d.test_size]
        chosen = {
            "train": (images, labels, train),
            "val": (images, labels, val),
            "test": (test_images, test_labels, test),
        }
        self.splits: dict[str, PairedSplit] = {}
        for i, name in enumerate(SPLITS):
            x, y, index = chosen[name]
            y = y[index]
            g = torch.Generator().manual_seed(stream_seed(d.split_seed, i, stream=5))
            pool = parts[name]
            recording = pool[pair(y, self.rec_digits[pool], g)]
            self.splits[name] = PairedSplit(x[index], y, recording, pool, index)
        self.pca = PCA.fit(self.splits["train"].images)  # the training images only

    def __len__(self) -> int:
        return len(self.splits["train"].labels)

    def noise_for(self, split: str, rec: int, length: int, g: torch.Generator) -> Tensor:
        """A noise signal of ``length`` samples for recording ``rec`` (white or a speaker)."""
        if self.data.noise == "white":
            return torch.randn(length, generator=g)
        pool = self.splits[split].pool
        others = pool[
            (self.rec_speakers[pool] != self.rec_speakers[rec])
            & (self.rec_digits[pool] != self.rec_digits[rec])
        ]
        other = int(others[torch.randint(len(others), (1,), generator=g)])
        wave = torch.from_numpy(waveforms()[other])
        return wave.repeat(math.ceil(length / len(wave)))[:length]

    def batch(
        self,
        split: str,
        rows: list[int] | Tensor,
        seeds: list[int],
        condition: str = "clean",
    ) -> Batch:
        """The pairs ``rows`` of ``split`` under ``condition``, example i's noise drawn from a
        generator seeded with ``seeds[i]``."""
        d, part = self.data, self.splits[split]
        rows = torch.as_tensor(rows, dtype=torch.long)
        energy = d.test_energy_removed if condition == "image_degraded" else d.energy_removed
        snr = d.test_snr_db if condition == "audio_degraded" else d.snr_db
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        images = self.pca.degrade(part.images[rows], energy)
        waves = []
        for g, rec in zip(gens, part.recording[rows].tolist(), strict=True):
            clean = torch.from_numpy(waveforms()[rec])
            waves.append(add_noise(clean, self.noise_for(split, rec, len(clean), g), snr))
        present = None
        missing = {"image_missing": 0, "audio_missing": 1}.get(condition)
        if missing is not None and d.missing == "zeros":
            present = torch.ones(len(rows), 2, dtype=torch.bool)
            present[:, missing] = False
        if missing == 0:
            images = (
                torch.zeros_like(images)
                if d.missing == "zeros"
                else torch.stack([torch.rand(images.shape[1:], generator=g) for g in gens])
            )
        if missing == 1 and d.missing == "noise":
            waves = [torch.randn(len(w), generator=g) for w, g in zip(waves, gens, strict=True)]
        audio, lengths = self.features(waves)
        if missing == 1 and d.missing == "zeros":
            audio = torch.zeros_like(audio)  # the mask says it is absent
        return Batch(images.unsqueeze(1), audio, lengths, present, part.labels[rows])

    def features(self, waves: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Log-mel frames (B, T, n_mels) of recordings, and their frame counts (see the module)."""
        audio, frames = fsdd.log_mel_batch(*pad_waves(waves), n_mels=self.data.n_mels)
        return (standardise(audio, frames) if self.data.standardise else audio), frames

    def lengths(self, split: str) -> list[int]:
        """The samples in each pair's recording (to batch pairs of similar lengths)."""
        samples = torch.tensor([len(w) for w in waveforms()])
        return samples[self.splits[split].recording].tolist()

    def by_length(self, split: str) -> list[int]:
        """The pairs of ``split``, shortest recording first (ties in pair order)."""
        lengths = torch.tensor(self.lengths(split))
        return lengths.argsort(stable=True).tolist()

    def eval_seeds(self, split: str, condition: str, rows: range | list[int]) -> list[int]:
        """The fixed noise seed of each example of ``split`` under ``condition``."""
        stream = 10 + SPLITS.index(split) * len(CONDITIONS) + CONDITIONS.index(condition)
        return [stream_seed(self.data.split_seed, i, stream=stream) for i in rows]
