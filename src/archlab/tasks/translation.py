"""Sequence-to-sequence translation (Multi30k German -> English by default).

Training loss: label-smoothed cross-entropy over target tokens (Szegedy et al.
2016; the Transformer paper uses eps = 0.1), padding ignored:
    L = -(1 - eps) log p(y_t) - eps / V sum_v log p(v)
Evaluation: teacher-forced cross-entropy (no smoothing) on the split, and, in the
final evaluation, corpus BLEU (sacrebleu, its default 13a tokenisation) of
beam-search translations, detokenized, against the raw references.

Batches come from :class:`archlab.data.batching.TrainBatches`, sorted by source
length within chunks (less padding); the same (seed, step) gives the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Config, NonNegativeFloat, OneOf, Probability, Size
from archlab.data.batching import TrainBatches, pad
from archlab.data.text import load_multi30k
from archlab.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, SubwordTokenizer
from archlab.errors import ArchlabError, ConfigError
from archlab.models import roles
from archlab.tasks import Task, register_task

LANGUAGES = ("de", "en")


@dataclass
class TranslationData(Config):
    section: ClassVar[str] = "data"

    dataset: Annotated[str, OneOf(("multi30k",))] = "multi30k"
    source: str = "de"
    target: str = "en"
    vocab_size: Size = 8000  # joint source + target BPE vocabulary
    max_len: Size = 100  # training pairs longer than this (in tokens) are left out
    label_smoothing: Probability = 0.1
    beam: Size = 5
    length_penalty: NonNegativeFloat = 0.6
    max_sentences: Size | None = None  # use only the first N training pairs (quick runs)
    max_eval_sentences: Size | None = None  # and the first N validation / test pairs

    def __post_init__(self) -> None:
        super().__post_init__()
        if {self.source, self.target} != set(LANGUAGES):
            raise ConfigError(
                f"{self.key('source')} and {self.key('target')} must be 'de' and 'en' in either "
                f"order, got {self.source!r} -> {self.target!r}"
            )


@register_task
class TranslationTask(Task):
    name = "translation"
    roles = (roles.Seq2Seq,)
    verbs = frozenset({"translate"})
    DataConfig = TranslationData
    metric = "loss"
    derived_model_keys = {
        "src_vocab_size": "data.vocab_size (the BPE vocabulary learnt from the training pairs)",
        "tgt_vocab_size": "data.vocab_size (the BPE vocabulary learnt from the training pairs)",
        "pad_id": "the tokenizer's special tokens",
        "bos_id": "the tokenizer's special tokens",
        "eos_id": "the tokenizer's special tokens",
        "max_len": "data.max_len (plus BOS and EOS)",
    }
    unit = "tok"

    def setup(self) -> None:
        d = self.data
        limits = {
            "train": d.max_sentences,
            "val": d.max_eval_sentences,
            "test": d.max_eval_sentences,
        }
        self.pairs = {
            split: load_multi30k(split, d.source, d.target)[:limit]
            for split, limit in limits.items()
        }
        if not hasattr(self, "tokenizer"):  # a loaded run keeps its own tokenizer
            texts = [s for pair in self.pairs["train"] for s in pair]
            self.tokenizer = SubwordTokenizer.train(texts, d.vocab_size)
        self.ids = {split: self._encode(pairs) for split, pairs in self.pairs.items()}
        train = self.ids["train"]
        keep = [i for i, (s, t) in enumerate(train) if len(s) <= d.max_len and len(t) < d.max_len]
        self.ids["train"] = [train[i] for i in keep]
        self.batches = TrainBatches(len(self.ids["train"]), [len(s) for s, _ in self.ids["train"]])

    def _encode(self, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        src = self.tokenizer.encode_batch([s for s, _ in pairs])
        tgt = self.tokenizer.encode_batch([t for _, t in pairs])
        return [(s + [EOS_ID], [BOS_ID, *t, EOS_ID]) for s, t in zip(src, tgt, strict=True)]

    def model_overrides(self) -> dict:
        v = self.tokenizer.vocab_size
        return {
            "src_vocab_size": v,
            "tgt_vocab_size": v,
            "pad_id": PAD_ID,
            "bos_id": BOS_ID,
            "eos_id": EOS_ID,
            "max_len": self.data.max_len + 2,
        }

    # ----- training -----

    def train_batch(self, step: int, batch_size: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
        rows = [self.ids["train"][i] for i in self.batches.indices(step, batch_size, seed)]
        tgt = pad([t for _, t in rows])
        return pad([s for s, _ in rows]), tgt[:, :-1], tgt[:, 1:]

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.batches.per_epoch(batch_size)

    def batch_size_of(self, batch: tuple[Tensor, Tensor, Tensor]) -> int:
        return int((batch[2] != PAD_ID).sum())

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        src, tgt_in, tgt_out = batch
        logits = model(src, tgt_in)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            tgt_out.reshape(-1),
            ignore_index=PAD_ID,
            label_smoothing=self.data.label_smoothing,
        )

    # ----- evaluation and use -----

    def splits(self) -> tuple[str, ...]:
        return ("val", "test")

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        data = self.ids[split]
        total, count = 0.0, 0
        for i in range(0, len(data), batch_size):
            rows = data[i : i + batch_size]
            tgt = pad([t for _, t in rows])
            logits = model(pad([s for s, _ in rows]), tgt[:, :-1])
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(),
                tgt[:, 1:].reshape(-1),
                ignore_index=PAD_ID,
                reduction="sum",
            ).item()
            count += int((tgt[:, 1:] != PAD_ID).sum())
        return {"loss": total / count}

    @torch.no_grad()
    def final_metrics(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        import sacrebleu

        metrics = self.evaluate(model, split, batch_size)
        sources = [s for s, _ in self.ids[split]]
        hypotheses = self.translate_ids(model, sources, batch_size)
        references = [t for _, t in self.pairs[split]]
        metrics["bleu"] = sacrebleu.corpus_bleu(hypotheses, [references]).score
        return metrics

    def translate_ids(
        self, model: nn.Module, sources: list[list[int]], batch_size: int, beam: int | None = None
    ) -> list[str]:
        """Beam-search translations of encoded sentences, in order, detokenized."""
        d = self.data
        beam = beam or d.beam
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        out: list[str] = [""] * len(sources)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            src = pad([sources[i] for i in idx])
            max_len = min(src.shape[1] + 50, model.config.max_len)
            tokens = model.beam_search(
                src, beam=beam, length_penalty=d.length_penalty, max_len=max_len
            )
            for i, t in zip(idx, tokens, strict=True):
                out[i] = self.tokenizer.decode(t)
        return out

    def translate(self, model: nn.Module, text: str, beam: int | None = None) -> str:
        return self.translate_ids(model, [self._source_ids(model, text, beam)], 1, beam)[0]

    def _source_ids(self, model: nn.Module, text: str, beam: int | None) -> list[int]:
        if not text.strip():
            raise ArchlabError("the sentence to translate is empty")
        ids = self.tokenizer.encode(text) + [EOS_ID]
        limit = model.config.max_len
        if len(ids) > limit:
            raise ArchlabError(f"the sentence is {len(ids)} tokens long; this model takes {limit}")
        if beam is not None and beam < 1:
            raise ArchlabError(f"--beam must be at least 1, got {beam}")
        return ids

    @torch.no_grad()
    def translate_with_attention(
        self, model: nn.Module, text: str, beam: int | None = None
    ) -> dict[str, Any]:
        """:meth:`translate`, with where each output token looked in the source.

        Returns the ``translation``, the ``source`` and ``target`` subword tokens (the
        source's EOS last, the target's EOS last when the search ended with it) and
        ``attention``: per target token, the last decoder layer's cross-attention over
        the source tokens, averaged over heads (rows sum to 1).
        """
        d = self.data
        src_ids = self._source_ids(model, text, beam)
        src = torch.tensor([src_ids])
        max_len = min(src.shape[1] + 50, model.config.max_len)
        out = model.beam_search(
            src, beam=beam or d.beam, length_penalty=d.length_penalty, max_len=max_len
        )[0]
        target = out + [EOS_ID] if len(out) < max_len else out
        tgt = torch.tensor([[model.config.bos_id, *target[:-1]]])
        weights = model.cross_attention(src, tgt)[-1, 0].mean(0)  # (T, S)
        return {
            "translation": self.tokenizer.decode(out),
            "source": [self.tokenizer.token(i) for i in src_ids],
            "target": [self.tokenizer.token(i) for i in target],
            "attention": weights.tolist(),
        }

    def save_artifacts(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")

    def load_artifacts(self, run_dir: Path) -> None:
        self.tokenizer = SubwordTokenizer.load(run_dir / "tokenizer.json")
