"""State dicts saved by the TCN authors' code (locuslab/TCN) into archlab's :class:`TCN`.

Their ``TemporalConvNet`` names block i ``network.{i}``, with ``conv1`` and ``conv2``
normalised by the old ``torch.nn.utils.weight_norm`` (tensors ``weight_g`` = g and
``weight_v`` = v), an optional 1 x 1 ``downsample``, and the task model's output layer
``linear``; the task models hold the network as ``tcn``.  Each block also registers its
convolutions a second time inside ``net`` (``net.0`` is ``conv1``, ``net.4`` is
``conv2``), so those keys repeat tensors already read and are skipped.  archlab's
``torch.nn.utils.parametrizations.weight_norm`` keeps g as ``original0`` and v as
``original1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from torch import Tensor

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
