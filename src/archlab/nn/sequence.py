"""What the sequence models (TCN, LSTM/GRU, causal Transformer) share: their inputs.

A sequence model reads either real-valued features x (batch, time, in_dim) -- audio
frames, piano rolls, a time series, the adding problem's (value, marker) pairs -- or,
when ``vocab_size`` > 0, token ids (batch, time), embedded into in_dim features:

    e_t = Dropout(E[x_t])           E in R^{vocab_size x in_dim}

Every sequence model is causal: its output at step t depends on x_1..x_t only, so
right padding never changes an earlier output, a classifier may read the output at
a sequence's last real step, and ``step`` continues a sequence one input at a time
from a carried state, giving what a full forward over the whole prefix gives.
:func:`generate_stream` samples token sequences from any of them that way.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from archlab.errors import ShapeError, expect
from archlab.nn.checks import check_token_ids
from archlab.nn.sampling import check_sampling, sample_next_token


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
            self._check_features(x, 3)
            return self.dropout(x)
        expect(x.dim() == 2, f"token ids must have shape (batch, time), got {tuple(x.shape)}")
        check_token_ids("token ids", x, self.vocab_size)
        return self.dropout(self.embed(x))

    def step(self, x_t: Tensor) -> Tensor:
        """Features (batch, in_dim) of one step's inputs (batch[, in_dim])."""
        if self.embed is None:  # the common case of step-by-step inference, kept lean:
            self._check_features(x_t, 2)  # no call of the dropout, a no-op, in eval mode
            return self.dropout(x_t) if self.training else x_t
        return self(x_t.unsqueeze(1)).squeeze(1)

    def _check_features(self, x: Tensor, dims: int) -> None:
        """Real-valued features: (batch, time, in_dim) when dims is 3, (batch, in_dim) when 2."""
        if x.dim() != dims or x.shape[-1] != self.in_dim or not x.is_floating_point():
            shape = f"(batch, time, {self.in_dim})" if dims == 3 else f"(batch, {self.in_dim})"
            raise ShapeError(
                f"inputs must be real-valued features of shape {shape}, "
                f"got {tuple(x.shape)} of {x.dtype}"
            )


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


def generate_stream(
    model: nn.Module,
    idx: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor]:
    """Continue token ids ``idx`` (batch, time) through a sequence model's ``step``.

    The prompt is read one step at a time into the model's state (its rings, (h, c) or
    KV caches), then each sampled token (batch, 1) is yielded and fed back.  A TCN or
    an RNN so continues past the length it was trained on with no growing cost.  The
    arguments are checked at the call, before the first token.
    """
    check_sampling(temperature, top_k, top_p)
    expect(max_new_tokens >= 0, f"max_new_tokens must be >= 0, got {max_new_tokens}")
    expect(idx.dim() == 2 and idx.shape[1] > 0, "the prompt must hold at least one token")
    return _stream(model, idx, max_new_tokens, temperature, top_k, top_p, generator)


@torch.inference_mode()
def _stream(model, idx, max_new_tokens, temperature, top_k, top_p, generator):
    state = model.init_state(idx.shape[0])
    for t in range(idx.shape[1]):
        logits, state = model.step(idx[:, t], state)
    for i in range(max_new_tokens):
        token = sample_next_token(logits, temperature, top_k, top_p, generator)
        yield token
        if i + 1 < max_new_tokens:
            logits, state = model.step(token[:, 0], state)
