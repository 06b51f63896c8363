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

A run whose model gives token states (BERT) also embeds sentences (the ``embed``
verb): the pooling the checkpoint states (sentence-transformers' ``1_Pooling``),
else the masked mean, L2-normalised, of the fine-tuned model's last hidden states;
the run keeps it as ``pooling.json``.

Baseline ``frozen_logreg`` (``archlab baseline RECIPE --method frozen_logreg``, for a
recipe with ``model.init_from``): the pretrained encoder, frozen, embeds every
sentence as ``embed`` does; a logistic regression (:mod:`archlab.nn.linear_probe`) is
fitted on the training split for each C in :data:`PROBE_C`, and the C of the best
validation accuracy (then loss) is kept and scored on validation and test.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import AtLeast, Config, Count, Fraction, OneOf, Size
from archlab.data.batching import TrainBatches, pad
from archlab.data.text import MR_LABELS, load_mr
from archlab.data.tokenizers import Vocab, WordPieceTokenizer
from archlab.errors import ArchlabError, CheckpointError, ConfigError
from archlab.interop.sentence_transformers import DEFAULT_POOLING, read_pooling
from archlab.io import atomic_write_text
from archlab.models import roles
from archlab.nn.linear_probe import fit_logistic_regression
from archlab.nn.pooling import SentencePooling, embed_texts
from archlab.tasks import Task, register_task, score_each

DATASETS = {"mr": (load_mr, MR_LABELS)}
PROBE_C = (0.1, 1.0, 10.0, 100.0, 1000.0)  # the frozen_logreg baseline's inverse L2 strengths
CLS_ID = Vocab.WORD_SPECIALS.index("<cls>")
VOCAB_FILE, WORDPIECE_FILE, POOLING_FILE = "vocab.json", "tokenizer.json", "pooling.json"


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


def fold_split(examples: list, folds: int, fold: int, val_fraction: float) -> dict[str, list]:
    """Kim's cross-validation split: the examples shuffled once (seed 0) and dealt into
    ``folds``; fold ``fold`` is "test", the last ``val_fraction`` of the rest "val"."""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0)).tolist()
    test = [examples[i] for n, i in enumerate(order) if n % folds == fold]
    rest = [examples[i] for n, i in enumerate(order) if n % folds != fold]
    n_val = int(len(rest) * val_fraction)
    return {"train": rest[: len(rest) - n_val], "val": rest[len(rest) - n_val :], "test": test}


