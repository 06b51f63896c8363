"""Tokenizers: character and word vocabularies, subword (BPE) tokenizers, BERT's WordPiece.

Subword tokenizers are trained with Hugging Face ``tokenizers`` on the training split only.

BPE (Sennrich et al. 2016) with SentencePiece-style word boundaries ("▁" marks a
preceding space), so that decoding gives back the original text and BLEU can be
computed on detokenized output against raw references.  Ids 0-3 are reserved for
<pad>, <s> (BOS), </s> (EOS) and <unk>, matching the Transformer's defaults.  The
tokenizer is saved as ``tokenizer.json`` in the run directory (plain JSON).

WordPiece (Wu et al. 2016, as BERT uses it) is not trained here: it is read from a
pretrained BERT checkpoint directory's ``vocab.txt``, so that fine-tuning feeds the
model the token ids it was pre-trained on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from archlab.errors import ArchlabError, CheckpointError

WORDPIECE_VOCAB, WORDPIECE_CONFIG = "vocab.txt", "tokenizer_config.json"

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

    def token(self, id: int) -> str:
        """The subword of ``id`` as the vocabulary spells it (a word start marked ▁)."""
        return self.tokenizer.id_to_token(id)

    def save(self, path: str | os.PathLike) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> SubwordTokenizer:
        tok = _read_tokenizer(path)
        if [tok.id_to_token(i) for i in range(len(SPECIALS))] != list(SPECIALS):
            raise CheckpointError(f"{path} does not reserve ids 0-3 for {', '.join(SPECIALS)}")
        return cls(tok)


def _read_tokenizer(path: str | os.PathLike):
    """A Hugging Face ``tokenizers`` file (tokenizer.json), or a CheckpointError."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the library raises its own exception types
        raise CheckpointError(f"cannot read the tokenizer {Path(path)}: {exc}") from None


