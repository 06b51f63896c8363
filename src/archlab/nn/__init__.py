"""Building blocks shared by archlab's models."""

from archlab.nn.attention import (
    KVCache,
    MultiHeadAttention,
    RaggedKVCache,
    build_attention_mask,
)
from archlab.nn.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)
from archlab.nn.transformer import DecoderBlock, EncoderBlock, FeedForward, Residual

__all__ = [
    "DecoderBlock",
    "EncoderBlock",
    "FeedForward",
    "KVCache",
    "RaggedKVCache",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "Residual",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "build_attention_mask",
]
