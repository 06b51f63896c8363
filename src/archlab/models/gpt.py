"""GPT: a decoder-only, left-to-right Transformer language model.

Radford et al. 2018 ("Improving Language Understanding by Generative Pre-Training")
and 2019 (GPT-2, "Language Models are Unsupervised Multitask Learners"):

    h_0 = W_e[x] + W_p[positions]
    h_l = block(h_{l-1}),  block = pre-norm causal self-attention + pre-norm MLP
    p(x_{t+1} | x_{<=t}) = softmax(LayerNorm(h_L) W_e^T)

The output projection shares the token embedding W_e (weight tying).  Training
maximises sum_t log p(x_{t+1} | x_{<=t}); attention is causal, so every position
is trained in parallel.  Generation appends one token at a time, keeping each
layer's keys and values in a KV cache.

Weights load from and save to Hugging Face GPT-2 checkpoint directories
(:meth:`GPT.from_hf`, :meth:`GPT.to_hf`); the format lives in
:mod:`archlab.interop.hf_gpt2`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn

from archlab.config import (
    Config,
    Count,
    OneOf,
    PositiveFloat,
    Probability,
    Size,
)
from archlab.errors import ConfigError, expect
from archlab.models import roles
from archlab.nn.attention import KVCache, RaggedKVCache
from archlab.nn.checks import check_token_ids
from archlab.nn.positional import LearnedPositionalEmbedding, RotaryEmbedding
from archlab.nn.sampling import check_sampling, sample_next_token
from archlab.nn.sequence import SequenceInput
from archlab.nn.transfer import load_shared_weights
from archlab.nn.transformer import ACTIVATIONS, EncoderBlock
from archlab.registry import register_model

POSITIONS = ("learned", "rotary")


@dataclass
class GPTConfig(Config):
    """Defaults are GPT-2 small (124M parameters)."""

    vocab_size: Size = 50257
    block_size: Size = 1024  # context length in tokens
    n_layer: Size = 12
    n_head: Size = 12
    n_embd: Size = 768
    d_ff: Size | None = None  # MLP width; None means 4 * n_embd
    dropout: Probability = 0.0  # on embeddings and on each sub-layer's output
    attn_dropout: Probability = 0.0  # on attention probabilities
    bias: bool = True  # biases in Linear and LayerNorm layers (GPT-2 has them)
    activation: Annotated[str, OneOf(ACTIVATIONS)] = "gelu_tanh"
    eps: PositiveFloat = 1e-5
    position: Annotated[str, OneOf(POSITIONS)] = "learned"  # "learned" (GPT-2) or "rotary"
    tie_weights: bool = True  # output projection = token embedding

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_divisible("n_embd", "n_head")
        if self.position == "rotary" and self.n_embd // self.n_head % 2:
            raise ConfigError(
                f"rotary positions need an even head size, but {self.key('n_embd')} / "
                f"{self.key('n_head')} = {self.n_embd // self.n_head}"
            )


def causal_blocks(c: GPTConfig | CausalTransformerConfig, rotary=None) -> nn.ModuleList:
    """GPT-2's n_layer pre-norm blocks (causal when called with ``is_causal=True``)."""
    return nn.ModuleList(
        EncoderBlock(
            c.n_embd,
            c.n_head,
            c.d_ff or 4 * c.n_embd,
            dropout=c.dropout,
            attn_dropout=c.attn_dropout,
            activation=c.activation,
            norm_first=True,
            eps=c.eps,
            bias=c.bias,
            rotary=rotary,
        )
        for _ in range(c.n_layer)
    )


def init_like_gpt2(model: nn.Module, n_layer: int) -> None:
    """N(0, 0.02) weights, zero biases; residual projections N(0, 0.02 / sqrt(2 n_layer))."""
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    for name, p in model.named_parameters():
        if name.endswith(("W_o.weight", "W_2.weight")):
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))


