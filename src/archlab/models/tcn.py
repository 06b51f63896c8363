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
a ring of the last k d inputs it has seen, laid out so that the k the output reads
are side by side: x_s sits in row s mod d, column (s div d) mod k, so the inputs
x_t, x_{t-d}, ..., x_{t-(k-1)d} fill row t mod d, in an order that rotates with t.
One matrix product with W, its taps rotated to match (k arrangements, made once in
:meth:`TCN.init_state`), gives the output: a step costs the same however long the
history, and gives what a forward over the whole prefix gives at its last step.
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
        self.kernel_size, self.dilation = kernel_size, dilation
        self.history = (kernel_size - 1) * dilation  # past inputs each output reads
        # ring column m holds the input of lag (m_t - m) mod k when x_t is in column m_t;
        # lag j meets W_{k-1-j}: tap_order[m_t, m] is the index of W that column m meets
        m = torch.arange(kernel_size)
        tap_order = kernel_size - 1 - (m[:, None] - m[None, :]) % kernel_size
        self.register_buffer("tap_order", tap_order, persistent=False)  # (k, k)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, c_in, time) -> (batch, c_out, time)."""
        return self.conv(F.pad(x, (self.history, 0)))

    def init_state(self, batch: int) -> ConvState:
        """A zero ring (the left padding) and W in its k arrangements, for :meth:`step`."""
        w = self.conv.weight  # (c_out, c_in, k), the weight norm computed once
        k, c_in = self.kernel_size, w.shape[1]
        # rotated[m_t][(m, c), o] = W[o, c, tap_order[m_t, m]]
        rotated = w[:, :, self.tap_order].permute(2, 3, 1, 0).reshape(k, k * c_in, -1)
        ring = w.new_zeros(batch, self.dilation, k, c_in)
        return ConvState(ring, rotated.unbind(0), self.conv.bias)

    def step(self, x_t: Tensor, state: ConvState, t: int) -> Tensor:
        """The output (batch, c_out) at step t, writing x_t (batch, c_in) into the ring.

        The ring (batch, d, k, c_in) holds x_s at [s mod d, (s div d) mod k], zeros
        before the first step; row t mod d is then the k inputs the output reads.
        """
        row, column = t % self.dilation, (t // self.dilation) % self.kernel_size
        state.ring[:, row, column] = x_t
        taps = state.ring[:, row].flatten(1)  # (batch, k c_in), a view
        if torch.is_grad_enabled():  # autograd keeps taps; the ring changes at the next step
            taps = taps.clone()
        return torch.addmm(state.bias, taps, state.weights[column])


@dataclass
class ConvState:
    """One convolution's step state: its ring of inputs, and W arranged for each step."""

    ring: Tensor  # (batch, d, k, c_in)
    weights: tuple[Tensor, ...]  # k matrices (k c_in, c_out), one per column of x_t
    bias: Tensor


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

    def init_state(self, batch: int) -> BlockState:
        down = None
        if self.downsample is not None:
            down = (self.downsample.weight.squeeze(2).t(), self.downsample.bias)
        return BlockState(self.conv1.init_state(batch), self.conv2.init_state(batch), down)

    def step(self, x_t: Tensor, state: BlockState, t: int) -> Tensor:
        z = self.conv1.step(x_t, state.conv1, t).relu_()
        z = self.conv2.step(z, state.conv2, t).relu_()
        if state.downsample is not None:
            x_t = torch.addmm(state.downsample[1], x_t, state.downsample[0])
        return (z + x_t).relu_()


@dataclass
class BlockState:
    """A block's step state: its two convolutions', and the 1 x 1 residual's (W^T, b)."""

    conv1: ConvState
    conv2: ConvState
    downsample: tuple[Tensor, Tensor] | None


@dataclass
class TCNState:
    """Step-by-step state: the steps taken, and each block's state.

    It holds the weights as they were when :meth:`TCN.init_state` made it (weight
    norm applied, taps arranged): start a new state after changing the weights.
    """

    t: int
    blocks: list[BlockState]


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
        """The state before the first step: zero rings, the left padding of a full forward."""
        return TCNState(0, [block.init_state(batch) for block in self.blocks])

    def step(self, x_t: Tensor, state: TCNState | None = None) -> tuple[Tensor, TCNState]:
        """Outputs (batch, out_dim) for one step's inputs (batch[, in_dim]); state carried.

        The state is updated in place (as a KV cache is) and returned.  Dropout is
        never applied, so the outputs equal :meth:`forward`'s in eval mode.  Run the
        loop under ``torch.inference_mode()`` (or ``no_grad``) when no gradient is
        wanted.
        """
        h = self.input.step(x_t)
        state = self.init_state(h.shape[0]) if state is None else state
        for block, block_state in zip(self.blocks, state.blocks, strict=True):
            h = block.step(h, block_state, state.t)
        state.t += 1
        return self.out(h), state

    @classmethod
    def from_authors(cls, state_dict: Mapping[str, Tensor], config: TCNConfig) -> TCN:
        """A TCN with the weights of a state dict saved by the authors' code (locuslab/TCN).

        See :mod:`archlab.interop.locuslab_tcn` for the key map.
        """
        from archlab.interop import locuslab_tcn

        return locuslab_tcn.from_authors(state_dict, config, cls)
