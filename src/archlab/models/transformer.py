"""The encoder-decoder Transformer (Vaswani et al. 2017, "Attention Is All You Need").

Embeddings, scaled and summed with sinusoidal positions (sections 3.4, 3.5, 5.4):
    x_0 = Dropout(E[tokens] * sqrt(d_model) + PE)

Encoder: N layers of self-attention and FFN; decoder: N layers of causal
self-attention, cross-attention over the encoder output ("memory") and FFN; each
sub-layer F sits in a residual connection with LayerNorm (see ``archlab.nn.transformer``):
    post-norm (the paper):  x <- LayerNorm(x + Dropout(F(x)))
    pre-norm:               x <- x + Dropout(F(LayerNorm(x)))
Both stacks end with a LayerNorm, as ``torch.nn.Transformer``'s do, so that weights
copy over one to one.  The output distribution is
    p(y_t | y_<t, x) = softmax(h_t W_out^T),   W_out = E_tgt when ``tie_output``
(section 3.4 shares it; ``share_embeddings`` also shares E_src = E_tgt, for a joint
source/target vocabulary).

Dropout follows the paper (section 5.4): on each sub-layer's output and on the
embeddings, ``dropout`` = 0.1 for the base model.  The paper puts none on the attention
probabilities or inside the FFN, so ``attn_dropout`` and ``ff_dropout`` default to 0;
``torch.nn.Transformer`` uses ``dropout`` in both places (set them to ``dropout`` to
train like it), and later tensor2tensor settings use 0.1 there too.

Decoding (``greedy``, ``beam_search``) feeds one token at a time through per-layer
KV caches, see ``archlab.nn.decoding``.  PAD and BOS are never generated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Config, Count, OneOf, PositiveFloat, Probability, Size
from archlab.errors import ConfigError, expect
from archlab.models import roles
from archlab.nn.attention import KVCache
from archlab.nn.checks import check_token_ids
from archlab.nn.decoding import beam_search, greedy_search
from archlab.nn.positional import SinusoidalPositionalEncoding
from archlab.nn.transformer import ACTIVATIONS, DecoderBlock, EncoderBlock
from archlab.registry import register_model


@dataclass
class LayerStackConfig(Config):
    """What every stack of Transformer blocks shares: widths, heads, dropout, norm placement."""

    d_model: Size = 512
    n_head: Size = 8
    d_ff: Size = 2048
    dropout: Probability = 0.1
    attn_dropout: Probability = 0.0
    ff_dropout: Probability = 0.0
    activation: Annotated[str, OneOf(ACTIVATIONS)] = "relu"
    norm_first: bool = False
    max_len: Size = 256
    pad_id: Count = 0
    eps: PositiveFloat = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_divisible("d_model", "n_head")


@dataclass
class TransformerConfig(LayerStackConfig):
    """Hyper-parameters; the defaults are the paper's base model (section 6.1, Table 3)."""

    src_vocab_size: Size = 32000
    tgt_vocab_size: Size = 32000
    n_encoder_layers: Size = 6
    n_decoder_layers: Size = 6
    share_embeddings: bool = False
    tie_output: bool = True
    bos_id: Count = 1
    eos_id: Count = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError(
                f"{self.key('share_embeddings')} needs one vocabulary for source and target, "
                f"but src_vocab_size={self.src_vocab_size} and "
                f"tgt_vocab_size={self.tgt_vocab_size}"
            )
        special = {"pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id}
        if len(set(special.values())) != 3:
            raise ConfigError(
                f"{', '.join(map(self.key, special))} must be three different tokens, got {special}"
            )
        for name in special:
            self.require_below(name, "src_vocab_size")
            self.require_below(name, "tgt_vocab_size")


def _block_options(config: LayerStackConfig) -> dict[str, Any]:
    return {
        "dropout": config.dropout,
        "attn_dropout": config.attn_dropout,
        "ff_dropout": config.ff_dropout,
        "activation": config.activation,
        "norm_first": config.norm_first,
        "eps": config.eps,
    }


class Encoder(nn.Module):
    """N encoder blocks and a final LayerNorm on embedded inputs, like ``nn.TransformerEncoder``."""

    def __init__(self, config: LayerStackConfig, n_layer: int) -> None:
        super().__init__()
        c = config
        self.layers = nn.ModuleList(
            EncoderBlock(c.d_model, c.n_head, c.d_ff, **_block_options(c)) for _ in range(n_layer)
        )
        self.norm = nn.LayerNorm(c.d_model, eps=c.eps)

    def forward(self, x: Tensor, *, key_padding_mask: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, key_padding_mask=key_padding_mask)
        return self.norm(x)


class Decoder(nn.Module):
    """N decoder blocks and a final LayerNorm on embedded inputs, like ``nn.TransformerDecoder``.

    ``caches`` holds one (self-attention, cross-attention) :class:`KVCache` pair per layer
    for incremental decoding; ``memory`` may then be ``None`` once the cross caches are full.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        c = config
        self.layers = nn.ModuleList(
            DecoderBlock(c.d_model, c.n_head, c.d_ff, **_block_options(c))
            for _ in range(c.n_decoder_layers)
        )
        self.norm = nn.LayerNorm(c.d_model, eps=c.eps)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        *,
        key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        caches: Sequence[tuple[KVCache, KVCache]] | None = None,
    ) -> Tensor:
        layer_caches = caches if caches is not None else [(None, None)] * len(self.layers)
        for layer, (self_cache, cross_cache) in zip(self.layers, layer_caches, strict=True):
            x = layer(
                x,
                memory,
                key_padding_mask=key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                is_causal=True,
                self_cache=self_cache,
                cross_cache=cross_cache,
            )
        return self.norm(x)


@register_model("transformer", TransformerConfig)
class Transformer(nn.Module):
    """Encoder-decoder Transformer for sequence to sequence (Vaswani et al. 2017).

    Attributes ``encoder`` and ``decoder`` are the two stacks, with the same parameter
    names below them as ``torch.nn.Transformer``'s up to the renamings of
    ``archlab.nn`` (``in_proj_weight`` -> ``W_qkv.weight``, ``linear1`` -> ``ff.W_1``, ...).
    """

    role = roles.Seq2Seq

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.src_embed = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=c.pad_id)
        self.tgt_embed = (
            self.src_embed
            if c.share_embeddings
            else nn.Embedding(c.tgt_vocab_size, c.d_model, padding_idx=c.pad_id)
        )
        self.positions = SinusoidalPositionalEncoding(c.d_model, c.max_len)
        self.embed_dropout = nn.Dropout(c.dropout)
        self.encoder = Encoder(c, c.n_encoder_layers)
        self.decoder = Decoder(c)
        self.W_out = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        self._reset_parameters()
        if c.tie_output:
            self.W_out.weight = self.tgt_embed.weight

    def _reset_parameters(self) -> None:
        """Xavier-uniform matrices as ``torch.nn.Transformer``; embeddings N(0, 1/d_model).

        Embeddings are multiplied by sqrt(d_model), so the inputs have unit scale like the
        positional encodings, and tied output logits start with unit scale too.
        """
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        with torch.no_grad():
            for embedding in dict.fromkeys((self.src_embed, self.tgt_embed)):
                nn.init.normal_(embedding.weight, std=self.config.d_model**-0.5)
                embedding.weight[self.config.pad_id].zero_()

    # ---- inputs -------------------------------------------------------------------------

    def _check_ids(self, name: str, ids: Tensor, vocab_size: int) -> None:
        check_token_ids(name, ids, vocab_size)
        expect(
            ids.shape[1] <= self.config.max_len,
            f"{name} has length {ids.shape[1]} but the model handles at most max_len="
            f"{self.config.max_len} positions; shorten it or build the model with a larger "
            "max_len",
        )

    def _padding_mask(self, ids: Tensor) -> Tensor | None:
        """True at PAD positions, or None when there is no padding (keeps SDPA's fast path)."""
        mask = ids == self.config.pad_id
        return mask if mask.any() else None

    def _embed(self, embedding: nn.Embedding, ids: Tensor, offset: int = 0) -> Tensor:
        """x_0 = Dropout(E[ids] * sqrt(d_model) + PE[offset : offset + length])."""
        x = embedding(ids) * math.sqrt(self.config.d_model)
        return self.embed_dropout(x + self.positions(ids.shape[1], offset))

    # ---- forward ------------------------------------------------------------------------

    def encode(self, src: Tensor, src_key_padding_mask: Tensor | None = None) -> Tensor:
        """Source ids (batch, S) -> memory (batch, S, d_model); the mask is True at padding."""
        self._check_ids("src", src, self.config.src_vocab_size)
        return self.encoder(self._embed(self.src_embed, src), key_padding_mask=src_key_padding_mask)

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_key_padding_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Decoder input ids (batch, T) and memory -> hidden states (batch, T, d_model)."""
        self._check_ids("tgt", tgt, self.config.tgt_vocab_size)
        return self.decoder(
            self._embed(self.tgt_embed, tgt),
            memory,
            key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
        )

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Logits (batch, T, tgt_vocab_size) of the next token after each position of ``tgt``.

        ``tgt`` is the decoder input, BOS y_1 ... y_{T-1}; padding masks come from pad_id.
        """
        src_mask = self._padding_mask(src)
        memory = self.encode(src, src_mask)
        return self.W_out(self.decode(tgt, memory, src_mask, self._padding_mask(tgt)))

    @torch.no_grad()
    def cross_attention(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Each decoder layer's cross-attention weights (layers, batch, heads, T, S).

        ``tgt`` is the decoder input (BOS y_1 ... y_{T-1}) read with teacher forcing:
        row t is where the prediction of y_{t+1} looks in the source.  The weights
        are what the forward computes inside SDPA (no dropout), from the inputs each
        layer's cross-attention receives.
        """
        src_mask = self._padding_mask(src)
        memory = self.encode(src, src_mask)
        seen: list[tuple[Tensor, Tensor]] = []

        def keep(module: nn.Module, args: tuple, kwargs: dict) -> None:
            seen.append((args[0], args[1] if len(args) > 1 else kwargs["memory"]))

        hooks = [
            layer.cross_attn.register_forward_pre_hook(keep, with_kwargs=True)
            for layer in self.decoder.layers
        ]
        try:
            self.decode(tgt, memory, src_mask, self._padding_mask(tgt))
        finally:
            for hook in hooks:
                hook.remove()
        return torch.stack(
            [
                layer.cross_attn.attention_weights(x, m, key_padding_mask=src_mask)
                for layer, (x, m) in zip(self.decoder.layers, seen, strict=True)
            ]
        )

    # ---- decoding -----------------------------------------------------------------------

    def incremental_decoder(self, src: Tensor, copies: int = 1) -> IncrementalDecoder:
        """Encode ``src`` and return a decoder state with ``copies`` rows per sentence."""
        src_mask = self._padding_mask(src)
        memory = self.encode(src, src_mask).repeat_interleave(copies, dim=0)
        if src_mask is not None:
            src_mask = src_mask.repeat_interleave(copies, dim=0)
        return IncrementalDecoder(self, memory, src_mask)

    def _decode_len(self, max_len: int | None) -> int:
        if max_len is None:
            return self.config.max_len
        expect(
            1 <= max_len <= self.config.max_len,
            f"max_len must be between 1 and the model's max_len={self.config.max_len}, "
            f"got {max_len}",
            ConfigError,
        )
        return max_len

    @torch.no_grad()
    def greedy(self, src: Tensor, max_len: int | None = None) -> list[list[int]]:
        """Greedy translations of ``src`` (batch, S): token ids without BOS and EOS.

        ``max_len`` bounds the generated tokens (EOS included), by default the model's max_len.
        Call ``model.eval()`` first, or dropout stays on.
        """
        state = self.incremental_decoder(src)
        start = src.new_full((src.shape[0],), self.config.bos_id)
        decoded = greedy_search(
            state.log_probs,
            state.reorder,
            start,
            eos_id=self.config.eos_id,
            max_len=self._decode_len(max_len),
        )
        return decoded.tokens

    @torch.no_grad()
    def beam_search(
        self,
        src: Tensor,
        beam: int = 4,
        length_penalty: float = 0.6,
        max_len: int | None = None,
    ) -> list[list[int]]:
        """Beam-search translations of ``src`` (batch, S), as in the paper (beam 4, alpha 0.6).

        Returns token ids without BOS and EOS; ``max_len`` as for :meth:`greedy`.
        """
        expect(beam >= 1, f"beam must be at least 1, got {beam}", ConfigError)
        state = self.incremental_decoder(src, copies=beam)
        start = src.new_full((src.shape[0],), self.config.bos_id)
        decoded = beam_search(
            state.log_probs,
            state.reorder,
            start,
            beam=beam,
            eos_id=self.config.eos_id,
            max_len=self._decode_len(max_len),
            length_penalty=length_penalty,
        )
        return decoded.tokens


class IncrementalDecoder:
    """Decoder state for generating one token at a time: a KV cache pair per layer, the
    encoder output (consumed into the cross-attention caches at the first step), the
    source padding mask and the current position.
    """

    def __init__(
        self, model: Transformer, memory: Tensor, memory_key_padding_mask: Tensor | None
    ) -> None:
        self.model = model
        self.memory: Tensor | None = memory
        self.memory_key_padding_mask = memory_key_padding_mask
        self.caches = [(KVCache(), KVCache()) for _ in model.decoder.layers]
        self.position = 0

    def logits(self, tokens: Tensor) -> Tensor:
        """Feed ``tokens`` (rows,) at the current position; return next-token logits (rows, V)."""
        expect(
            tokens.dim() == 1,
            f"tokens must be a 1-D tensor (rows,), got shape {tuple(tokens.shape)}",
        )
        model = self.model
        x = model._embed(model.tgt_embed, tokens[:, None], offset=self.position)
        memory, self.memory = self.memory, None
        h = model.decoder(
            x,
            memory,
            memory_key_padding_mask=self.memory_key_padding_mask,
            caches=self.caches,
        )
        self.position += 1
        return model.W_out(h[:, 0])

    def log_probs(self, tokens: Tensor) -> Tensor:
        """log p(y_t | y_<t, x) (rows, V) after ``tokens``, with PAD and BOS made impossible."""
        log_p = F.log_softmax(self.logits(tokens).float(), dim=-1)
        log_p[:, [self.model.config.pad_id, self.model.config.bos_id]] = float("-inf")
        return log_p

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` of every cache and of the source, in that order."""
        if self.memory is not None:
            self.memory = self.memory.index_select(0, index)
        for self_cache, cross_cache in self.caches:
            self_cache.reorder(index)
            cross_cache.reorder(index)
        if self.memory_key_padding_mask is not None:
            self.memory_key_padding_mask = self.memory_key_padding_mask.index_select(0, index)


@dataclass
class TransformerClassifierConfig(LayerStackConfig):
    """A Transformer encoder over a sentence, mean-pooled, then a linear classifier."""

    vocab_size: Size = 20000
    n_layer: Size = 2
    num_classes: Size = 2
    d_model: Size = 256
    n_head: Size = 4
    d_ff: Size = 512
    attn_dropout: Probability = 0.1
    norm_first: bool = True
    max_len: Size = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_below("pad_id", "vocab_size")


@register_model("transformer_classifier", TransformerClassifierConfig)
class TransformerClassifier(nn.Module):
    """Transformer encoder sentence classifier: y = softmax(W mean_t(Encoder(E x + PE)) + b)."""

    role = roles.TextClassifier

    def __init__(self, config: TransformerClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        nn.init.normal_(self.embed.weight, std=c.d_model**-0.5)
        self.positions = SinusoidalPositionalEncoding(c.d_model, c.max_len)
        self.embed_dropout = nn.Dropout(c.dropout)
        self.encoder = Encoder(c, c.n_layer)
        self.dropout = nn.Dropout(c.dropout)
        self.W = nn.Linear(c.d_model, c.num_classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Class logits (batch, num_classes) for token ids (batch, time); mask 1 = token."""
        check_token_ids("input_ids", input_ids, self.config.vocab_size)
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_id
        keep = attention_mask.bool()
        x = self.embed(input_ids) * math.sqrt(self.config.d_model)
        x = self.embed_dropout(x + self.positions(input_ids.shape[1]))
        h = self.encoder(x, key_padding_mask=None if keep.all() else ~keep)
        weights = keep.float()[..., None] / keep.sum(dim=1).clamp(min=1)[:, None, None]
        return self.W(self.dropout((h * weights).sum(dim=1)))
