"""archlab's models: one file per family, each a Config dataclass and the module."""

from archlab.models.bert import BERT, BERTConfig
from archlab.models.cnn import TextCNN, TextCNNConfig
from archlab.models.gpt import GPT, GPTConfig
from archlab.models.rnn import RNNClassifier, RNNConfig
from archlab.models.transformer import (
    Transformer,
    TransformerClassifier,
    TransformerClassifierConfig,
    TransformerConfig,
)

__all__ = [
    "BERT",
    "BERTConfig",
    "GPT",
    "GPTConfig",
    "RNNClassifier",
    "RNNConfig",
    "TextCNN",
    "TextCNNConfig",
    "Transformer",
    "TransformerClassifier",
    "TransformerClassifierConfig",
    "TransformerConfig",
]
