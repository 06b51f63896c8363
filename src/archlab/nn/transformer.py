"""The Transformer's layers, shared by the encoder-decoder Transformer, GPT and BERT.

Position-wise feed-forward network (Vaswani et al. 2017, eq. 2):
    FFN(x) = act(x W_1 + b_1) W_2 + b_2

Each sub-layer F (attention or FFN) is wrapped in a residual connection and a
LayerNorm, in one of two arrangements:
    post-norm (the original Transformer, BERT):  x <- LayerNorm(x + Dropout(F(x)))
    pre-norm  (GPT-2, most large models):        x <- x + Dropout(F(LayerNorm(x)))

An encoder block is self-attention then FFN; GPT's block is the same block with a
causal mask.  A decoder block adds cross-attention over the encoder's output
between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from archlab.errors import ConfigError
from archlab.nn.attention import KVCache, MultiHeadAttention
from archlab.nn.positional import RotaryEmbedding

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact, erf-based (BERT)
    "gelu_tanh": partial(F.gelu, approximate="tanh"),  # GPT-2's "gelu_new"
}


def activation_fn(name: str) -> Callable[[Tensor], Tensor]:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class FeedForward(nn.Module):
    """FFN(x) = act(x W_1 + b_1) W_2 + b_2, with optional dropout after the activation."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: str = "relu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.W_1 = nn.Linear(d_model, d_ff, bias=bias)
        self.W_2 = nn.Linear(d_ff, d_model, bias=bias)
        self.act = activation_fn(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.W_2(self.dropout(self.act(self.W_1(x))))


class Residual(nn.Module):
    """Residual connection plus LayerNorm around a sub-layer, post-norm or pre-norm."""

    def __init__(
        self, d_model: int, dropout: float, norm_first: bool, eps: float, bias: bool = True
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=eps, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        if self.norm_first:
            return x + self.dropout(sublayer(self.norm(x)))
        return self.norm(x + self.dropout(sublayer(x)))


class EncoderBlock(nn.Module):
    """Self-attention and FFN, each in a :class:`Residual` (an encoder layer; GPT's block).

    Args:
        dropout: on each sub-layer's output, before the residual sum.
        attn_dropout: on the attention probabilities.
        ff_dropout: inside the FFN, after the activation (``torch.nn.Transformer`` uses
            ``dropout`` here; GPT-2 and BERT use none).
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        d_ff: int,
        *,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        eps: float = 1e-5,
        bias: bool = True,
        rotary: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_head, attn_dropout, bias, rotary)
        self.attn_res = Residual(d_model, dropout, norm_first, eps, bias)
        self.ff = FeedForward(d_model, d_ff, activation, ff_dropout, bias)
        self.ff_res = Residual(d_model, dropout, norm_first, eps, bias)

    def forward(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
    ) -> Tensor:
        x = self.attn_res(
            x,
            lambda h: self.self_attn(
                h,
                key_padding_mask=key_padding_mask,
                attn_mask=attn_mask,
                is_causal=is_causal,
                cache=cache,
            ),
        )
        return self.ff_res(x, self.ff)


class DecoderBlock(nn.Module):
    """Masked self-attention, cross-attention over the encoder output, then FFN."""

    def __init__(
        self,
        d_model: int,
        n_head: int,
        d_ff: int,
        *,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        eps: float = 1e-5,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_head, attn_dropout, bias)
        self.self_attn_res = Residual(d_model, dropout, norm_first, eps, bias)
        self.cross_attn = MultiHeadAttention(d_model, n_head, attn_dropout, bias)
        self.cross_attn_res = Residual(d_model, dropout, norm_first, eps, bias)
        self.ff = FeedForward(d_model, d_ff, activation, ff_dropout, bias)
        self.ff_res = Residual(d_model, dropout, norm_first, eps, bias)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        is_causal: bool = True,
        self_cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
    ) -> Tensor:
        x = self.self_attn_res(
            x,
            lambda h: self.self_attn(
                h,
                key_padding_mask=key_padding_mask,
                attn_mask=attn_mask,
                is_causal=is_causal,
                cache=self_cache,
            ),
        )
        x = self.cross_attn_res(
            x,
            lambda h: self.cross_attn(
                h, memory, key_padding_mask=memory_key_padding_mask, cache=cross_cache
            ),
        )
        return self.ff_res(x, self.ff)
