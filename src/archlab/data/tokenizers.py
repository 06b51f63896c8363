"""Subword tokenizers, trained with Hugging Face ``tokenizers`` on the training split only.

BPE (Sennrich et al. 2016) with SentencePiece-style word boundaries ("▁" marks a
preceding space), so that decoding gives back the original text and BLEU can be
computed on detokenized output against raw references.  Ids 0-3 are reserved for
<pad>, <s> (BOS), </s> (EOS) and <unk>, matching the Transformer's defaults.  The
tokenizer is saved as ``tokenizer.json`` in the run directory (plain JSON).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from archlab.errors import CheckpointError

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)


class SubwordTokenizer:
    kind = "bpe"

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> SubwordTokenizer:
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False
        )
        tok.train_from_iterator(texts, trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def save(self, path: str | os.PathLike) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> SubwordTokenizer:
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises its own exception types
            raise CheckpointError(f"cannot read the tokenizer {Path(path)}: {exc}") from None
        if [tok.id_to_token(i) for i in range(len(SPECIALS))] != list(SPECIALS):
            raise CheckpointError(f"{path} does not reserve ids 0-3 for {', '.join(SPECIALS)}")
        return cls(tok)
