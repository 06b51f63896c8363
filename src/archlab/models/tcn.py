"""Temporal convolutional network (Bai, Kolter & Koltun 2018, "An Empirical Evaluation of
Generic Convolutional and Recurrent Networks for Sequence Modeling"; code: locuslab/TCN).

A causal dilated convolution with kernel k and dilation d over inputs x (channels, time):

    (W *_d x)_t = b + sum_{j=0}^{k-1} W_j x_{t - (k-1-j) d},      x_t = 0 for t < 1

so the output at t sees x_t and the (k-1) d steps before it, never later ones.  Its
weight is weight-normalised (Salimans & Kingma 2016): W = g v / ||v||, one g per
output channel.  Residual block i (dilation d = 2^i, widths c_{i-1} -> c_i):

    z = Dropout(ReLU(W1 *_d x));   z = Dropout(ReLU(W2 *_d z))
    o = ReLU(z + x)                  (or z + W_1x1 x when the widths differ)

L blocks see 1 + 2 (k - 1) (2^L - 1) steps back (:attr:`TCN.receptive_field`); a
linear layer maps the last block's channels at every step to ``out_dim`` outputs.

The convolution pads (k - 1) d zeros on the left only; the authors pad both sides and
chomp the right, which gives the same outputs for more work.  Their initialisation is
kept as it acts: ``init_weights`` sets ``conv.weight`` after ``weight_norm`` has
replaced it by g and v, which the next forward recomputes, so the convolutions keep
PyTorch's default initialisation (and g = ||v||); the 1 x 1 convolutions and the
output layer are drawn from N(0, 0.01^2).  Checkpoints saved by the authors' code
(``weight_g`` / ``weight_v`` keys) load with :meth:`TCN.from_authors`.

Fast causal inference: :meth:`TCN.step` takes one input and keeps, per convolution,
a ring of the last (k - 1) d + 1 inputs it has seen, from which it reads only the k
that the output uses, so a step costs the same however long the history, and gives
exactly what a forward over the whole prefix gives at its last step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from archlab.config import AtLeast, Config, Count, Probability, Size
from archlab.errors import ConfigError
from archlab.models import roles
from archlab.nn.sequence import SequenceInput
from archlab.registry import register_model


@dataclass
class TCNConfig(Config):
    """Defaults are the authors' sequential-MNIST TCN (8 levels of 25 channels, k = 7)."""

    in_dim: Size = 1  # input features per step (the embedding size when vocab_size > 0)
    vocab_size: Count = 0  # > 0: inputs are token ids, embedded into in_dim features
    channels: list[Size] = field(default_factory=lambda: [25] * 8)  # one entry per level
    kernel_size: Annotated[int, AtLeast(2)] = 7
    dropout: Probability = 0.0  # after each convolution's ReLU
    input_dropout: Probability = 0.0  # on embedded tokens (the authors' character model: 0.1)
    out_dim: Size = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.channels:
            raise ConfigError(f"{self.key('channels')} must list one width per level, got []")


class CausalConv1d(nn.Module):
    """Weight-normalised causal dilated convolution: (W *_d x)_t sees x_{t-(k-1)d} .. x_t."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv = weight_norm(nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation))
        self.history = (kernel_size - 1) * dilation  # past inputs each output reads
        # step by step, x_s sits in slot s mod (history + 1) of a ring; at slot p the
        # output reads the slots of x_{t-(k-1)d}, ..., x_{t-d}, x_t: taps[p]
        ring = self.history + 1
        lags = dilation * torch.arange(kernel_size - 1, -1, -1)
        taps = (torch.arange(ring)[:, None] - lags) % ring
        self.register_buffer("taps", taps, persistent=False)  # (history + 1, k)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, c_in, time) -> (batch, c_out, time)."""
        return self.conv(F.pad(x, (self.history, 0)))

    def step(self, x_t: Tensor, ring: Tensor, t: int) -> Tensor:
        """The output (batch, c_out) at step t, writing x_t (batch, c_in) into ``ring``.

        ``ring`` (batch, c_in, history + 1) holds the last inputs, x_s in slot
        s mod (history + 1), zeros before the first (the left padding).  Only the k
        inputs the output reads are gathered: one matrix product with W flattened to
        (c_out, c_in k), whatever the dilation.
        """
        p = t % ring.shape[2]
        ring[:, :, p] = x_t
        taps = ring.index_select(2, self.taps[p])  # (batch, c_in, k)
        return F.linear(taps.flatten(1), self.conv.weight.flatten(1), self.conv.bias)


