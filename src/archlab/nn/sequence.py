"""What the sequence models (TCN, LSTM/GRU, causal Transformer) share: their inputs.

A sequence model reads either real-valued features x (batch, time, in_dim) -- audio
frames, piano rolls, a time series, the adding problem's (value, marker) pairs -- or,
when ``vocab_size`` > 0, token ids (batch, time), embedded into in_dim features:

    e_t = Dropout(E[x_t])           E in R^{vocab_size x in_dim}

Every sequence model is causal: its output at step t depends on x_1..x_t only, so
right padding never changes an earlier output, a classifier may read the output at
a sequence's last real step, and ``step`` continues a sequence one input at a time
from a carried state, giving what a full forward over the whole prefix gives.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from archlab.errors import expect
from archlab.nn.checks import check_token_ids


class SequenceInput(nn.Module):
    """Inputs (batch, time, in_dim) as they are, or token ids (batch, time) embedded."""

    def __init__(self, in_dim: int, vocab_size: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dim, self.vocab_size = in_dim, vocab_size
        self.embed = nn.Embedding(vocab_size, in_dim) if vocab_size else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Features (batch, time, in_dim) of inputs (batch, time[, in_dim])."""
        if self.embed is None:
            expect(
                x.dim() == 3 and x.shape[-1] == self.in_dim and x.is_floating_point(),
                f"inputs must be real-valued features of shape (batch, time, {self.in_dim}), "
                f"got {tuple(x.shape)} of {x.dtype}",
            )
            return self.dropout(x)
        expect(x.dim() == 2, f"token ids must have shape (batch, time), got {tuple(x.shape)}")
        check_token_ids("token ids", x, self.vocab_size)
        return self.dropout(self.embed(x))

    def step(self, x_t: Tensor) -> Tensor:
        """Features (batch, in_dim) of one step's inputs (batch[, in_dim])."""
        return self(x_t.unsqueeze(1)).squeeze(1)


POOLING = ("mean", "last")


def pool_steps(outputs: Tensor, lengths: Tensor, how: str = "mean") -> Tensor:
    """One vector per sequence (batch, out) from per-step outputs (batch, time, out).

    ``mean``: the mean over the real steps 1..n; ``last``: the output at step n, which
    a causal model computes from the whole sequence.  When the outputs are a linear map
    of hidden states (y_t = W h_t + b, as every sequence model's output layer is), the
    mean of the outputs is that map of the mean state, W mean(h) + b.
    """
    steps = torch.arange(outputs.shape[1], device=outputs.device)
    lengths = lengths.to(outputs.device)
    if how == "last":
        return outputs[torch.arange(outputs.shape[0], device=outputs.device), lengths - 1]
    real = (steps[None, :] < lengths[:, None]).to(outputs.dtype)
    return (outputs * real[..., None]).sum(dim=1) / lengths[:, None].to(outputs.dtype)
