"""Text corpora and the character-level tokenizer.

Tiny Shakespeare (Karpathy's char-rnn corpus): one 1.1 MB text, split as nanoGPT
does: the first 90 % of characters for training, the last 10 % for validation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from archlab.data.files import DataFile, Dataset, fetch, register_dataset
from archlab.errors import ArchlabError, CheckpointError

SHAKESPEARE = register_dataset(
    Dataset(
        name="shakespeare",
        description="Tiny Shakespeare, 1.1M characters (char-rnn)",
        files=(
            DataFile(
                "shakespeare/input.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            ),
        ),
        licence="public domain text (repository: MIT)",
    )
)


def load_shakespeare() -> str:
    return fetch("shakespeare")["shakespeare/input.txt"].read_text(encoding="utf-8")


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters seen."""

    kind = "char"

    def __init__(self, chars: list[str]) -> None:
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise ArchlabError(f"the text holds characters outside the model's vocabulary: {shown}")
        return [self.index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps({"kind": self.kind, "chars": self.chars}), "utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharTokenizer:
        try:
            data = json.loads(Path(path).read_text("utf-8"))
            chars = data["chars"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"cannot read the tokenizer {path}: {exc}") from None
        if data.get("kind") != cls.kind or not all(isinstance(c, str) for c in chars):
            raise CheckpointError(f"{path} is not a character tokenizer")
        return cls(chars)
