"""Free Spoken Digit Dataset (FSDD, Jakobovski et al.): 3,000 recordings of spoken digits.

Files: ``fsdd/recordings/{digit}_{speaker}_{take}.wav``, 6 speakers x 10 digits x 50
takes (0-49), RIFF WAVE, 16-bit PCM, mono, 8 kHz, 0.14 s to 2.28 s long, each verified
by the SHA-256 in ``fsdd.sha256`` beside this module (the ``sha256sum`` listing of
the recordings at the dataset's commit 26eb9aa), downloaded from GitHub when missing.
Licence CC BY-SA 4.0.

Protocols (:func:`split`), each a table of recording indices per split:

- the dataset's own split (``folds=0``): takes 0-4 of every speaker and digit are the
  test set (6 x 10 x 5 = 300 recordings), takes 5-9 the validation set (300), takes
  10-49 the training set (2,400);
- leave one speaker out (``folds=6``, fold f): all 500 recordings of speaker
  ``SPEAKERS[f]`` are the test set; of the other five speakers, takes 5-9 are the
  validation set (250) and the rest the training set (2,250).

Validation is fixed takes, not a seeded draw, so every run selects on the same
recordings, and it never holds a test speaker's voice in the speaker protocol.

Features (:func:`log_mel`): a log-mel spectrogram, with librosa's STFT and mel
filter bank, 25 ms Hann windows every 10 ms (200 / 80 samples, FFT size 256) and
``n_mels`` triangular filters over 0-4 kHz (Slaney's mel scale), in decibels
relative to the recording's loudest bin, floored at -80 dB and scaled to [-1, 1]:

    S = |STFT(x)|^2,   M = W_mel S,   f = clip(10 log10(M / max M), -80, 0) / 40 + 1

(one row per frame: T = 1 + floor(samples / 80) frames of ``n_mels`` values).  Being
relative to the peak, the features ignore the recording's gain.  Features of the
dataset's files are cached per file SHA-256 and setting under
``cache_root()/fsdd/`` (:func:`cached_log_mel`), never in the data root.

:func:`read_wav` reads any user's file as the dataset is: stereo is down-mixed (the
mean of the channels), another sample rate is resampled to 8 kHz (librosa's
``resample``, soxr); an empty, silent, unreadable or non-audio file raises
:class:`~archlab.errors.ArchlabError`, one sentence saying what is wrong with it.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from archlab.data.files import DataFile, Dataset, cache_root, fetch, register_dataset, sha256_of
from archlab.errors import ArchlabError, ConfigError, require

SAMPLE_RATE = 8000
DIGITS = tuple(str(d) for d in range(10))
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
TAKES = 50
TEST_TAKES = range(0, 5)  # the dataset's README: takes 0-4 are the test set
VAL_TAKES = range(5, 10)  # archlab's validation takes, carved from the training takes
N_FFT, WIN_LENGTH, HOP_LENGTH = 256, 200, 80  # 32 ms FFT, 25 ms window, 10 ms hop
TOP_DB = 80.0
FEATURE_VERSION = 1  # part of the cache key: bump when log_mel changes
FSDD_URL = (
    "https://raw.githubusercontent.com/Jakobovski/free-spoken-digit-dataset/"
    "26eb9aaf76e81b692f806f9140c2d2777410d7a1/recordings/"
)
CHECKSUMS = Path(__file__).with_name("fsdd.sha256")


def _files() -> tuple[DataFile, ...]:
    files = []
    for line in CHECKSUMS.read_text(encoding="ascii").splitlines():
        sha256, name = line.split()
        files.append(DataFile(f"fsdd/recordings/{name}", sha256, FSDD_URL + name))
    return tuple(files)


FSDD = register_dataset(
    Dataset(
        "fsdd",
        "Free Spoken Digit Dataset: 3,000 wav recordings of digits 0-9, 6 speakers, 8 kHz",
        _files(),
        licence="CC BY-SA 4.0",
    )
)


@dataclass(frozen=True)
class Recording:
    path: Path
    sha256: str
    digit: int
    speaker: str
    take: int


def recordings() -> list[Recording]:
    """Every FSDD recording (verified), in the order of ``fsdd.sha256``."""
    paths = fetch("fsdd")
    out = []
    for file in FSDD.files:
        digit, speaker, take = Path(file.path).stem.split("_")
        out.append(Recording(paths[file.path], file.sha256, int(digit), speaker, int(take)))
    return out


def protocol_problem(folds: int, fold: int, prefix: str = "data.") -> str | None:
    """Why (folds, fold) names no protocol, in one sentence; None when it names one."""
    if folds not in (0, len(SPEAKERS)):
        return (
            f"FSDD has {len(SPEAKERS)} speakers: {prefix}folds must be 0 (the dataset's split) "
            f"or {len(SPEAKERS)} (leave one speaker out), got {folds}"
        )
    if not 0 <= fold < max(folds, 1):
        return f"{prefix}fold must lie in [0, {max(folds, 1)}), got {fold}"
    return None


def split(recs: list[Recording], folds: int = 0, fold: int = 0) -> dict[str, list[int]]:
    """Indices into ``recs`` of train / val / test under a protocol (see the module doc).

    ``folds=0``: the dataset's split (takes 0-4 test); ``folds=6``: leave speaker
    ``SPEAKERS[fold]`` out.
    """
    problem = protocol_problem(folds, fold)
    if problem:
        raise ConfigError(problem)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, r in enumerate(recs):
        held_out = r.speaker == SPEAKERS[fold] if folds else r.take in TEST_TAKES
        if held_out:
            out["test"].append(i)
        elif r.take in VAL_TAKES:
            out["val"].append(i)
        else:
            out["train"].append(i)
    return out


def read_wav(path: str | Path) -> np.ndarray:
    """A sound file as float32 samples at 8 kHz, mono: stereo down-mixed, rate resampled.

    Raises :class:`ArchlabError` for a missing, empty, silent or unreadable file, its
    message saying what is wrong (without the file's name, which callers print).
    """
    sf = require("soundfile", "audio", "spoken digits (reading wav files)")
    path = Path(path)
    if not path.is_file():
        raise ArchlabError("no such file")
    if path.stat().st_size == 0:
        raise ArchlabError("the file is empty")
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(getattr(exc, "error_string", exc)).rstrip(".")  # libsndfile's own words
        raise ArchlabError(f"cannot be read as a wav file ({reason})") from None
    if audio.size == 0:
        raise ArchlabError("holds no audio: it has no samples")
    audio = audio.mean(axis=1)
    if not np.abs(audio).max() > 0:
        raise ArchlabError("holds only silence")
    if rate != SAMPLE_RATE:
        librosa = require("librosa", "audio", "spoken digits (resampling)")
        audio = librosa.resample(audio, orig_sr=rate, target_sr=SAMPLE_RATE).astype(np.float32)
    return audio


@cache
def _mel_filters(n_mels: int) -> np.ndarray:
    librosa = require("librosa", "audio", "spoken digits (log-mel features)")
    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels, fmax=SAMPLE_RATE / 2)


def log_mel(audio: np.ndarray, n_mels: int = 40) -> np.ndarray:
    """Log-mel features (frames, n_mels), float32 in [-1, 1], of 8 kHz mono samples."""
    librosa = require("librosa", "audio", "spoken digits (log-mel features)")
    with warnings.catch_warnings():  # n_fft longer than a very short recording: zero-padded
        warnings.simplefilter("ignore", UserWarning)
        spectrum = librosa.stft(
            np.asarray(audio, dtype=np.float32),
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            win_length=WIN_LENGTH,
        )
    mel = _mel_filters(n_mels) @ (np.abs(spectrum) ** 2)
    db = librosa.power_to_db(mel, ref=np.max, top_db=TOP_DB)  # 10 log10(M / max M), >= -80
    return (db.T / (TOP_DB / 2) + 1).astype(np.float32)


def log_mel_batch(audio: Tensor, lengths: Tensor, n_mels: int = 40) -> tuple[Tensor, Tensor]:
    """:func:`log_mel` of a padded batch of recordings, in torch: (features, frames).

    ``audio`` (batch, samples) holds each recording's ``lengths`` samples, then zeros.
    Returns the features (batch, T, n_mels), T = 1 + samples // 80, and each
    recording's frame count 1 + length // 80; its frames equal :func:`log_mel`'s (the
    STFT pads with zeros, as librosa's does, so the batch's padding changes no real
    frame), each scaled by its own loudest bin over its real frames, and the frames
    past its end are the floor, -1.
    """
    window = torch.hann_window(WIN_LENGTH, periodic=True, dtype=audio.dtype, device=audio.device)
    spectrum = torch.stft(
        audio,
        N_FFT,
        hop_length=HOP_LENGTH,
        win_length=WIN_LENGTH,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    filters = torch.from_numpy(_mel_filters(n_mels)).to(audio)
    mel = filters @ torch.view_as_real(spectrum).square().sum(-1)  # (batch, n_mels, T)
    frames = 1 + lengths.to(audio.device) // HOP_LENGTH
    real = torch.arange(mel.shape[2], device=audio.device)[None, :] < frames[:, None]
    peak = mel.masked_fill(~real[:, None, :], 0.0).amax(dim=(1, 2), keepdim=True)
    amin = 1e-10  # librosa's power_to_db
    db = 10 * torch.log10(mel.clamp(min=amin)) - 10 * torch.log10(peak.clamp(min=amin))
    db = db.clamp(min=-TOP_DB).masked_fill(~real[:, None, :], -TOP_DB)
    return (db / (TOP_DB / 2) + 1).transpose(1, 2).contiguous(), frames


def features_of_file(path: str | Path, n_mels: int = 40) -> np.ndarray:
    """Log-mel features (frames, n_mels) of a user's sound file (:func:`read_wav`)."""
    return log_mel(read_wav(path), n_mels)


def cached_log_mel(path: str | Path, n_mels: int = 40, sha256: str | None = None) -> np.ndarray:
    """:func:`features_of_file`, cached under ``cache_root()`` by the file's SHA-256.

    ``sha256`` is the file's known hash (a dataset file's, already verified); without
    it the file is hashed, so a changed file gets new features.
    """
    key = sha256 or sha256_of(Path(path))
    target = cache_root() / "fsdd" / f"logmel-v{FEATURE_VERSION}-{n_mels}" / f"{key}.npy"
    if target.is_file():
        return np.load(target)
    features = features_of_file(path, n_mels)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npy", dir=target.parent)
    with os.fdopen(fd, "wb") as f:
        np.save(f, features)
    os.replace(tmp, target)  # whole or absent, whatever stops the write
    return features


def dataset_features(recs: list[Recording], n_mels: int = 40) -> list[np.ndarray]:
    """The cached log-mel features of every recording of ``recs``."""
    return [cached_log_mel(r.path, n_mels, r.sha256) for r in recs]
