"""sentence-transformers checkpoints: a Hugging Face BERT directory plus how it pools.

Such a directory (e.g. ``all-MiniLM-L6-v2``) holds, beside ``config.json``,
``model.safetensors`` and the WordPiece ``vocab.txt``:

- ``modules.json``: the pipeline, a list of modules by type; ``...models.Pooling``
  at ``path`` (usually ``1_Pooling``), and ``...models.Normalize`` when the
  embeddings are L2-normalised;
- ``1_Pooling/config.json``: which ``pooling_mode_*_tokens`` is on (one of mean,
  cls, max, mean_sqrt_len; archlab refuses combinations and the others);
- ``sentence_bert_config.json``: ``max_seq_length``, where texts are cut.

:class:`SentenceEncoder` reads one into archlab's :class:`~archlab.models.bert.BERT`,
its WordPiece tokenizer and its :class:`~archlab.nn.pooling.SentencePooling`; a
plain Hugging Face BERT directory, without these files, pools by the masked mean
and normalises (:data:`DEFAULT_POOLING`), and cuts texts at its ``max_len``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from archlab.errors import CheckpointError
from archlab.nn.pooling import SentencePooling, embed_texts

MODULES_FILE, ST_CONFIG_FILE = "modules.json", "sentence_bert_config.json"
POOLING_TYPE, NORMALIZE_TYPE = "sentence_transformers.models.Pooling", "Normalize"
# 1_Pooling/config.json's flags -> archlab's pooling modes
POOLING_FLAGS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
# flags of newer sentence-transformers that archlab does not model
UNSUPPORTED_FLAGS = ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")
DEFAULT_POOLING = SentencePooling("mean", normalize=True)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {path} as JSON: {exc}") from None


def read_pooling(path: str | os.PathLike) -> SentencePooling | None:
    """The pooling a sentence-transformers directory states; None without ``modules.json``."""
    root = Path(path)
    if not (root / MODULES_FILE).is_file():
        return None
    modules = _read_json(root / MODULES_FILE)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise CheckpointError(f"{root / MODULES_FILE} is not a list of modules")
    types = [str(m.get("type", "")) for m in modules]
    pooling = [m for m in modules if str(m.get("type", "")) == POOLING_TYPE]
    if len(pooling) != 1:
        raise CheckpointError(
            f"{root / MODULES_FILE} names {len(pooling)} pooling modules; archlab reads one"
        )
    config_path = root / str(pooling[0].get("path", "")) / "config.json"
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path} is not a JSON object")
    unsupported = [flag for flag in UNSUPPORTED_FLAGS if config.get(flag)]
    modes = [mode for flag, mode in POOLING_FLAGS.items() if config.get(flag)]
    if unsupported or len(modes) != 1:
        on = unsupported + [f for f in POOLING_FLAGS if config.get(f)]
        raise CheckpointError(
            f"{config_path} turns on {', '.join(on) or 'no pooling mode'}; archlab pools by "
            f"exactly one of {', '.join(POOLING_FLAGS)}"
        )
    normalize = any(t.rsplit(".", 1)[-1] == NORMALIZE_TYPE for t in types)
    return SentencePooling(modes[0], normalize=normalize)


def read_max_seq_length(path: str | os.PathLike) -> int | None:
    """``max_seq_length`` of ``sentence_bert_config.json``, if the directory has one."""
    file = Path(path) / ST_CONFIG_FILE
    if not file.is_file():
        return None
    value = _read_json(file)
    length = value.get("max_seq_length") if isinstance(value, dict) else None
    if length is not None and (not isinstance(length, int) or length < 2):
        raise CheckpointError(f"{file}: max_seq_length must be an integer of at least 2")
    return length


class SentenceEncoder:
    """A BERT, its WordPiece tokenizer and its pooling: texts -> sentence embeddings.

    >>> encoder = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")   # or a directory
    >>> e = encoder.embed(["A man is eating food.", "A man eats."])     # (2, 384)
    """

    verbs = frozenset({"embed"})

    def __init__(self, model, tokenizer, pooling: SentencePooling, max_len: int) -> None:
        self.model, self.tokenizer, self.pooling = model.eval(), tokenizer, pooling
        self.max_len = min(max_len, model.config.max_len)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike) -> SentenceEncoder:
        """A registered checkpoint (files verified) or a Hugging Face BERT directory."""
        from archlab.data.pretrained import checkpoint_dir, is_checkpoint
        from archlab.data.tokenizers import WordPieceTokenizer
        from archlab.models.bert import BERT

        path = checkpoint_dir(str(name_or_dir)) if is_checkpoint(str(name_or_dir)) else name_or_dir
        model = BERT.from_hf(path)
        tokenizer = WordPieceTokenizer.from_checkpoint(path)
        pooling = read_pooling(path) or DEFAULT_POOLING
        return cls(model, tokenizer, pooling, read_max_seq_length(path) or model.config.max_len)

    def embed(self, texts: list[str], batch_size: int = 64) -> Tensor:
        """Sentence embeddings (len(texts), hidden_size), float32."""
        with torch.inference_mode():
            return embed_texts(
                self.model.hidden_states,
                lambda text: self.tokenizer.encode(text, self.max_len),
                texts,
                self.pooling,
                pad_id=self.tokenizer.pad_id,
                batch_size=batch_size,
            )
