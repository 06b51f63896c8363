"""Recurrent networks: LSTM (Hochreiter & Schmidhuber 1997) and GRU (Cho et al. 2014), as
sentence classifiers and as causal sequence models.

LSTM, at each step t (sigma = logistic, o = element-wise product):
    i_t = sigma(W_i x_t + U_i h_{t-1} + b_i)        input gate
    f_t = sigma(W_f x_t + U_f h_{t-1} + b_f)        forget gate
    g_t = tanh(W_g x_t + U_g h_{t-1} + b_g)         candidate cell
    o_t = sigma(W_o x_t + U_o h_{t-1} + b_o)        output gate
    c_t = f_t o c_{t-1} + i_t o g_t,    h_t = o_t o tanh(c_t)
GRU:
    r_t = sigma(W_r x_t + U_r h_{t-1} + b_r),   z_t = sigma(W_z x_t + U_z h_{t-1} + b_z)
    n_t = tanh(W_n x_t + r_t o (U_n h_{t-1} + b_hn) + b_in)
    h_t = (1 - z_t) o n_t + z_t o h_{t-1}

The recurrence runs in PyTorch's fused kernels (``torch.nn.LSTM`` / ``GRU``, which
store W as ``weight_ih`` and U as ``weight_hh``, gates stacked i, f, g, o and r, z,
n); the tests check that the equations above, written out step by step, give the
same outputs.

``lstm`` / ``gru`` (:class:`RNNClassifier`) classify sentences: a bidirectional
network reads the sentence both ways; padded positions are skipped (packed
sequences), and the sentence vector is the max over time of the top layer's states
(or the last states of each direction), followed by dropout and a linear classifier.

``seq_lstm`` / ``seq_gru`` (:class:`RNNSequenceModel`) are causal sequence models
(:mod:`archlab.nn.sequence`): one direction, an output y_t = W_out Dropout(h_t) + b
at every step, packed batches when lengths are given, and :meth:`~RNNSequenceModel.step`
carrying (h, c) from one input to the next.  The recurrence runs time-major, the fused
kernels' own layout, so the states h (time, batch, hidden) are never transposed; only
the inputs and the outputs are, which are narrower.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from archlab.config import Config, Count, OneOf, Probability, Size
from archlab.errors import expect
from archlab.models import roles
from archlab.nn.checks import check_token_ids
from archlab.nn.sequence import SequenceInput
from archlab.registry import register_model

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class RNNConfig(Config):
    cell: Annotated[str, OneOf(CELLS)] = "lstm"
    vocab_size: Size = 20000
    embed_dim: Size = 300
    hidden_size: Size = 150
    n_layer: Size = 1
    bidirectional: bool = True
    dropout: Probability = 0.5  # on embeddings, between layers and on the sentence vector
    pooling: Annotated[str, OneOf(("max", "last"))] = "max"  # "max" over time, or "last" states
    num_classes: Size = 2
    pad_id: Count = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_below("pad_id", "vocab_size")


@register_model("gru", RNNConfig, defaults={"cell": "gru"}, summary="GRU sentence classifier")
@register_model("lstm", RNNConfig, defaults={"cell": "lstm"}, summary="LSTM sentence classifier")
class RNNClassifier(nn.Module):
    """Recurrent sentence classifier (LSTM or GRU, optionally bidirectional)."""

    role = roles.TextClassifier

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)
        self.rnn = CELLS[c.cell](
            c.embed_dim,
            c.hidden_size,
            num_layers=c.n_layer,
            batch_first=True,
            bidirectional=c.bidirectional,
            dropout=c.dropout if c.n_layer > 1 else 0.0,
        )
        self.dropout = nn.Dropout(c.dropout)
        self.W = nn.Linear(c.hidden_size * (2 if c.bidirectional else 1), c.num_classes)

    def states(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Top-layer states (batch, time, hidden * directions); zero at padding."""
        check_token_ids("input_ids", input_ids, self.config.vocab_size)
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_id
        expect(
            attention_mask.shape == input_ids.shape,
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
            f"got {tuple(attention_mask.shape)}",
        )
        lengths = attention_mask.long().sum(dim=1).clamp(min=1).cpu()
        x = self.dropout(self.embed(input_ids))
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        h, _ = pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])
        return h

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Class logits (batch, num_classes) for token ids (batch, time)."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_id
        h = self.states(input_ids, attention_mask)
        valid = attention_mask.bool().clone()
        valid[:, 0] = True  # an empty sentence still has its first (padding) state
        if self.config.pooling == "max":
            sentence = h.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)
        else:
            last = valid.long().sum(dim=1) - 1
            forward_last = h[torch.arange(h.shape[0]), last, : self.config.hidden_size]
            sentence = forward_last
            if self.config.bidirectional:  # the backward direction ends at position 0
                sentence = torch.cat((forward_last, h[:, 0, self.config.hidden_size :]), dim=1)
        return self.W(self.dropout(sentence))


@dataclass
class RNNSequenceConfig(Config):
    cell: Annotated[str, OneOf(CELLS)] = "lstm"
    in_dim: Size = 1  # input features per step (the embedding size when vocab_size > 0)
    vocab_size: Count = 0  # > 0: inputs are token ids, embedded into in_dim features
    hidden_size: Size = 128
    n_layer: Size = 1
    dropout: Probability = 0.0  # between layers and on the outputs
    input_dropout: Probability = 0.0  # on embedded tokens
    out_dim: Size = 10


@register_model(
    "seq_gru", RNNSequenceConfig, defaults={"cell": "gru"}, summary="GRU sequence model"
)
@register_model(
    "seq_lstm", RNNSequenceConfig, defaults={"cell": "lstm"}, summary="LSTM sequence model"
)
class RNNSequenceModel(nn.Module):
    """Recurrent sequence model (LSTM or GRU): an output at every step, causally."""

    role = roles.SequenceModel

    def __init__(self, config: RNNSequenceConfig) -> None:
        super().__init__()
        self.config = c = config
        self.input = SequenceInput(c.in_dim, c.vocab_size, c.input_dropout)
        self.rnn = CELLS[c.cell](  # time-major: (time, batch, features)
            c.in_dim,
            c.hidden_size,
            num_layers=c.n_layer,
            dropout=c.dropout if c.n_layer > 1 else 0.0,
        )
        self.dropout = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden_size, c.out_dim)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Outputs (batch, time, out_dim); with ``lengths``, padded steps are skipped (packed)."""
        e = self.input(x).transpose(0, 1)  # (time, batch, in_dim)
        if lengths is None:
            h, _ = self.rnn(e)
        else:
            expect(
                lengths.shape == (e.shape[1],) and int(lengths.min()) >= 1,
                f"lengths must be ({e.shape[1]},) positive step counts",
            )
            packed = pack_padded_sequence(e, lengths.cpu(), enforce_sorted=False)
            h, _ = pad_packed_sequence(self.rnn(packed)[0], total_length=e.shape[0])
        return self.out(self.dropout(h)).transpose(0, 1)

    def init_state(self, batch: int) -> None:
        """The state before the first step: None, which the fused kernels read as zeros."""
        return None

    def step(self, x_t: Tensor, state=None) -> tuple[Tensor, object]:
        """Outputs (batch, out_dim) for one step's inputs (batch[, in_dim]); (h[, c]) carried."""
        h, state = self.rnn(self.input.step(x_t).unsqueeze(0), state)
        h = self.dropout(h[0]) if self.training else h[0]  # a no-op call costs ~5 % a step
        return self.out(h), state
