"""Scaled dot-product multi-head attention (Vaswani et al. 2017, section 3.2).

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V
    head_i = Attention(X_q W_q^i, X_kv W_k^i, X_kv W_v^i)
    MultiHead(X_q, X_kv) = Concat(head_1, ..., head_h) W_o

Self-attention uses X_kv = X_q; cross-attention (decoder over encoder) uses the
encoder output as X_kv.  M is 0 where a query may look and -inf where it may not:
padding keys, future positions (causal), or any mask the caller adds.

The projections W_q, W_k, W_v are stored stacked in one (3d, d) matrix ``W_qkv``,
in that order, exactly as ``torch.nn.MultiheadAttention.in_proj_weight`` is, so
self-attention needs one matmul and weights copy over one to one.  The kernel is
``torch.nn.functional.scaled_dot_product_attention``, which picks a fused (flash
or memory-efficient) implementation where it can.

Masks follow ``torch.nn.MultiheadAttention``: in ``key_padding_mask`` (batch,
keys) and in a boolean ``attn_mask`` (queries, keys) or (batch, queries, keys),
``True`` marks a position that may **not** be attended; a float ``attn_mask`` is
added to the scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.errors import expect
from archlab.nn.positional import RotaryEmbedding


class KVCache:
    """Keys and values of the positions seen so far, for one attention layer.

    Decoding one token at a time appends that token's key and value here instead of
    recomputing the whole prefix.  Storage grows by doubling, so appending is
    amortised O(1) copies.  For cross-attention the encoder's keys and values are
    stored once and reused at every step.
    """

    def __init__(self) -> None:
        self._k: Tensor | None = None
        self._v: Tensor | None = None
        self.length = 0
        self.cross = False  # set when it holds an encoder's keys/values

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add keys/values of shape (batch, heads, new, d_head); return all of them so far."""
        new = k.shape[2]
        end = self.length + new
        if self._k is None or end > self._k.shape[2]:
            capacity = max(end, 2 * (self._k.shape[2] if self._k is not None else 16))
            grown_k = k.new_empty(*k.shape[:2], capacity, k.shape[3])
            grown_v = v.new_empty(*v.shape[:2], capacity, v.shape[3])
            if self._k is not None:
                grown_k[:, :, : self.length] = self._k[:, :, : self.length]
                grown_v[:, :, : self.length] = self._v[:, :, : self.length]
            self._k, self._v = grown_k, grown_v
        self._k[:, :, self.length : end] = k
        self._v[:, :, self.length : end] = v
        self.length = end
        return self._k[:, :, :end], self._v[:, :, :end]

    def keys_values(self) -> tuple[Tensor, Tensor]:
        return self._k[:, :, : self.length], self._v[:, :, : self.length]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (in that order); beam search uses this after each step."""
        if self._k is not None:
            self._k = self._k.index_select(0, index)
            self._v = self._v.index_select(0, index)


def build_attention_mask(
    batch: int,
    q_len: int,
    k_len: int,
    *,
    key_padding_mask: Tensor | None = None,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    past: int = 0,
    device: torch.device | None = None,
) -> tuple[Tensor | None, bool]:
    """Combine padding, causal and explicit masks into one SDPA mask.

    Returns ``(mask, sdpa_is_causal)``: ``mask`` is ``None``, a boolean tensor that is
    ``True`` where attention is allowed, or a float tensor added to the scores; it
    broadcasts to (batch, heads, q_len, k_len).  A plain causal mask with no past is
    left to SDPA's own ``is_causal`` fast path.  ``past`` is the number of cached
    positions before the queries (query i sits at absolute position past + i).
    """
    causal_needed = is_causal and q_len > 1
    if key_padding_mask is None and attn_mask is None:
        if not causal_needed:
            return None, False
        if past == 0 and q_len == k_len:
            return None, True
    allowed: Tensor | None = None
    if causal_needed:
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(past)
    if key_padding_mask is not None:
        expect(
            key_padding_mask.shape == (batch, k_len),
            f"key_padding_mask must have shape (batch, keys) = ({batch}, {k_len}), "
            f"got {tuple(key_padding_mask.shape)}",
        )
        keep = ~key_padding_mask.to(torch.bool)[:, None, None, :]
        allowed = keep if allowed is None else allowed & keep
    if attn_mask is None:
        return allowed, False
    expect(
        attn_mask.shape[-2:] == (q_len, k_len) and attn_mask.dim() in (2, 3),
        f"attn_mask must have shape (queries, keys) = ({q_len}, {k_len}) or "
        f"(batch, {q_len}, {k_len}), got {tuple(attn_mask.shape)}",
    )
    if attn_mask.dim() == 3:
        attn_mask = attn_mask[:, None]
    if attn_mask.dtype == torch.bool:
        keep = ~attn_mask
        return (keep if allowed is None else allowed & keep), False
    if allowed is None:
        return attn_mask, False
    return attn_mask.masked_fill(~allowed, float("-inf")), False


class MultiHeadAttention(nn.Module):
    """Multi-head self- or cross-attention with masks, dropout, RoPE and a KV cache.

    Args:
        d_model: width of queries, keys and values (d in the paper).
        n_head: number of heads h; each head has d_k = d_v = d / h.
        dropout: dropout on the attention probabilities, during training only.
        bias: whether W_qkv and W_o have biases.
        rotary: optional rotary position embedding applied to queries and keys.
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        dropout: float = 0.0,
        bias: bool = True,
        rotary: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        expect(d_model % n_head == 0, f"d_model ({d_model}) must be divisible by n_head ({n_head})")
        self.d_model, self.n_head, self.d_head = d_model, n_head, d_model // n_head
        self.dropout = dropout
        self.W_qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.W_o = nn.Linear(d_model, d_model, bias=bias)
        self.rotary = rotary

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_head, self.d_head).transpose(1, 2)

    def _check_input(self, name: str, x: Tensor) -> None:
        expect(
            x.dim() == 3 and x.shape[-1] == self.d_model,
            f"{name} must have shape (batch, length, {self.d_model}), got {tuple(x.shape)}",
        )

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Attend from ``x`` (batch, q_len, d) to itself, or to ``memory`` (batch, k_len, d).

        With a ``cache``, self-attention appends this call's keys/values to it and
        attends to everything cached; cross-attention projects ``memory`` on the first
        call only and reuses it afterwards (``memory`` may then be ``None`` only if the
        cache is filled, it is ignored otherwise).
        """
        self._check_input("x", x)
        d = self.d_model
        past = cache.length if cache is not None else 0
        cross = memory is not None or (cache is not None and cache.cross)
        if not cross:
            q, k, v = (self._heads(t) for t in self.W_qkv(x).split(d, dim=-1))
            if self.rotary is not None:
                q, k = self.rotary(q, offset=past), self.rotary(k, offset=past)
            if cache is not None:
                k, v = cache.append(k, v)
        else:
            W, b = self.W_qkv.weight, self.W_qkv.bias
            q = self._heads(F.linear(x, W[:d], None if b is None else b[:d]))
            if cache is not None and cache.length:
                k, v = cache.keys_values()
            else:
                self._check_input("memory", memory)
                expect(
                    memory.shape[0] == x.shape[0],
                    f"memory has batch size {memory.shape[0]} but x has {x.shape[0]}",
                )
                kv = F.linear(memory, W[d:], None if b is None else b[d:])
                k, v = (self._heads(t) for t in kv.split(d, dim=-1))
                if cache is not None:
                    cache.cross = True
                    k, v = cache.append(k, v)
            is_causal = False
        mask, sdpa_causal = build_attention_mask(
            x.shape[0],
            q.shape[2],
            k.shape[2],
            key_padding_mask=key_padding_mask,
            attn_mask=attn_mask,
            is_causal=is_causal,
            past=past,
            device=x.device,
        )
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=sdpa_causal,
        )
        y = y.transpose(1, 2).reshape(x.shape[0], x.shape[1], d)
        return self.W_o(y)
