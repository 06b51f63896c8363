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

Continuous batching (a server decoding many requests at once, each joining and
leaving when it likes) keeps the rows of one batch at different lengths in a
:class:`RaggedKVCache`: row r's new key goes to its own position ``lengths[r]``,
and its query may look at keys 0 .. lengths[r] only.

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


class RaggedKVCache:
    """Keys and values of a batch whose rows hold sequences of different lengths.

    Row r holds ``lengths[r]`` positions of a fixed buffer (rows, heads, capacity,
    d_head); rows ``0 .. b-1`` take part in a call with b rows, so a server keeps its
    live sequences in the first rows (:meth:`move` fills the hole a finished one
    leaves).  A call adding q positions per row writes row r's at ``lengths[r] ..
    lengths[r] + q - 1`` and lets its query i see keys ``j <= lengths[r] + i``: the
    causal mask, shifted per row.  A sequence enters through :meth:`load`, from the
    :class:`KVCache` of its own prompt (prefill).
    """

    def __init__(self, rows: int, capacity: int, device: torch.device | str = "cpu") -> None:
        self.rows, self.capacity = rows, capacity
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)
        self._k: Tensor | None = None
        self._v: Tensor | None = None

    def positions(self, batch: int, new: int) -> Tensor:
        """Absolute positions (batch, new) of the next ``new`` entries of the first rows."""
        return self.lengths[:batch, None] + torch.arange(new, device=self.lengths.device)

    def _allocate(self, like: Tensor) -> None:
        if self._k is None:
            shape = (self.rows, like.shape[1], self.capacity, like.shape[3])
            self._k, self._v = like.new_zeros(shape), like.new_zeros(shape)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Add (batch, heads, new, d_head) keys/values to the first ``batch`` rows.

        Returns the keys and values up to the longest row and the mask, True where
        query i of row r may attend, of shape (batch, 1, new, keys).
        """
        self._allocate(k)
        b, h, q, d = k.shape
        pos = self.positions(b, q)
        expect(
            int(pos[:, -1].max()) < self.capacity,
            f"a row would hold {int(pos[:, -1].max()) + 1} positions; the cache holds "
            f"{self.capacity}",
        )
        index = pos[:, None, :, None].expand(b, h, q, d)
        self._k[:b].scatter_(2, index, k)
        self._v[:b].scatter_(2, index, v)
        self.lengths[:b] += q
        end = int(self.lengths[:b].max())
        allowed = torch.arange(end, device=k.device) <= pos[:, None, :, None]
        return self._k[:b, :, :end], self._v[:b, :, :end], allowed

    def load(self, row: int, cache: KVCache) -> None:
        """Put the one sequence of ``cache`` (batch 1) into ``row``."""
        k, v = cache.keys_values()
        self._allocate(k)
        n = k.shape[2]
        self._k[row, :, :n], self._v[row, :, :n] = k[0], v[0]
        self.lengths[row] = n

    def move(self, source: int, target: int) -> None:
        """Copy row ``source`` into row ``target`` (which frees ``source``)."""
        n = int(self.lengths[source])
        if self._k is not None and source != target:
            self._k[target, :, :n] = self._k[source, :, :n]
            self._v[target, :, :n] = self._v[source, :, :n]
        self.lengths[target] = n


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
        cache: KVCache | RaggedKVCache | None = None,
    ) -> Tensor:
        """Attend from ``x`` (batch, q_len, d) to itself, or to ``memory`` (batch, k_len, d).

        With a ``cache``, self-attention appends this call's keys/values to it and
        attends to everything cached; cross-attention projects ``memory`` on the first
        call only and reuses it afterwards (``memory`` may then be ``None`` only if the
        cache is filled, it is ignored otherwise).  A :class:`RaggedKVCache` takes
        causal self-attention only, each row at its own position.
        """
        self._check_input("x", x)
        if isinstance(cache, RaggedKVCache):
            return self._ragged(x, cache, memory, key_padding_mask, attn_mask, is_causal)
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

    def _ragged(self, x, cache, memory, key_padding_mask, attn_mask, is_causal) -> Tensor:
        """Causal self-attention of rows at their own positions (:class:`RaggedKVCache`)."""
        expect(
            memory is None and key_padding_mask is None and attn_mask is None and is_causal,
            "a RaggedKVCache serves causal self-attention without other masks",
        )
        b, t, d = x.shape
        q, k, v = (self._heads(part) for part in self.W_qkv(x).split(d, dim=-1))
        if self.rotary is not None:
            positions = cache.positions(b, t)
            q, k = self.rotary(q, positions=positions), self.rotary(k, positions=positions)
        k, v, allowed = cache.append(k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.W_o(y.transpose(1, 2).reshape(b, t, d))

    @torch.no_grad()
    def attention_weights(
        self, x: Tensor, memory: Tensor | None = None, *, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        """softmax(Q K^T / sqrt(d_k) + M) per head, (batch, heads, q_len, k_len), no dropout.

        What the forward computes inside SDPA without keeping it: for looking at where
        a query attends (a translation's cross-attention over its source words).  Masks:
        ``key_padding_mask`` only; positions apply as in the forward (no cache).
        """
        self._check_input("x", x)
        d = self.d_model
        W, b = self.W_qkv.weight, self.W_qkv.bias
        q = self._heads(F.linear(x, W[:d], None if b is None else b[:d]))
        kv = F.linear(x if memory is None else memory, W[d:], None if b is None else b[d:])
        k, _ = (self._heads(t) for t in kv.split(d, dim=-1))
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        scores = q @ k.transpose(-2, -1) / self.d_head**0.5
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask.bool()[:, None, None, :], float("-inf"))
        return scores.softmax(dim=-1)
