"""Position information for attention, which is otherwise order-blind.

Sinusoidal (Vaswani et al. 2017, section 3.5):
    PE(pos, 2i)   = sin(pos / 10000^(2i / d))
    PE(pos, 2i+1) = cos(pos / 10000^(2i / d))

Learned (GPT, BERT): one trained vector per absolute position.

Rotary, RoPE (Su et al. 2021): rotate each pair of query/key features by an angle
proportional to the position, so that q_m . k_n depends only on m - n:
    RoPE(x, m) = x * cos(m theta) + rotate_half(x) * sin(m theta),
    theta_i = base^(-2i / d_head)
(the half-split pairing used by GPT-NeoX and LLaMA in Hugging Face transformers).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from archlab.errors import expect


def _check_length(length: int, offset: int, max_len: int) -> None:
    expect(
        offset + length <= max_len,
        f"sequence needs positions up to {offset + length} but the model has a context of "
        f"{max_len} positions; shorten the input or raise the model's maximum length",
    )


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sin/cos position vectors, returned as a (length, d_model) tensor to add."""

    def __init__(self, d_model: int, max_len: int = 5000) -> None:
        super().__init__()
        self.max_len = max_len
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        inv_freq = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * inv_freq)
        pe[:, 1::2] = torch.cos(position * inv_freq[: d_model // 2])
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        _check_length(length, offset, self.max_len)
        return self.pe[offset : offset + length]


class LearnedPositionalEmbedding(nn.Module):
    """A trained vector per absolute position, returned as a (length, d_model) tensor."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(max_len, d_model))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        _check_length(length, offset, self.max_len)
        return self.weight[offset : offset + length]

    def at(self, positions: Tensor) -> Tensor:
        """The vectors of ``positions`` (any shape of ids), e.g. each row's own (batch, time)."""
        _check_length(1, int(positions.max()), self.max_len)
        return self.weight[positions]


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Applies RoPE to a (batch, heads, length, d_head) query or key tensor."""

    def __init__(self, d_head: int, max_len: int = 4096, base: float = 10000.0) -> None:
        super().__init__()
        expect(d_head % 2 == 0, f"rotary embeddings need an even head size, got {d_head}")
        self.max_len = max_len
        inv_freq = base ** (-torch.arange(0, d_head, 2, dtype=torch.float32) / d_head)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor, offset: int = 0, positions: Tensor | None = None) -> Tensor:
        """RoPE at positions ``offset ..``, or at ``positions`` (batch, length), per row."""
        length = x.shape[-2]
        if positions is not None:
            _check_length(1, int(positions.max()), self.max_len)
            cos = self.cos[positions][:, None].to(x.dtype)  # (batch, 1, length, d_head)
            sin = self.sin[positions][:, None].to(x.dtype)
            return x * cos + rotate_half(x) * sin
        _check_length(length, offset, self.max_len)
        cos = self.cos[offset : offset + length].to(x.dtype)
        sin = self.sin[offset : offset + length].to(x.dtype)
        return x * cos + rotate_half(x) * sin
