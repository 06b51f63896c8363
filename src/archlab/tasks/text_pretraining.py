"""Pretraining on unlabelled English: a masked LM (BERT) or a left-to-right LM (GPT).

For the articles' claim that bidirectional context (BERT) makes better sentence
representations than left-to-right context (GPT): both objectives read the same
sentences, cut into the same word pieces, so that what their fine-tuned MR accuracies
differ by is the objective.

Text: the English side of Multi30k's training split and the MR training sentences of
one fold (``fold`` of ``folds``, dealt as the classification task deals them; the
fold's validation and test sentences are left out), without their labels.  Held-out
text: Multi30k's English validation split (1,014 sentences).  A WordPiece vocabulary
of at most ``vocab_size`` pieces is learnt from the training text (lower case); each
sentence is [CLS] pieces [SEP], at most ``max_len`` ids.

Objectives (``objective``):

- ``mlm`` (Devlin et al. 2019), model ``bert`` with its MLM head: a share
  ``mask_prob`` of each sentence's pieces (never [CLS] or [SEP]; at least one) is
  chosen; of those, 80 % become [MASK], 10 % a random piece, 10 % stay as they are, and

      loss = -mean_{i chosen} log p(w_i | the corrupted sentence)

- ``clm`` (Radford et al. 2018), model ``gpt``:

      loss = -mean_{t >= 1} log p(w_t | w_<t)     (every piece after [CLS], [SEP] too)

Validation: the objective's loss on the held-out text (MLM's choices fixed, so that
the figure is comparable from one evaluation to the next).  In results.json, on the
same held-out pieces (the sentences' words, not [CLS] or [SEP]):

- clm: perplexity = exp(-(1/N) sum_s sum_t log p(w_t | w_<t));
- mlm: pseudo-perplexity (Salazar et al. 2020) = exp(-(1/N) sum_s sum_t log p(w_t | s
  with w_t alone masked)), one forward pass per piece.

The two are not the same quantity: GPT's is the probability of the sentence (the
chain rule holds), BERT's scores each piece with both sides of it visible, which is
easier and does not define a distribution over sentences, so a lower pseudo-perplexity
does not make BERT the better language model.

A pretraining run starts a classifier of the same architecture:
``archlab train bert-mr --set model.init_from=RUN_DIR`` (or ``gpt-mr``) takes its kept
weights and its WordPiece vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import AtLeast, Config, Count, Fraction, OneOf
from archlab.data.batching import TrainBatches, stream_seed
from archlab.data.text import load_mr, load_multi30k
from archlab.data.tokenizers import WordPieceTokenizer
from archlab.errors import ConfigError
from archlab.models import roles
from archlab.tasks import Task, register_task
from archlab.tasks.classification import fold_split, pad_ids

OBJECTIVES = {"mlm": roles.Encoder, "clm": roles.LanguageModel}
TOKENIZER_FILE = "tokenizer.json"
IGNORE = -100  # targets that are not scored
VAL_MASK_SEED = 0  # the held-out text's MLM choices


@dataclass
class TextPretrainingData(Config):
    section: ClassVar[str] = "data"

    objective: Annotated[str, OneOf(tuple(OBJECTIVES))] = "mlm"
    folds: Annotated[int, AtLeast(2)] = 10
    fold: Count = 0  # the MR fold whose training sentences join the text
    val_fraction: Fraction = 0.1  # as the classification task: MR's validation sentences
    max_len: Annotated[int, AtLeast(3)] = 64  # ids per sentence, [CLS] and [SEP] included
    vocab_size: Annotated[int, AtLeast(16)] = 8000  # the WordPiece vocabulary, at most
    mask_prob: Fraction = 0.15  # mlm: the share of pieces chosen

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fold >= self.folds:
            raise ConfigError(f"{self.key('fold')} must lie in [0, {self.folds}), got {self.fold}")


@register_task
class TextPretrainingTask(Task):
    name = "text_pretraining"
    DataConfig = TextPretrainingData
    roles = tuple(OBJECTIVES.values())
    verbs = frozenset()
    metric = "loss"
    derived_model_keys = {
        "vocab_size": "the WordPiece vocabulary learnt from the text (data.vocab_size)",
        "max_len": "data.max_len",
        "block_size": "data.max_len",
    }
    unit = "tok"

    def setup(self) -> None:
        d = self.data
        mr = fold_split(load_mr(), d.folds, d.fold, d.val_fraction)["train"]
        text = {
            "train": [en for _, en in load_multi30k("train")] + [s for s, _ in mr],
            "val": [en for _, en in load_multi30k("val")],
        }
        if not hasattr(self, "tokenizer"):  # a loaded run keeps its own
            self.tokenizer = WordPieceTokenizer.train(text["train"], d.vocab_size)
        self.sentences = {
            split: [self.tokenizer.encode(s, d.max_len) for s in rows]
            for split, rows in text.items()
        }
        train = self.sentences["train"]
        self.batches = TrainBatches(len(train), list(map(len, train)))

    def model_overrides(self) -> dict:
        n = self.data.max_len
        return {"vocab_size": self.tokenizer.vocab_size, "max_len": n, "block_size": n}

    def use_model(self, model: nn.Module) -> None:
        role = OBJECTIVES[self.data.objective]
        if getattr(model, "role", None) is not role:
            raise ConfigError(
                f"data.objective {self.data.objective} trains a model of role {role.__name__}, "
                f"not {type(model).__name__} (mlm: model.name=bert; clm: model.name=gpt)"
            )
        if self.data.objective == "mlm" and getattr(model, "mlm", None) is None:
            raise ConfigError("data.objective mlm needs the model's MLM head (model.mlm_head)")

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.batches.per_epoch(batch_size)

    # ----- batches: (inputs, attention mask, targets), targets IGNORE where not scored

    def _batch(self, seqs: list[list[int]], generator: torch.Generator) -> tuple[Tensor, ...]:
        ids, mask = pad_ids(seqs, self.tokenizer.pad_id)
        if self.data.objective == "clm":
            targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE)
            return ids[:, :-1], mask[:, :-1], targets
        return self.corrupt(ids, mask, generator)

    def corrupt(self, ids: Tensor, mask: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        """MLM's choice and corruption: (inputs, mask, targets at the chosen pieces)."""
        tok = self.tokenizer
        words = (mask == 1) & (ids != tok.cls_id) & (ids != tok.sep_id)
        score = torch.rand(ids.shape, generator=generator).masked_fill(~words, 2.0)
        n_words = words.sum(1, keepdim=True)
        k = (n_words * self.data.mask_prob).round().clamp(min=1).minimum(n_words)
        rank = score.argsort(1).argsort(1)  # each piece's place in its row's random order
        chosen = words & (rank < k)
        action = torch.rand(ids.shape, generator=generator)
        random_ids = torch.randint(len(tok.SPECIALS) + 1, tok.vocab_size, ids.shape,
                                   generator=generator)  # fmt: skip
        inputs = ids.masked_fill(chosen & (action < 0.8), tok.mask_id)
        inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
        return inputs, mask, ids.masked_fill(~chosen, IGNORE)

    def train_batch(self, step: int, batch_size: int, seed: int) -> tuple[Tensor, ...]:
        rows = self.batches.indices(step, batch_size, seed)
        generator = torch.Generator().manual_seed(stream_seed(seed, step, stream=1))
        return self._batch([self.sentences["train"][i] for i in rows], generator)

    def batch_size_of(self, batch: tuple[Tensor, ...]) -> int:
        return int(batch[1].sum())  # the pieces read

    def _nll(self, model: nn.Module, batch: tuple[Tensor, ...]) -> tuple[Tensor, int]:
        """Summed negative log-likelihood of the scored targets, and their number."""
        inputs, mask, targets = batch
        scored = targets != IGNORE
        if self.data.objective == "clm":
            logits = model(inputs)[scored]
        else:  # the MLM head only where a piece is scored
            logits = model.mlm_logits(model(inputs, mask)[scored][None])[0]
        return F.cross_entropy(logits.float(), targets[scored], reduction="sum"), int(scored.sum())

    def loss(self, model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
        total, n = self._nll(model, batch)
        return total / max(n, 1)

    def splits(self) -> tuple[str, ...]:
        return ("val",)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        seqs = self.sentences[split]
        generator = torch.Generator().manual_seed(VAL_MASK_SEED)
        total, count = 0.0, 0
        for i in range(0, len(seqs), batch_size):
            nll, n = self._nll(model, self._batch(seqs[i : i + batch_size], generator))
            total, count = total + nll.item(), count + n
        return {"loss": total / count}

    @torch.no_grad()
    def final_metrics(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        metrics = self.evaluate(model, split, batch_size)
        nll, n = self.word_nll(model, self.sentences[split], batch_size)
        key = "perplexity" if self.data.objective == "clm" else "pseudo_perplexity"
        return {**metrics, key: math.exp(nll / n), "pieces": n}

    def word_nll(self, model: nn.Module, seqs: list[list[int]], batch_size: int) -> tuple:
        """Summed -log p of every sentence's pieces but [CLS] and [SEP], and their number:
        left to right (clm), or each piece masked on its own (mlm, pseudo-likelihood)."""
        total, count = 0.0, 0
        if self.data.objective == "clm":
            for i in range(0, len(seqs), batch_size):
                inputs, mask, targets = self._batch(seqs[i : i + batch_size], torch.Generator())
                targets = targets.masked_fill(targets == self.tokenizer.sep_id, IGNORE)
                nll, n = self._nll(model, (inputs, mask, targets))
                total, count = total + nll.item(), count + n
            return total, count
        rows = [(s, t) for s, seq in enumerate(seqs) for t in range(1, len(seq) - 1)]
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            ids, mask = pad_ids([seqs[s] for s, _ in chunk], self.tokenizer.pad_id)
            at = torch.tensor([t for _, t in chunk])
            here = torch.zeros_like(ids, dtype=torch.bool)
            here[torch.arange(len(chunk)), at] = True
            inputs = ids.masked_fill(here, self.tokenizer.mask_id)
            nll, n = self._nll(model, (inputs, mask, ids.masked_fill(~here, IGNORE)))
            total, count = total + nll.item(), count + n
        return total, count

    def save_artifacts(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / TOKENIZER_FILE)

    def load_artifacts(self, run_dir: Path) -> None:
        self.tokenizer = WordPieceTokenizer.load(run_dir / TOKENIZER_FILE)