class WordPieceTokenizer:
    """BERT's WordPiece tokenizer: text -> [CLS] word pieces [SEP], as BERT was pre-trained.

    Read from a Hugging Face BERT checkpoint directory: ``vocab.txt`` (one token per
    line, id = line number) and, when present, ``tokenizer_config.json`` for
    ``do_lower_case``, ``strip_accents`` and ``tokenize_chinese_chars`` (absent: lower
    case, as Hugging Face's ``BertTokenizer`` defaults).  Saved into a run directory
    as ``tokenizer.json`` (plain JSON), so a trained run no longer needs the checkpoint.
    """

    SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.pad_id, _, self.cls_id, self.sep_id = (tokenizer.token_to_id(t) for t in self.SPECIALS)
        self.mask_id = tokenizer.token_to_id("[MASK]")  # None in a vocabulary without one

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> WordPieceTokenizer:
        """A lower-case WordPiece vocabulary of at most ``vocab_size`` learnt from ``texts``
        (pieces seen at least twice), with BERT's special tokens and [MASK].

        The ids are the special tokens, then the pieces in sorted order.  The library's
        trainer numbers its alphabet in hash-map order, which changes from process to
        process, and a model's initial embedding of a piece depends on its id: sorted,
        the same texts give the same ids in every process.  (Pieces tied in count at
        the vocabulary limit can still be chosen differently by the trainer; WordPiece
        encodes by longest match, so the order of the ids does not change the pieces.)
        """
        from tokenizers import processors
        from tokenizers.implementations import BertWordPieceTokenizer

        trained = BertWordPieceTokenizer(lowercase=True)
        specials = [*cls.SPECIALS, "[MASK]"]
        trained.train_from_iterator(
            texts, vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
            show_progress=False,
        )  # fmt: skip
        pieces = sorted(set(trained.get_vocab()) - set(specials))
        tokenizer = BertWordPieceTokenizer(
            {token: i for i, token in enumerate([*specials, *pieces])}, lowercase=True
        )
        cls_, sep = (tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]"))
        tokenizer.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls_))
        return cls(tokenizer)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> WordPieceTokenizer:
        from tokenizers.implementations import BertWordPieceTokenizer

        root = Path(path)
        vocab = root / WORDPIECE_VOCAB
        if not vocab.is_file():
            raise CheckpointError(
                f"checkpoint directory {str(root)!r} has no {WORDPIECE_VOCAB} (the WordPiece "
                "vocabulary its text must be tokenized with)"
            )
        options = {}
        if (root / WORDPIECE_CONFIG).is_file():
            try:
                options = json.loads((root / WORDPIECE_CONFIG).read_text("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise CheckpointError(
                    f"{root / WORDPIECE_CONFIG} is not valid JSON: {exc}"
                ) from None
            if not isinstance(options, dict):
                raise CheckpointError(f"{root / WORDPIECE_CONFIG} is not a JSON object")
        try:
            tokenizer = BertWordPieceTokenizer.from_file(
                str(vocab),
                lowercase=bool(options.get("do_lower_case", True)),
                strip_accents=options.get("strip_accents"),
                handle_chinese_chars=bool(options.get("tokenize_chinese_chars", True)),
            )
        except Exception as exc:  # the library raises its own exception types
            raise CheckpointError(f"cannot read the WordPiece vocabulary {vocab}: {exc}") from None
        return cls._checked(tokenizer, vocab)

    @classmethod
    def _checked(cls, tokenizer, source: Path) -> WordPieceTokenizer:
        missing = [t for t in cls.SPECIALS if tokenizer.token_to_id(t) is None]
        if missing:
            raise CheckpointError(f"{source} lacks BERT's special token(s) {', '.join(missing)}")
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """[CLS] pieces [SEP]; past ``max_len`` ids the pieces are cut, the [SEP] kept."""
        ids = self.tokenizer.encode(text).ids
        if max_len is not None and len(ids) > max_len:
            ids = [*ids[: max_len - 1], self.sep_id]
        return ids

    def save(self, path: str | os.PathLike) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordPieceTokenizer:
        return cls._checked(_read_tokenizer(path), Path(path))


class Vocab:
    """A fixed list of symbols, characters or whole words, and their ids.

    Character level (``Vocab.of_chars``): every character seen, no unknown token, so
    a character outside the vocabulary is an error.  Word level (``Vocab.of_words``,
    for pre-tokenized text split on spaces): <pad> = 0, <unk> = 1, <cls> = 2 (a
    sentence-start token that BERT-style models pool), then the words by frequency.
    """

    WORD_SPECIALS = ("<pad>", "<unk>", "<cls>")

    def __init__(self, symbols: list[str], level: str) -> None:
        if level not in ("char", "word"):
            raise CheckpointError(f"a vocabulary's level is 'char' or 'word', not {level!r}")
        self.symbols, self.level = symbols, level
        self.index = {sym: i for i, sym in enumerate(symbols)}

    @classmethod
    def of_chars(cls, text: str) -> Vocab:
        return cls(sorted(set(text)), "char")

    @classmethod
    def of_words(cls, texts: Iterable[str], min_freq: int = 1) -> Vocab:
        from collections import Counter

        counts = Counter(w for text in texts for w in text.split())
        kept = sorted(
            (w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w)
        )
        return cls([*cls.WORD_SPECIALS, *kept], "word")

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        if self.level == "word":
            return [self.index.get(w, 1) for w in text.split()]
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise ArchlabError(f"the text holds characters outside the model's vocabulary: {shown}")
        return [self.index[c] for c in text]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        if self.level == "word":
            return " ".join(self.symbols[i] for i in ids if i >= len(self.WORD_SPECIALS))
        return "".join(self.symbols[i] for i in ids)

    def save(self, path: str | os.PathLike) -> None:
        data = {"level": self.level, "symbols": self.symbols}
        Path(path).write_text(json.dumps(data), "utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        try:
            data = json.loads(Path(path).read_text("utf-8"))
            symbols, level = data["symbols"], data["level"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"cannot read the vocabulary {path}: {exc}") from None
        if not isinstance(symbols, list) or not all(isinstance(x, str) for x in symbols):
            raise CheckpointError(f"{path} is not a vocabulary: 'symbols' must be strings")
        return cls(symbols, level)
