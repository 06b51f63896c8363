"""Character-level language modelling (nanoGPT's shakespeare_char task).

Loss: mean next-character cross-entropy, -1/T sum_t log p(x_{t+1} | x_{<=t}), in
nats.  Training batches are random windows of ``block_size + 1`` characters from
the training text; evaluation covers the whole split in consecutive windows, so the
validation loss is a fixed number rather than a sample.

The model is a language model (``gpt``) or a causal sequence model reading token ids
(``seq_lstm``, ``seq_gru``, ``tcn``, ``seq_transformer``: ``--set model.name=...``,
its ``in_dim`` the embedding size), which sees the same windows, each from a fresh
state; it generates through its ``step`` (:func:`archlab.nn.sequence.generate_stream`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Config, Fraction, OneOf, Size
from archlab.data.batching import stream_seed
from archlab.data.text import load_shakespeare
from archlab.data.tokenizers import Vocab
from archlab.errors import ArchlabError, ConfigError
from archlab.models import roles
from archlab.nn import sequence
from archlab.tasks import Task, register_task, unwrap

CORPORA = {"shakespeare": load_shakespeare}


@dataclass
class CharLMData(Config):
    section: ClassVar[str] = "data"

    dataset: Annotated[str, OneOf(CORPORA)] = "shakespeare"
    block_size: Size = 64  # characters of context per training window
    val_fraction: Fraction = 0.1  # the last 10 % of the text, as nanoGPT splits it


@register_task
class CharLMTask(Task):
    name = "char_lm"
    roles = (roles.LanguageModel, roles.SequenceModel)
    verbs = frozenset({"generate"})
    DataConfig = CharLMData
    metric = "loss"
    # a language model takes the first two, a sequence model the first and the last
    derived_model_keys = {
        "vocab_size": "the characters of the training text",
        "block_size": "data.block_size",
        "out_dim": "the characters of the training text",
    }
    unit = "tok"

    def setup(self) -> None:
        text = CORPORA[self.data.dataset]()
        self.tokenizer = Vocab.of_chars(text)
        ids = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        n_train = int(len(ids) * (1 - self.data.val_fraction))
        self.ids = {"train": ids[:n_train], "val": ids[n_train:]}

    def model_overrides(self) -> dict:
        n = self.tokenizer.vocab_size
        return {"vocab_size": n, "block_size": self.data.block_size, "out_dim": n}

    def use_model(self, model: nn.Module) -> None:
        max_len = getattr(getattr(model, "config", None), "max_len", None)
        if max_len is not None and max_len < self.data.block_size:
            raise ConfigError(
                f"model.max_len ({max_len}) is shorter than data.block_size "
                f"({self.data.block_size})"
            )

    def train_batch(self, step: int, batch_size: int, seed: int) -> tuple[Tensor, Tensor]:
        data, T = self.ids["train"], self.data.block_size
        g = torch.Generator().manual_seed(stream_seed(seed, step))
        starts = torch.randint(len(data) - T - 1, (batch_size,), generator=g)
        windows = data[starts[:, None] + torch.arange(T + 1)]
        return windows[:, :-1], windows[:, 1:]

    def batch_size_of(self, batch: tuple[Tensor, Tensor]) -> int:
        return batch[0].numel()

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        data, T = self.ids[split], self.data.block_size
        n = (len(data) - 1) // T
        x = data[: n * T].view(n, T)
        y = data[1 : n * T + 1].view(n, T)
        total = 0.0
        for i in range(0, n, batch_size):
            logits = model(x[i : i + batch_size])
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(),
                y[i : i + batch_size].reshape(-1),
                reduction="sum",
            ).item()
        return {"loss": total / (n * T)}

    def save_artifacts(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")

    def load_artifacts(self, run_dir: Path) -> None:
        self.tokenizer = Vocab.load(run_dir / "tokenizer.json")

    def generate(
        self,
        model: nn.Module,
        prompt: str,
        max_new_tokens: int = 500,
        temperature: float = 0.8,
        top_k: int | None = 200,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> str:
        """The prompt and its continuation, as one string."""
        return "".join(
            self.generate_stream(model, prompt, max_new_tokens, temperature, top_k, top_p, seed)
        )

    def generate_stream(
        self,
        model: nn.Module,
        prompt: str,
        max_new_tokens: int = 500,
        temperature: float = 0.8,
        top_k: int | None = 200,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> Iterator[str]:
        """:meth:`generate`'s text in pieces as the tokens are sampled: the prompt first.

        The prompt and the sampling settings are checked at the call, before any piece.
        """
        ids = self.encode_prompt(prompt)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        stream = (
            model.generate_stream
            if unwrap(model).role is roles.LanguageModel
            else functools.partial(sequence.generate_stream, model)
        )
        tokens = stream(
            torch.tensor([ids]),
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
        )
        return decode_stream(self.tokenizer, ids, (int(t[0, 0]) for t in tokens))

    def encode_prompt(self, prompt: str) -> list[int]:
        """The prompt's token ids; an empty prompt is refused."""
        if not prompt:
            raise ArchlabError("the prompt is empty; give at least one character")
        return self.tokenizer.encode(prompt)

    def text_decoder(self, prompt: list[int]) -> IncrementalDecoder:
        """A decoder of the text that follows ``prompt``, one new token at a time."""
        return IncrementalDecoder(self.tokenizer, prompt)


class IncrementalDecoder:
    """The text of a growing sequence of tokens, given piece by piece.

    Each new token decodes only the tokens since the last piece given out, plus the
    ones before them as context (as Hugging Face's text-generation-inference does), and
    a piece is held back while it ends in an incomplete character (U+FFFD) -- needed
    for byte-level subword vocabularies, a no-op for characters.
    """

    def __init__(self, tokenizer, prompt: list[int]) -> None:
        self.tokenizer = tokenizer
        self.ids = list(prompt)
        self.prefix, self.read = 0, len(self.ids)

    def prompt_text(self) -> str:
        return self.tokenizer.decode(self.ids[: self.read])

    def push(self, token: int) -> str:
        """The text that ``token`` completes (may be empty while a character is unfinished)."""
        self.ids.append(token)
        before = self.tokenizer.decode(self.ids[self.prefix : self.read])
        text = self.tokenizer.decode(self.ids[self.prefix :])
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return text[len(before) :]
        return ""


def decode_stream(tokenizer, prompt: list[int], new: Iterator[int]) -> Iterator[str]:
    """The text of ``prompt`` then of each new token, decoded incrementally
    (:class:`IncrementalDecoder`); tokens that complete no character give no piece."""
    decoder = IncrementalDecoder(tokenizer, prompt)
    yield decoder.prompt_text()
    for token in new:
        piece = decoder.push(token)
        if piece:
            yield piece