@register_model("gpt", GPTConfig)
class GPT(nn.Module):
    """GPT: decoder-only causal Transformer language model (GPT-2 layout)."""

    role = roles.LanguageModel

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = (
            LearnedPositionalEmbedding(c.block_size, c.n_embd) if c.position == "learned" else None
        )
        rotary = (
            RotaryEmbedding(c.n_embd // c.n_head, c.block_size) if c.position == "rotary" else None
        )
        self.drop = nn.Dropout(c.dropout)
        self.blocks = causal_blocks(c, rotary)
        self.ln_f = nn.LayerNorm(c.n_embd, eps=c.eps, bias=c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.wte.weight
        init_like_gpt2(self, c.n_layer)

    def _check_ids(self, idx: Tensor, offset: int) -> None:
        check_token_ids("token ids", idx, self.config.vocab_size)
        expect(
            offset + idx.shape[1] <= self.config.block_size,
            f"sequence of {offset + idx.shape[1]} tokens exceeds the context of "
            f"{self.config.block_size} (block_size)",
        )

    def hidden_states(
        self, idx: Tensor, caches: list[KVCache] | list[RaggedKVCache] | None = None
    ) -> Tensor:
        """Final (layer-normed) hidden states (batch, time, n_embd) for token ids (batch, time).

        With ``caches`` (one :class:`KVCache` per layer), ``idx`` continues the
        sequence already cached and the caches are extended.  With one
        :class:`RaggedKVCache` per layer, row r of ``idx`` continues row r's own
        sequence, at its own position (continuous batching).
        """
        if caches and isinstance(caches[0], RaggedKVCache):
            positions = caches[0].positions(*idx.shape)
            self._check_ids(idx, int(positions[:, 0].max()))
            x = self.wte(idx)
            if self.wpe is not None:
                x = x + self.wpe.at(positions)
        else:
            offset = caches[0].length if caches else 0
            self._check_ids(idx, offset)
            x = self.wte(idx)
            if self.wpe is not None:
                x = x + self.wpe(idx.shape[1], offset)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, is_causal=True, cache=caches[i] if caches else None)
        return self.ln_f(x)

    def forward(self, idx: Tensor) -> Tensor:
        """Next-token logits (batch, time, vocab_size) for token ids (batch, time)."""
        return self.lm_head(self.hidden_states(idx))

    def next_token_logits(
        self, idx: Tensor, caches: list[KVCache] | list[RaggedKVCache] | None = None
    ) -> Tensor:
        """Logits (batch, vocab_size) of the token after ``idx`` (and what ``caches`` hold)."""
        return self.lm_head(self.hidden_states(idx, caches)[:, -1])

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue ``idx`` (batch, time) by ``max_new_tokens`` sampled tokens.

        While the sequence fits the context, each step feeds only the newest token
        and reuses the KV cache; past ``block_size`` it conditions on the last
        ``block_size`` tokens, as an uncached model must.  Cached and uncached
        generation therefore give the same tokens.
        """
        steps = self.generate_stream(
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            use_cache=use_cache,
            generator=generator,
        )
        return torch.cat((idx, *steps), dim=1)

    def generate_stream(
        self,
        idx: Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> Iterator[Tensor]:
        """:meth:`generate` one step at a time: yields each new token, (batch, 1), as sampled.

        The arguments are checked at the call, before the first token.
        """
        check_sampling(temperature, top_k, top_p)
        expect(max_new_tokens >= 0, f"max_new_tokens must be >= 0, got {max_new_tokens}")
        expect(idx.dim() == 2 and idx.shape[1] > 0, "the prompt must hold at least one token")
        return self._stream(idx, max_new_tokens, temperature, top_k, top_p, use_cache, generator)

    @torch.no_grad()
    def _stream(self, idx, max_new_tokens, temperature, top_k, top_p, use_cache, generator):
        block = self.config.block_size
        caches = [KVCache() for _ in self.blocks] if use_cache else None
        tokens = idx
        for _ in range(max_new_tokens):
            if caches is not None and tokens.shape[1] <= block:
                logits = self.next_token_logits(tokens[:, caches[0].length :], caches)
            else:
                logits = self.next_token_logits(tokens[:, -block:])
            next_token = sample_next_token(logits, temperature, top_k, top_p, generator)
            tokens = torch.cat((tokens, next_token), dim=1)
            yield next_token

    # ----- fine-tuning from a pretrained model (a recipe's model.init_from) -----

    # what a pretrained GPT fixes: its sizes and the function its weights compute
    PRETRAINED_FIELDS = (
        "vocab_size",
        "block_size",
        "n_layer",
        "n_head",
        "n_embd",
        "d_ff",
        "bias",
        "activation",
        "eps",
        "position",
        "tie_weights",
    )

    def load_pretrained(self, pretrained: GPT) -> list[str]:
        """Copy ``pretrained``'s weights into this model (a classifier's head stays fresh);
        the names of the tensors left fresh."""
        return load_shared_weights(self, pretrained, self.PRETRAINED_FIELDS, "GPT")

    # ----- Hugging Face GPT-2 checkpoints (archlab.interop.hf_gpt2) -----

    @classmethod
    def from_hf(cls, path: str | os.PathLike) -> GPT:
        """Load a Hugging Face GPT-2 checkpoint directory (config.json + model.safetensors)."""
        from archlab.interop import hf_gpt2

        return hf_gpt2.from_hf(path, cls)

    def to_hf(self, path: str | os.PathLike) -> None:
        """Write a checkpoint directory that ``GPT2LMHeadModel.from_pretrained`` loads."""
        from archlab.interop import hf_gpt2

        hf_gpt2.to_hf(self, path)


@dataclass
class GPTClassifierConfig(GPTConfig):
    num_classes: Size = 2


@register_model(
    "gpt_classifier",
    GPTClassifierConfig,
    defaults={"vocab_size": 8000, "block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 256},
    summary="GPT with a classification head on the last token's state",
)
class GPTClassifier(GPT):
    """GPT for sentence classification (Radford et al. 2018, section 3.3):
    logits = W_c Dropout(h_L[last]) + b_c, h_L[last] the final state of the sentence's last
    token, the one position that has read the whole sentence left to right."""

    role = roles.TextClassifier

    def __init__(self, config: GPTClassifierConfig) -> None:
        super().__init__(config)
        self.classifier = nn.Linear(config.n_embd, config.num_classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Class logits (batch, num_classes) for right-padded token ids (batch, time)."""
        hidden = self.hidden_states(input_ids)
        if attention_mask is None:
            last = torch.full((len(input_ids),), input_ids.shape[1] - 1)
        else:
            last = attention_mask.sum(1).clamp_min(1) - 1
        return self.classifier(self.drop(hidden[torch.arange(len(input_ids)), last]))


