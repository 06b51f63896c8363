"""Sentence classification (MR sentence polarity by default).

Loss: cross-entropy of the model's class logits; metrics: loss and accuracy.
Splits follow Kim (2014): the 10,662 sentences are shuffled once (data seed 0, not
the training seed) and dealt into ``folds`` folds; fold ``fold`` is the test set,
and the last ``val_fraction`` of the remaining sentences is the validation set
used for early stopping and best-checkpoint keeping.  ``archlab train RECIPE
--folds 10`` trains every fold and reports the mean, as Kim did.

The model is a text classifier (:class:`archlab.models.roles.TextClassifier`): its
forward takes (input_ids, attention_mask), attention_mask 1 on tokens and 0 on
padding, and returns class logits.

Text is tokenized with a word vocabulary of the training split, each sentence
starting with <cls> (the token BERT-style models pool).  A recipe that fine-tunes a
pretrained BERT (``model.init_from=DIR``) tokenizes with the checkpoint's WordPiece
vocabulary instead, [CLS] sentence [SEP] as BERT was pre-trained
(:meth:`ClassificationTask.use_checkpoint`); the run keeps that tokenizer as
``tokenizer.json``, the word vocabulary as ``vocab.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import AtLeast, Config, Count, Fraction, OneOf, Size
from archlab.data.batching import TrainBatches, pad
from archlab.data.text import MR_LABELS, load_mr
from archlab.data.tokenizers import Vocab, WordPieceTokenizer
from archlab.errors import ArchlabError, ConfigError
from archlab.models import roles
from archlab.tasks import Task, register_task, score_each

DATASETS = {"mr": (load_mr, MR_LABELS)}
CLS_ID = Vocab.WORD_SPECIALS.index("<cls>")
VOCAB_FILE, WORDPIECE_FILE = "vocab.json", "tokenizer.json"


@dataclass
class ClassificationData(Config):
    section: ClassVar[str] = "data"

    dataset: Annotated[str, OneOf(DATASETS)] = "mr"
    folds: Annotated[int, AtLeast(2)] = 10
    fold: Count = 0  # which fold is the test set
    val_fraction: Fraction = 0.1  # of the other folds, for early stopping
    max_len: Size = 64  # tokens kept per sentence

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fold >= self.folds:
            raise ConfigError(f"{self.key('fold')} must lie in [0, {self.folds}), got {self.fold}")


def pad_ids(seqs: list[list[int]], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Padded ids (batch, time) and the attention mask (1 = token)."""
    ids = pad(seqs, pad_id)
    return ids, (ids != pad_id).long()


@register_task
class ClassificationTask(Task):
    name = "classification"
    DataConfig = ClassificationData
    roles = (roles.TextClassifier,)
    verbs = frozenset({"predict"})
    predict_inputs = ("TEXT",)
    metric = "accuracy"
    selectable = ("loss",)
    derived_model_keys = {
        "vocab_size": "the training sentences' words, or model.init_from's vocabulary",
        "num_classes": "the dataset's labels",
    }
    unit = "ex"

    def use_checkpoint(self, path: Path) -> None:
        """Tokenize with the pretrained checkpoint's WordPiece vocabulary."""
        self.tokenizer = WordPieceTokenizer.from_checkpoint(path)

    def setup(self) -> None:
        d = self.data
        load, self.labels = DATASETS[d.dataset]
        examples = load()
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0)).tolist()
        test = [examples[i] for n, i in enumerate(order) if n % d.folds == d.fold]
        rest = [examples[i] for n, i in enumerate(order) if n % d.folds != d.fold]
        n_val = int(len(rest) * d.val_fraction)
        split = {"train": rest[: len(rest) - n_val], "val": rest[len(rest) - n_val :], "test": test}
        if not hasattr(self, "tokenizer"):  # a loaded or pretrained run keeps its own
            self.tokenizer = Vocab.of_words(text for text, _ in split["train"])
        self.examples = {
            name: ([self._encode(text) for text, _ in rows], torch.tensor([y for _, y in rows]))
            for name, rows in split.items()
        }
        ids = self.examples["train"][0]
        self.batches = TrainBatches(len(ids), list(map(len, ids)))

    def _encode(self, text: str) -> list[int]:
        """The sentence's ids, at most max_len: <cls> words, or [CLS] word pieces [SEP]."""
        if isinstance(self.tokenizer, WordPieceTokenizer):
            return self.tokenizer.encode(text, self.data.max_len)
        return [CLS_ID, *self.tokenizer.encode(text)[: self.data.max_len - 1]]

    def _pad(self, seqs: list[list[int]]) -> tuple[Tensor, Tensor]:
        return pad_ids(seqs, getattr(self.tokenizer, "pad_id", 0))

    def model_overrides(self) -> dict:
        return {"vocab_size": self.tokenizer.vocab_size, "num_classes": len(self.labels)}

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.batches.per_epoch(batch_size)

    def train_batch(self, step: int, batch_size: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
        ids, labels = self.examples["train"]
        rows = self.batches.indices(step, batch_size, seed)
        return (*self._pad([ids[i] for i in rows]), labels[rows])

    def batch_size_of(self, batch: tuple[Tensor, Tensor, Tensor]) -> int:
        return batch[0].shape[0]

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        ids, mask, labels = batch
        return F.cross_entropy(model(ids, mask).float(), labels)

    def splits(self) -> tuple[str, ...]:
        return ("val", "test")

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        ids, labels = self.examples[split]
        total, correct = 0.0, 0
        for i in range(0, len(ids), batch_size):
            logits = model(*self._pad(ids[i : i + batch_size])).float()
            y = labels[i : i + batch_size]
            total += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == y).sum())
        return {"loss": total / len(ids), "accuracy": correct / len(ids)}

    def prediction_labels(self) -> list[str]:
        return list(self.labels)

    @torch.no_grad()
    def predict_scores(self, model: nn.Module, texts: list[str]) -> list[Tensor | str]:
        """The class probabilities of each text."""

        def read(text: str) -> list[int]:
            if not text.strip():
                raise ArchlabError("the text is empty")
            # the training text is lower-cased and tokenized with spaces around punctuation
            return self._encode(" ".join(tokenize_like_mr(text)))

        return score_each(texts, read, lambda seqs: model(*self._pad(seqs)).float().softmax(1))

    def save_artifacts(self, run_dir: Path) -> None:
        pretrained = isinstance(self.tokenizer, WordPieceTokenizer)
        self.tokenizer.save(run_dir / (WORDPIECE_FILE if pretrained else VOCAB_FILE))

    def load_artifacts(self, run_dir: Path) -> None:
        if (run_dir / WORDPIECE_FILE).is_file():
            self.tokenizer = WordPieceTokenizer.load(run_dir / WORDPIECE_FILE)
        else:
            self.tokenizer = Vocab.load(run_dir / VOCAB_FILE)
        self.labels = DATASETS[self.data.dataset][1]


def tokenize_like_mr(text: str) -> list[str]:
    """Lower-case and split off punctuation, as the MR files were prepared."""
    import re

    return re.findall(r"[\w']+|[^\w\s]", text.lower())
