"""archlab's models: one file per family, each a Config dataclass and the module."""

from archlab.models.bert import BERT, BERTConfig
from archlab.models.gpt import GPT, GPTConfig
from archlab.models.transformer import Transformer, TransformerConfig

__all__ = ["BERT", "BERTConfig", "GPT", "GPTConfig", "Transformer", "TransformerConfig"]