@dataclass
class CausalTransformerConfig(Config):
    """GPT-2's blocks over any sequence: real-valued inputs or token ids, any outputs."""

    in_dim: Size = 1  # input features per step (the embedding size when vocab_size > 0)
    vocab_size: Count = 0  # > 0: inputs are token ids, embedded into in_dim features
    max_len: Size = 1024  # learned positions: the longest sequence
    n_layer: Size = 2
    n_head: Size = 4
    n_embd: Size = 64
    d_ff: Size | None = None  # MLP width; None means 4 * n_embd
    dropout: Probability = 0.0
    attn_dropout: Probability = 0.0
    input_dropout: Probability = 0.0  # on embedded tokens
    bias: bool = True
    activation: Annotated[str, OneOf(ACTIVATIONS)] = "gelu_tanh"
    eps: PositiveFloat = 1e-5
    out_dim: Size = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_divisible("n_embd", "n_head")


@register_model(
    "seq_transformer",
    CausalTransformerConfig,
    summary="Causal Transformer (GPT-2 blocks) over real-valued or token sequences",
)
class CausalTransformer(nn.Module):
    """GPT's causal blocks as a sequence model: y_t = W_out LN(h_L,t), h_0,t = W_in x_t + P_t."""

    role = roles.SequenceModel

    def __init__(self, config: CausalTransformerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.input = SequenceInput(c.in_dim, c.vocab_size, c.input_dropout)
        self.W_in = nn.Linear(c.in_dim, c.n_embd)
        self.wpe = LearnedPositionalEmbedding(c.max_len, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = causal_blocks(c)
        self.ln_f = nn.LayerNorm(c.n_embd, eps=c.eps, bias=c.bias)
        self.out = nn.Linear(c.n_embd, c.out_dim)
        init_like_gpt2(self, c.n_layer)

    def _run(self, x: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        offset = caches[0].length if caches else 0
        h = self.drop(self.W_in(x) + self.wpe(x.shape[1], offset))
        for i, block in enumerate(self.blocks):
            h = block(h, is_causal=True, cache=caches[i] if caches else None)
        return self.out(self.ln_f(h))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Outputs (batch, time, out_dim) for inputs (batch, time[, in_dim]), causally.

        ``lengths`` is not needed: attention is causal, so right padding never reaches a
        real step's output.
        """
        return self._run(self.input(x))

    def init_state(self, batch: int) -> list[KVCache]:
        """The state before the first step: an empty KV cache per block."""
        return [KVCache() for _ in self.blocks]

    def step(self, x_t: Tensor, state: list[KVCache] | None = None) -> tuple[Tensor, list]:
        """Outputs (batch, out_dim) for one step's inputs (batch[, in_dim]); KV caches carried."""
        state = self.init_state(x_t.shape[0]) if state is None else state
        return self._run(self.input.step(x_t).unsqueeze(1), state)[:, 0], state
