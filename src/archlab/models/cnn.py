"""Convolutional networks.

TextCNN (Kim 2014, "Convolutional Neural Networks for Sentence Classification"):
    x_{1:n} = word embeddings (n x k)
    c_i = ReLU(w . x_{i:i+h-1} + b)                 one feature map per filter of width h
    c_hat = max_i c_i                               max-over-time pooling
    z = [c_hat over all filters];  y = softmax(W (z o r) + b),  r ~ Bernoulli(1 - p)
    ||w_j||_2 <= s for every row w_j of W                max-norm constraint, s = 3
with filter widths 3, 4, 5, 100 maps each, dropout 0.5 (Kim's CNN-rand: embeddings
learnt from scratch, initialised U(-0.25, 0.25) as in his code).  Each sentence is
zero-padded by h - 1 positions on both sides (a "wide" convolution, as Kim's code
pads), so every word, even in a sentence shorter than h, is seen by every filter.
The max-norm constraint is applied as a reparametrisation: the output layer uses W
with each row rescaled to norm s when it is longer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.errors import ConfigError
from archlab.nn.checks import check_token_ids
from archlab.registry import register_model


@dataclass
class TextCNNConfig:
    vocab_size: int = 20000
    embed_dim: int = 300
    filter_sizes: list[int] = field(default_factory=lambda: [3, 4, 5])
    n_filters: int = 100
    dropout: float = 0.5
    num_classes: int = 2
    pad_id: int = 0
    max_norm: float | None = 3.0  # Kim's l2 constraint on the output weights; None = off

    def __post_init__(self) -> None:
        if not self.filter_sizes or min(self.filter_sizes) < 1:
            raise ConfigError(f"filter_sizes must be positive widths, got {self.filter_sizes}")


@register_model("textcnn", TextCNNConfig)
class TextCNN(nn.Module):
    """Kim (2014) CNN for sentence classification: convolutions + max-over-time pooling."""

    def __init__(self, config: TextCNNConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)
        nn.init.uniform_(self.embed.weight, -0.25, 0.25)
        with torch.no_grad():
            self.embed.weight[c.pad_id].zero_()
        self.convs = nn.ModuleList(
            nn.Conv1d(c.embed_dim, c.n_filters, h, padding=h - 1) for h in c.filter_sizes
        )
        self.dropout = nn.Dropout(c.dropout)
        self.W = nn.Linear(c.n_filters * len(c.filter_sizes), c.num_classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Class logits (batch, num_classes) for token ids (batch, time); mask 1 = token.

        Max-pooling skips windows that lie wholly in a batch's right padding, so a
        sentence gets the same logits however much padding its batch adds.
        """
        c = self.config
        check_token_ids("input_ids", input_ids, c.vocab_size)
        if attention_mask is None:
            attention_mask = input_ids != c.pad_id
        lengths = attention_mask.long().sum(dim=1).clamp(min=1)
        x = self.embed(input_ids).transpose(1, 2)  # (batch, embed_dim, time)
        pooled = []
        for h, conv in zip(c.filter_sizes, self.convs, strict=True):
            feature_map = F.relu(conv(x))  # (batch, n_filters, time + h - 1)
            starts = torch.arange(feature_map.shape[2], device=x.device)
            valid = starts[None, :] <= (lengths + h - 2)[:, None]  # holds a real word
            pooled.append(feature_map.masked_fill(~valid[:, None, :], 0.0).amax(dim=2))
        z = torch.cat(pooled, dim=1)
        W = self.W.weight
        if self.config.max_norm is not None:
            W = torch.renorm(W, p=2, dim=0, maxnorm=self.config.max_norm)
        return F.linear(self.dropout(z), W, self.W.bias)

    classify = forward