class TemporalBlock(nn.Module):
    """o = ReLU(Dropout(ReLU(W2 *_d Dropout(ReLU(W1 *_d x)))) + x or W_1x1 x)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.conv1 = CausalConv1d(c_in, c_out, kernel_size, dilation)
        self.conv2 = CausalConv1d(c_out, c_out, kernel_size, dilation)
        self.dropout = nn.Dropout(dropout)
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None
        if self.downsample is not None:
            nn.init.normal_(self.downsample.weight, 0.0, 0.01)

    def _residual(self, x: Tensor) -> Tensor:
        return x if self.downsample is None else self.downsample(x)

    def forward(self, x: Tensor) -> Tensor:
        z = self.dropout(F.relu(self.conv1(x)))
        z = self.dropout(F.relu(self.conv2(z)))
        return F.relu(z + self._residual(x))

    def step(self, x_t: Tensor, rings: tuple[Tensor, Tensor], t: int) -> Tensor:
        z = F.relu(self.conv1.step(x_t, rings[0], t))
        z = F.relu(self.conv2.step(z, rings[1], t))
        if self.downsample is not None:
            x_t = F.linear(x_t, self.downsample.weight.squeeze(2), self.downsample.bias)
        return F.relu(z + x_t)


@dataclass
class TCNState:
    """Step-by-step state: the steps taken, and per block its two convolutions' rings."""

    t: int
    rings: list[tuple[Tensor, ...]]


@register_model("tcn", TCNConfig, summary="Temporal convolutional network (Bai et al. 2018)")
class TCN(nn.Module):
    """Temporal convolutional network: residual blocks of causal dilated convolutions."""

    role = roles.SequenceModel

    def __init__(self, config: TCNConfig) -> None:
        super().__init__()
        self.config = c = config
        self.input = SequenceInput(c.in_dim, c.vocab_size, c.input_dropout)
        widths = [c.in_dim, *c.channels]
        self.blocks = nn.ModuleList(
            TemporalBlock(widths[i], widths[i + 1], c.kernel_size, 2**i, c.dropout)
            for i in range(len(c.channels))
        )
        self.out = nn.Linear(c.channels[-1], c.out_dim)
        nn.init.normal_(self.out.weight, 0.0, 0.01)

    @property
    def receptive_field(self) -> int:
        """1 + 2 (k - 1) (2^L - 1): how many steps back the output at t can see."""
        k, levels = self.config.kernel_size, len(self.config.channels)
        return 1 + 2 * (k - 1) * (2**levels - 1)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Outputs (batch, time, out_dim) for inputs (batch, time[, in_dim]), causally.

        ``lengths`` is accepted for the sequence-model interface and not needed: the
        convolutions are causal, so right padding never reaches a real step's output.
        """
        h = self.input(x).transpose(1, 2)  # (batch, channels, time)
        for block in self.blocks:
            h = block(h)
        return self.out(h.transpose(1, 2))

    def init_state(self, batch: int) -> TCNState:
        """The state before the first step: zeros, the left padding of a full forward."""
        p = self.out.weight
        return TCNState(
            0,
            [
                tuple(p.new_zeros(batch, c.conv.in_channels, c.history + 1) for c in convs)
                for convs in ((b.conv1, b.conv2) for b in self.blocks)
            ],
        )

    def step(self, x_t: Tensor, state: TCNState | None = None) -> tuple[Tensor, TCNState]:
        """Outputs (batch, out_dim) for one step's inputs (batch[, in_dim]); state carried.

        The state is updated in place (as a KV cache is) and returned.  Call in eval
        mode (dropout off) for outputs equal to :meth:`forward`'s; wrap a loop in
        ``torch.nn.utils.parametrize.cached()`` so the weight norm is computed once,
        not at every step.
        """
        h = self.input.step(x_t)
        state = self.init_state(h.shape[0]) if state is None else state
        for block, rings in zip(self.blocks, state.rings, strict=True):
            h = block.step(h, rings, state.t)
        state.t += 1
        return self.out(h), state

    @classmethod
    def from_authors(cls, state_dict: Mapping[str, Tensor], config: TCNConfig) -> TCN:
        """A TCN with the weights of a state dict saved by the authors' code (locuslab/TCN).

        See :mod:`archlab.interop.locuslab_tcn` for the key map.
        """
        from archlab.interop import locuslab_tcn

        return locuslab_tcn.from_authors(state_dict, config, cls)
