"""An ensemble of independently initialised copies of a model (chemprop's ``--ensemble_size``).

    f(x) = 1/M sum_{m=1..M} f_m(x)

The members share no weights and start from different random initialisations
(each drawn in turn from the generator).  :meth:`Ensemble.each` gives every member's
output stacked on a new first axis; a task trains on the mean of the members' own
losses, mean_m L(f_m(x), y), so each member learns as if it were trained alone
(with its own dropout masks, on the same batches), and only their predictions are
averaged.  Training on L(f(x), y) instead would let the members co-adapt into one
wide model and lose the variance reduction that makes an ensemble worth its cost.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class Ensemble(nn.Module):
    """M members built by ``make``; forward is their mean, :meth:`each` their stack."""

    def __init__(self, make: Callable[[], nn.Module], members: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(make() for _ in range(members))

    def each(self, *args, **kwargs) -> Tensor:
        """Every member's output, (M, *output shape)."""
        return torch.stack([member(*args, **kwargs) for member in self.members])

    def forward(self, *args, **kwargs) -> Tensor:
        return self.each(*args, **kwargs).mean(0)


class EachMember(nn.Module):
    """A model seen through :meth:`Ensemble.each` (a task's ``train_module``)."""

    def __init__(self, ensemble: Ensemble) -> None:
        super().__init__()
        self.ensemble = ensemble

    def forward(self, *args, **kwargs) -> Tensor:
        return self.ensemble.each(*args, **kwargs)
