"""State dicts saved by the TCN authors' code (locuslab/TCN) into archlab's :class:`TCN`.

Their ``TemporalConvNet`` names block i ``network.{i}``, with ``conv1`` and ``conv2``
normalised by the old ``torch.nn.utils.weight_norm`` (tensors ``weight_g`` = g and
``weight_v`` = v), an optional 1 x 1 ``downsample``, and the task model's output layer
``linear``; the task models hold the network as ``tcn``.  Each block also registers its
convolutions a second time inside ``net`` (``net.0`` is ``conv1``, ``net.4`` is
``conv2``), so those keys repeat tensors already read and are skipped.  archlab's
``torch.nn.utils.parametrizations.weight_norm`` keeps g as ``original0`` and v as
``original1``.

:class:`AuthorsTCN` is the authors' form written out -- each convolution padded by
(k - 1) d on both sides, the right end chomped off, the old-style weight norm -- the
reference that the parity tests and ``archlab bench seq`` hold archlab's TCN against.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from archlab.errors import ConfigError
from archlab.interop.hf import expand_key_map, import_state, strip_prefix

if TYPE_CHECKING:
    from archlab.models.tcn import TCN, TCNConfig

KEYS = {
    "blocks.{}.conv1.conv.parametrizations.weight.original0": "network.{}.conv1.weight_g",
    "blocks.{}.conv1.conv.parametrizations.weight.original1": "network.{}.conv1.weight_v",
    "blocks.{}.conv1.conv.bias": "network.{}.conv1.bias",
    "blocks.{}.conv2.conv.parametrizations.weight.original0": "network.{}.conv2.weight_g",
    "blocks.{}.conv2.conv.parametrizations.weight.original1": "network.{}.conv2.weight_v",
    "blocks.{}.conv2.conv.bias": "network.{}.conv2.bias",
    "blocks.{}.downsample.weight": "network.{}.downsample.weight",
    "blocks.{}.downsample.bias": "network.{}.downsample.bias",
    "out.weight": "linear.weight",
    "out.bias": "linear.bias",
}


def from_authors(state_dict: Mapping[str, Tensor], config: TCNConfig, cls: type[TCN]) -> TCN:
    """Build ``cls(config)`` and load the authors' tensors into it, checking every shape."""
    if config.vocab_size:
        raise ConfigError("the TCN authors' models read real-valued inputs: set vocab_size: 0")
    model = cls(config)
    expected = model.state_dict()
    key_map = {
        ours: theirs
        for ours, theirs in expand_key_map(KEYS, len(config.channels)).items()
        if ours in expected  # a block without a downsample has no such tensors
    }
    theirs = strip_prefix(state_dict, "tcn.")
    model.load_state_dict(
        import_state(theirs, key_map, expected, source="the TCN authors' state dict")
    )
    return model


class Chomp(nn.Module):
    """Drops the last ``size`` steps: what the right padding added."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, : -self.size].contiguous()


class AuthorsBlock(nn.Module):
    """Their ``TemporalBlock``: pad both sides by (k-1)d, chomp the right; old weight norm."""

    def __init__(self, n_in: int, n_out: int, k: int, d: int, dropout: float = 0.0) -> None:
        super().__init__()
        pad = (k - 1) * d
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.nn.utils.weight_norm is deprecated
            self.conv1 = nn.utils.weight_norm(nn.Conv1d(n_in, n_out, k, padding=pad, dilation=d))
            self.conv2 = nn.utils.weight_norm(nn.Conv1d(n_out, n_out, k, padding=pad, dilation=d))
        self.net = nn.Sequential(
            self.conv1, Chomp(pad), nn.ReLU(), nn.Dropout(dropout),
            self.conv2, Chomp(pad), nn.ReLU(), nn.Dropout(dropout),
        )  # fmt: skip
        self.downsample = nn.Conv1d(n_in, n_out, 1) if n_in != n_out else None
        if self.downsample is not None:
            self.downsample.weight.data.normal_(0, 0.01)

    def forward(self, x: Tensor) -> Tensor:
        res = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.net(x) + res)


class AuthorsTCN(nn.Module):
    """Their task model: ``tcn.network`` of blocks (dilation 2^i), then ``linear`` at every step."""

    def __init__(
        self, n_in: int, n_out: int, channels: list[int], k: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        widths = [n_in, *channels]
        self.tcn = nn.Module()
        self.tcn.network = nn.Sequential(
            *(
                AuthorsBlock(widths[i], widths[i + 1], k, 2**i, dropout)
                for i in range(len(channels))
            )
        )
        self.linear = nn.Linear(channels[-1], n_out)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, time, n_in) -> (batch, time, n_out)."""
        return self.linear(self.tcn.network(x.transpose(1, 2)).transpose(1, 2))
