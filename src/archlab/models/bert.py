"""BERT: a bidirectional Transformer encoder, pre-trained by masked language modelling.

Devlin, Chang, Lee & Toutanova 2019, "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding" (NAACL).  For tokens x_t at positions t in
segments s_t (sentence A = 0, sentence B = 1 in "[CLS] A [SEP] B [SEP]"):

    h_0 = Dropout(LayerNorm(E_tok[x_t] + E_pos[t] + E_seg[s_t]))
    a   = LayerNorm(h + Dropout(MultiHead(h, h)))          post-norm encoder layer
    h'  = LayerNorm(a + Dropout(GELU(a W_1 + b_1) W_2 + b_2))   (GELU exact, erf-based)

Attention is bidirectional: every token attends to every non-padding token, left
and right, which is what the masked-LM objective needs and what a left-to-right
model (GPT) cannot see.  On top of the last layer h_L:

    pooler:          p = tanh(W_p h_L[CLS] + b_p)             ([CLS] is position 0)
    masked LM:       z_t = LayerNorm(GELU(W_t h_L,t + b_t))
                     p(x_t | context) = softmax(z_t E_tok^T + b_v)   (decoder tied to E_tok)
    classification:  logits = W_c Dropout(p) + b_c
                     or, with pooling "mean", on the masked mean of h_L instead of p
                     (how a sentence encoder such as all-MiniLM-L6-v2 was trained to pool)

Pre-training masks 15 % of the tokens and trains the MLM head to recover them; a
task then fine-tunes the whole network with a classification head on p.

Weights load from and save to Hugging Face BERT checkpoint directories
(:meth:`BERT.from_hf`, :meth:`BERT.to_hf`; the format lives in
:mod:`archlab.interop.hf_bert`); a recipe fine-tunes from one with
``model.init_from=DIR`` (:meth:`BERT.load_pretrained`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Config, Count, OneOf, PositiveFloat, Probability, Size
from archlab.errors import ConfigError, expect
from archlab.models import roles
from archlab.nn.checks import check_token_ids
from archlab.nn.pooling import masked_mean
from archlab.nn.positional import LearnedPositionalEmbedding
from archlab.nn.transfer import load_shared_weights
from archlab.nn.transformer import ACTIVATIONS, EncoderBlock, activation_fn
from archlab.registry import register_model

CLASSIFIER_POOLING = ("cls", "mean")


@dataclass
class BERTConfig(Config):
    """Defaults are BERT-base (110M parameters)."""

    vocab_size: Size = 30522
    hidden_size: Size = 768
    n_layer: Size = 12
    n_head: Size = 12
    d_ff: Size = 3072  # FFN width ("intermediate size")
    max_len: Size = 512  # positions with a learned embedding
    type_vocab_size: Size = 2  # segments (sentence A / B)
    dropout: Probability = 0.1  # on embeddings, each sub-layer's output and the classifier input
    attn_dropout: Probability = 0.1  # on attention probabilities
    activation: Annotated[str, OneOf(ACTIVATIONS)] = "gelu"
    eps: PositiveFloat = 1e-12  # LayerNorm epsilon
    pad_id: Count | None = 0  # [PAD] token; its embedding row starts at zero and gets no gradient
    pooler: bool = True  # p = tanh(W_p h[CLS] + b_p)
    mlm_head: bool = True  # masked-LM head
    num_classes: Count = 0  # classes of the classification head; 0 = no such head
    # what the classification head reads: "cls", the pooler's p (BertForSequenceClassification),
    # or "mean", the masked mean of the last hidden states (archlab.nn.pooling.masked_mean)
    pooling: Annotated[str, OneOf(CLASSIFIER_POOLING)] = "cls"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_divisible("hidden_size", "n_head")
        if self.num_classes and self.pooling == "cls" and not self.pooler:
            raise ConfigError(
                f"a classification head on [CLS] ({self.key('num_classes')} > 0, "
                f"{self.key('pooling')}=cls) needs pooler: set {self.key('pooler')}=true, or "
                f"{self.key('pooling')}=mean"
            )
        if self.pad_id is not None:
            self.require_below("pad_id", "vocab_size")


class MaskedLMHead(nn.Module):
    """z = LayerNorm(act(h W_t + b_t)); logits = z E_tok^T + b_v, E_tok given by the caller."""

    def __init__(self, hidden_size: int, vocab_size: int, activation: str, eps: float) -> None:
        super().__init__()
        self.transform = nn.Linear(hidden_size, hidden_size)
        self.act = activation_fn(activation)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, h: Tensor, E_tok: Tensor) -> Tensor:
        return F.linear(self.norm(self.act(self.transform(h))), E_tok, self.bias)


def _key_padding_mask(attention_mask: Tensor, shape: torch.Size) -> Tensor | None:
    """Hugging Face's mask (1 = token, 0 = padding) -> key_padding_mask (True = ignore)."""
    expect(
        attention_mask.shape == shape,
        f"attention_mask must have the shape of input_ids {tuple(shape)}, "
        f"got {tuple(attention_mask.shape)}",
    )
    padding = attention_mask == 0
    expect(
        bool((padding | (attention_mask == 1)).all()),
        "attention_mask must hold only 1 (token) and 0 (padding)",
    )
    expect(
        not bool(padding.all(dim=1).any()),
        "attention_mask hides every token of some sequence; each needs at least one token",
    )
    return padding if bool(padding.any()) else None


