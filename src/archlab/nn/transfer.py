"""Starting a model from a pretrained one (fine-tuning, a recipe's ``model.init_from``)."""

from __future__ import annotations

from torch import nn

from archlab.errors import ConfigError


def load_shared_weights(
    model: nn.Module, pretrained: nn.Module, fields: tuple[str, ...], what: str
) -> list[str]:
    """Copy into ``model`` every tensor of ``pretrained`` that it has under the same name
    and shape (the trunk; a head of the same shape), and return the names left fresh.

    The two configs must agree on ``fields``, what the pretrained weights fix (sizes,
    activation, ...); ``what`` names the model in the error.
    """
    differ = [f for f in fields if getattr(model.config, f) != getattr(pretrained.config, f)]
    if differ:
        raise ConfigError(f"the pretrained {what} differs in {', '.join(differ)}")
    ours = model.state_dict()
    shared = {
        name: tensor
        for name, tensor in pretrained.state_dict().items()
        if name in ours and ours[name].shape == tensor.shape
    }
    model.load_state_dict(shared, strict=False)
    return sorted(set(ours) - set(shared))
