"""Audio-visual digits: which digit (0-9) an image and a recording of it show, together.

Data: :mod:`archlab.data.avdigits` (MNIST images paired with FSDD recordings of the
same digit, the image stripped of a share of its PCA energy, the sound under noise at
an SNR).  The model is a :class:`~archlab.models.roles.MultimodalClassifier`
(:mod:`archlab.models.fusion`), given images (B, 1, 28, 28) in [0, 1] and log-mel
frames (B, T, n_mels) with their lengths.

Loss: the cross-entropy of the fused logits, plus ``aux_weight`` (the model's config;
CentralNet's per-modality losses) times the cross-entropy of each encoder's own
classifier, over the examples that have that modality:

    L = CE(logits, y) + aux_weight * sum_m (1/B) sum_{b: m present} CE(y_m[b], y[b])

Metrics: loss and accuracy on the split as the data settings make it (``clean``: the
default degradations), and, in results.json, the accuracy under each test-time
condition of :data:`archlab.data.avdigits.CONDITIONS`: ``accuracy_image_degraded``
(``data.test_energy_removed``), ``accuracy_audio_degraded`` (``data.test_snr_db``),
``accuracy_image_missing`` and ``accuracy_audio_missing`` (``data.missing``: zeros and
a mask, or noise), on the test set.  The kept model is the best on validation accuracy (clean).

``predict`` reads pairs of files, an image then a sound (``archlab predict RUN
digit.png digit.wav``): the image as MNIST was made (see
:func:`archlab.tasks.image_classification.read_digit`), then stripped of the run's PCA
energy share as its training images were (the PCA is saved in the run directory); the
sound as the spoken-digit task reads it, without added noise.  It prints the digit,
its probability and, for a GMU, the gate's mean weight on the image and on the audio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from archlab.data import avdigits, fsdd
from archlab.data.avdigits import (
    CONDITIONS,
    PCA,
    AVDigits,
    AVDigitsData,
    pad_waves,
    standardise,
)
from archlab.data.batching import TrainBatches, stream_seed
from archlab.errors import ArchlabError, CheckpointError
from archlab.models import roles
from archlab.tasks import Task, describe_predictions, register_task, unwrap

PCA_FILE = "pca.safetensors"
DIGITS = tuple(str(d) for d in range(10))


@register_task
class AVDigitsTask(Task):
    name = "av_digits"
    DataConfig = AVDigitsData
    roles = (roles.MultimodalClassifier,)
    verbs = frozenset({"predict"})
    metric = "accuracy"
    selectable = ("loss",)
    derived_model_keys = {
        "image_size": "MNIST's 28 x 28 images",
        "n_mels": "data.n_mels (the audio features per frame)",
        "num_classes": "the ten digits",
    }
    unit = "ex"
    predict_inputs = ("IMAGE", "AUDIO")

    def __init__(self, data: AVDigitsData) -> None:
        super().__init__(data)
        self.av: AVDigits | None = None
        self.pca: PCA | None = None

    def setup(self) -> None:
        self.av = AVDigits(self.data)
        self.pca = self.av.pca
        self.batches = TrainBatches(len(self.av), self.av.lengths("train"))

    def model_overrides(self) -> dict[str, Any]:
        return {"image_size": avdigits.IMAGE_SIZE, "n_mels": self.data.n_mels, "num_classes": 10}

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.batches.per_epoch(batch_size)

    def splits(self) -> tuple[str, ...]:
        return ("val", "test")

    def train_batch(self, step: int, batch_size: int, seed: int) -> tuple[Tensor, ...]:
        rows = self.batches.indices(step, batch_size, seed)
        seeds = [stream_seed(seed, step * batch_size + j, stream=2) for j in range(len(rows))]
        b = self.av.batch("train", rows, seeds)
        return b.images, b.audio, b.lengths, b.labels

    def batch_size_of(self, batch: tuple[Tensor, ...]) -> int:
        return batch[0].shape[0]

    def loss(self, model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
        images, audio, lengths, labels = batch
        return self._loss(unwrap(model), model(images, audio, lengths), labels)

    @staticmethod
    def _loss(model: nn.Module, out, labels: Tensor) -> Tensor:
        loss = F.cross_entropy(out.logits.float(), labels)
        weight = model.config.aux_weight
        if weight:
            B, M, C = out.unimodal.shape
            ce = F.cross_entropy(
                out.unimodal.float().reshape(B * M, C),
                labels.repeat_interleave(M),
                reduction="none",
            ).view(B, M)
            loss = loss + weight * (ce * out.present).sum() / B
        return loss

    @torch.no_grad()
    def _measure(
        self, model: nn.Module, split: str, batch_size: int, condition: str
    ) -> dict[str, float]:
        inner = unwrap(model)
        device = next(inner.parameters()).device
        order = self.av.by_length(split)  # batches of similar lengths: less padding
        n = len(order)
        total, correct = 0.0, 0
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            seeds = self.av.eval_seeds(split, condition, rows)
            b = self.av.batch(split, rows, seeds, condition)
            present = None if b.present is None else b.present.to(device)
            out = model(b.images.to(device), b.audio.to(device), b.lengths.to(device), present)
            labels = b.labels.to(device)
            total += float(self._loss(inner, out, labels)) * len(rows)
            correct += int((out.logits.argmax(dim=1) == labels).sum())
        return {"loss": total / n, "accuracy": correct / n}

    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        """Loss and accuracy on ``split`` under the default degradations."""
        return self._measure(model, split, batch_size, "clean")

    def final_metrics(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        """:meth:`evaluate`'s, and on test the accuracy under every other test-time condition."""
        metrics = self.evaluate(model, split, batch_size)
        for condition in CONDITIONS[1:] if split == "test" else ():
            measured = self._measure(model, split, batch_size, condition)
            metrics[f"accuracy_{condition}"] = measured["accuracy"]
        return metrics

    # ----- artifacts and predict -----

    def save_artifacts(self, run_dir: Path) -> None:
        """The PCA the training images were degraded with (mean and kept directions)."""
        save_file(self.pca.state(self.data.energy_removed), str(run_dir / PCA_FILE))

    def load_artifacts(self, run_dir: Path) -> None:
        path = run_dir / PCA_FILE
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; the run directory is incomplete")
        self.pca = PCA.from_state(load_file(str(path)))

    def prediction_labels(self) -> list[str]:
        return list(DIGITS)

    def _read_pair(self, image_path: str, audio_path: str) -> tuple[Tensor, Tensor]:
        from archlab.tasks.image_classification import read_digit

        try:
            digit = read_digit(image_path)
        except ArchlabError as exc:
            raise ArchlabError(f"the image {image_path}: {exc}") from None
        try:
            wave = torch.from_numpy(fsdd.read_wav(audio_path))
        except ArchlabError as exc:
            raise ArchlabError(f"the sound {audio_path}: {exc}") from None
        image = self.pca.degrade(digit[None], self.data.energy_removed)
        return image, wave

    @torch.no_grad()
    def _score_pairs(self, model: nn.Module, inputs: list[str]) -> list[tuple | str]:
        """Per (image, sound) pair: (probabilities, gate or None), or why it cannot be scored."""
        k = len(self.predict_inputs)
        out: list[tuple | str] = []
        for i in range(0, len(inputs), k):
            try:
                image, wave = self._read_pair(*inputs[i : i + k])
            except ArchlabError as exc:
                out.append(str(exc))
                continue
            audio, lengths = fsdd.log_mel_batch(*pad_waves([wave]), n_mels=self.data.n_mels)
            if self.data.standardise:
                audio = standardise(audio, lengths)
            device = next(unwrap(model).parameters()).device
            result = model(image[:, None].to(device), audio.to(device), lengths.to(device))
            gate = None if result.gate is None else result.gate[0].float().cpu()
            out.append((result.logits[0].float().softmax(dim=0).cpu(), gate))
        return out

    def predict_scores(self, model: nn.Module, inputs: list[str]) -> list[Tensor | str]:
        """The digit probabilities of each (image, sound) pair of ``inputs``."""
        return [s if isinstance(s, str) else s[0] for s in self._score_pairs(model, inputs)]

    def predict(self, model: nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        """Digit and probability per pair; a GMU adds its gate's mean weights."""
        scored = self._score_pairs(model, inputs)
        scores = [s if isinstance(s, str) else s[0] for s in scored]
        rows = describe_predictions(self.prediction_labels(), [scores])
        for row, s in zip(rows, scored, strict=True):
            if not isinstance(s, str) and s[1] is not None:
                row["gate_image"], row["gate_audio"] = float(s[1][0]), float(s[1][1])
        return rows