@register_model("bert", BERTConfig)
class BERT(nn.Module):
    """BERT: bidirectional Transformer encoder with pooler, masked-LM and classification heads."""

    role = roles.Encoder

    def __init__(self, config: BERTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.token_emb = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_id)
        self.pos_emb = LearnedPositionalEmbedding(c.max_len, c.hidden_size)
        self.segment_emb = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.emb_norm = nn.LayerNorm(c.hidden_size, eps=c.eps)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(
                c.hidden_size,
                c.n_head,
                c.d_ff,
                dropout=c.dropout,
                attn_dropout=c.attn_dropout,
                ff_dropout=0.0,
                activation=c.activation,
                norm_first=False,
                eps=c.eps,
            )
            for _ in range(c.n_layer)
        )
        self.pooler = nn.Linear(c.hidden_size, c.hidden_size) if c.pooler else None
        self.mlm = (
            MaskedLMHead(c.hidden_size, c.vocab_size, c.activation, c.eps) if c.mlm_head else None
        )
        self.classifier = nn.Linear(c.hidden_size, c.num_classes) if c.num_classes else None
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """As Hugging Face BERT: N(0, 0.02) weights, zero biases and [PAD] row, LayerNorm 1/0."""
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Last hidden states h_L (batch, time, hidden_size) for token ids (batch, time)."""
        return self.hidden_states(input_ids, attention_mask, token_type_ids)

    def hidden_states(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Last hidden states h_L (batch, time, hidden_size) for token ids (batch, time).

        ``attention_mask`` follows Hugging Face: 1 for a real token, 0 for padding
        (padding keys are never attended).  ``token_type_ids`` are the segment ids,
        all 0 (sentence A) when omitted.
        """
        c = self.config
        check_token_ids("input_ids", input_ids, c.vocab_size, "vocab_size")
        length = input_ids.shape[1]
        expect(
            length <= c.max_len,
            f"sequence of {length} tokens exceeds the {c.max_len} positions of the model (max_len)",
        )
        x = self.token_emb(input_ids) + self.pos_emb(length)
        if token_type_ids is None:
            x = x + self.segment_emb.weight[0]
        else:
            expect(
                token_type_ids.shape == input_ids.shape,
                f"token_type_ids must have the shape of input_ids {tuple(input_ids.shape)}, "
                f"got {tuple(token_type_ids.shape)}",
            )
            check_token_ids("token_type_ids", token_type_ids, c.type_vocab_size, "type_vocab_size")
            x = x + self.segment_emb(token_type_ids)
        key_padding_mask = (
            None if attention_mask is None else _key_padding_mask(attention_mask, input_ids.shape)
        )
        x = self.drop(self.emb_norm(x))
        for block in self.blocks:
            x = block(x, key_padding_mask=key_padding_mask)
        return x

    # ----- the heads -----

    def _check_hidden(self, hidden: Tensor) -> None:
        expect(
            hidden.dim() == 3 and hidden.shape[-1] == self.config.hidden_size,
            f"hidden states must have shape (batch, time, {self.config.hidden_size}), "
            f"got {tuple(hidden.shape)}",
        )

    def pool(self, hidden: Tensor) -> Tensor:
        """p = tanh(W_p h[CLS] + b_p): (batch, time, hidden) -> (batch, hidden)."""
        if self.pooler is None:
            raise ConfigError("this BERT has no pooler (config.pooler=False)")
        self._check_hidden(hidden)
        return torch.tanh(self.pooler(hidden[:, 0]))

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """Masked-LM logits (batch, time, vocab_size) from hidden states (batch, time, hidden)."""
        if self.mlm is None:
            raise ConfigError("this BERT has no masked-LM head (config.mlm_head=False)")
        self._check_hidden(hidden)
        return self.mlm(hidden, self.token_emb.weight)

    # ----- fine-tuning from a pretrained model (a recipe's model.init_from) -----

    # what a pretrained model fixes: its sizes and the function its weights compute;
    # dropout and the heads stay the fine-tuning recipe's choice
    PRETRAINED_FIELDS = (
        "vocab_size",
        "hidden_size",
        "n_layer",
        "n_head",
        "d_ff",
        "max_len",
        "type_vocab_size",
        "activation",
        "eps",
        "pad_id",
    )

    def load_pretrained(self, pretrained: BERT) -> list[str]:
        """Copy ``pretrained``'s weights (e.g. from :meth:`from_hf`) into this model.

        The two must agree on :attr:`PRETRAINED_FIELDS`.  The encoder is copied whole;
        a head (pooler, masked-LM, classifier) is copied when both models have it with
        the same shape, and otherwise keeps its fresh initialisation, as the new
        classification head of a fine-tuning run does.  Returns the names of the
        tensors left fresh.
        """
        return load_shared_weights(self, pretrained, self.PRETRAINED_FIELDS, "BERT")

    # ----- Hugging Face BERT checkpoints (archlab.interop.hf_bert) -----

    @classmethod
    def from_hf(cls, path: str | os.PathLike) -> BERT:
        """Load a Hugging Face BERT checkpoint directory (config.json + model.safetensors).

        The heads present in the weights set ``pooler``, ``mlm_head`` and
        ``num_classes``; see :func:`archlab.interop.hf_bert.from_hf` for what is read.
        """
        from archlab.interop import hf_bert

        return hf_bert.from_hf(path, cls)

    def to_hf(self, path: str | os.PathLike) -> None:
        """Write a checkpoint directory that Hugging Face loads with the same outputs.

        ``BertForMaskedLM`` reads it when the model has an MLM head,
        ``BertForSequenceClassification`` when it has a classifier, ``BertModel`` always.
        """
        from archlab.interop import hf_bert

        hf_bert.to_hf(self, path)


@register_model(
    "bert_classifier",
    BERTConfig,
    defaults={"num_classes": 2, "mlm_head": False},
    summary="BERT with its classification head on the pooled [CLS] state",
)
class BERTClassifier(BERT):
    """BERT for sentence classification: logits = W_c Dropout(tanh(W_p h_L[CLS] + b_p)) + b_c.

    The same parameters as :class:`BERT` with its pooler and classification head
    (Hugging Face's ``BertForSequenceClassification``); only forward differs.  With
    ``pooling="mean"`` the head reads the masked mean of h_L instead of the pooled [CLS].
    """

    role = roles.TextClassifier

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Class logits (batch, num_classes) for token ids (batch, time)."""
        if self.classifier is None:
            raise ConfigError("this BERT has no classification head (model.num_classes is 0)")
        hidden = self.hidden_states(input_ids, attention_mask, token_type_ids)
        if self.config.pooling == "mean":
            pooled = masked_mean(hidden, attention_mask)
        else:
            pooled = self.pool(hidden)
        return self.classifier(self.drop(pooled))