def pad_ids(seqs: list[list[int]], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Padded ids (batch, time) and the attention mask (1 = token)."""
    ids = pad(seqs, pad_id)
    return ids, (ids != pad_id).long()


@register_task
class ClassificationTask(Task):
    name = "classification"
    DataConfig = ClassificationData
    roles = (roles.TextClassifier,)
    verbs = frozenset({"predict", "embed"})
    predict_inputs = ("TEXT",)
    metric = "accuracy"
    selectable = ("loss",)
    derived_model_keys = {
        "vocab_size": "the training sentences' words, or model.init_from's vocabulary",
        "num_classes": "the dataset's labels",
    }
    unit = "ex"
    baselines = ("frozen_logreg",)

    pooling: SentencePooling = DEFAULT_POOLING  # for the embed verb

    def use_checkpoint(self, path: Path) -> None:
        """Tokenize with the pretrained checkpoint's WordPiece vocabulary (a pretraining
        run's: its ``tokenizer.json``); pool as it says."""
        if (path / "config.yaml").is_file() and (path / WORDPIECE_FILE).is_file():
            self.tokenizer = WordPieceTokenizer.load(path / WORDPIECE_FILE)
        else:
            self.tokenizer = WordPieceTokenizer.from_checkpoint(path)
        self.pooling = read_pooling(path) or DEFAULT_POOLING

    def model_verbs(self, model: nn.Module) -> frozenset[str]:
        """predict, and embed where the model gives token states (BERT)."""
        return self.verbs if isinstance(model, roles.TokenStates) else self.verbs - {"embed"}

    def setup(self) -> None:
        d = self.data
        load, self.labels = DATASETS[d.dataset]
        split = fold_split(load(), d.folds, d.fold, d.val_fraction)
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

    def embed(self, model: nn.Module, texts: list[str]) -> Tensor:
        """Sentence embeddings (len(texts), hidden) of the model's token states, pooled."""
        if not isinstance(model, roles.TokenStates):
            raise ArchlabError("this classifier has no token states to pool; only BERT embeds")
        return embed_texts(
            model.hidden_states,
            lambda text: self._encode(" ".join(tokenize_like_mr(text))),
            texts,
            self.pooling,
            pad_id=getattr(self.tokenizer, "pad_id", 0),
        )

    # ----- the frozen-encoder baseline

    def run_baseline(self, name: str, pretrained: nn.Module | None = None) -> dict[str, Any]:
        """Logistic regression on the frozen ``pretrained`` encoder's sentence embeddings."""
        if pretrained is None or not isinstance(pretrained, roles.TokenStates):
            raise ConfigError(
                f"the {name} baseline embeds sentences with a pretrained encoder: set "
                "model.init_from (e.g. all-MiniLM-L6-v2)"
            )
        began = time.perf_counter()
        features = {split: self._frozen_features(pretrained, split) for split in self.examples}
        embed_seconds = time.perf_counter() - began
        y = {split: labels for split, (_, labels) in self.examples.items()}
        K = len(self.labels)
        best = None
        for C in PROBE_C:
            probe = fit_logistic_regression(features["train"], y["train"], C, K)
            val = _probe_metrics(probe, features["val"], y["val"])
            if best is None or (val["accuracy"], -val["loss"]) > (
                best[2]["accuracy"],
                -best[2]["loss"],
            ):
                best = (C, probe, val)
        C, probe, val = best
        test = _probe_metrics(probe, features["test"], y["test"])
        seconds = round(time.perf_counter() - began, 2)
        fitted = {
            "method": name,
            "C": C,
            "C_grid": list(PROBE_C),
            "pooling": self.pooling.to_dict(),
        }
        return {
            "val": val,
            "test": test,
            "train": {"seconds": seconds, "embed_seconds": round(embed_seconds, 2)},
            "baseline": fitted,
        }

    def _frozen_features(self, encoder: nn.Module, split: str) -> Tensor:
        """Embeddings of a split's sentences; each text is embedded once per task (folds)."""
        cache = self.__dict__.setdefault("_embedded", {})
        ids = self.examples[split][0]
        todo = sorted({tuple(seq) for seq in ids} - cache.keys())
        if todo:
            pad_id = getattr(self.tokenizer, "pad_id", 0)
            with torch.inference_mode():
                vectors = embed_texts(
                    encoder.eval().hidden_states, list, todo, self.pooling, pad_id=pad_id
                )
            cache.update(zip(todo, vectors, strict=True))
        return torch.stack([cache[tuple(seq)] for seq in ids])

    def save_artifacts(self, run_dir: Path) -> None:
        pretrained = isinstance(self.tokenizer, WordPieceTokenizer)
        self.tokenizer.save(run_dir / (WORDPIECE_FILE if pretrained else VOCAB_FILE))
        atomic_write_text(run_dir / POOLING_FILE, json.dumps(self.pooling.to_dict()) + "\n")

    def load_artifacts(self, run_dir: Path) -> None:
        if (run_dir / WORDPIECE_FILE).is_file():
            self.tokenizer = WordPieceTokenizer.load(run_dir / WORDPIECE_FILE)
        else:
            self.tokenizer = Vocab.load(run_dir / VOCAB_FILE)
        if (run_dir / POOLING_FILE).is_file():  # runs from before 2026-12-03 have none
            try:
                data = json.loads((run_dir / POOLING_FILE).read_text("utf-8"))
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"cannot read {run_dir / POOLING_FILE}: {exc}") from None
            self.pooling = SentencePooling.from_dict(data)
        self.labels = DATASETS[self.data.dataset][1]


def _probe_metrics(probe, x: Tensor, y: Tensor) -> dict[str, float]:
    log_p = probe.log_proba(x)
    loss = F.nll_loss(log_p, y).item()
    return {"loss": loss, "accuracy": (log_p.argmax(1) == y).double().mean().item()}


def tokenize_like_mr(text: str) -> list[str]:
    """Lower-case and split off punctuation, as the MR files were prepared."""
    import re

    return re.findall(r"[\w']+|[^\w\s]", text.lower())
