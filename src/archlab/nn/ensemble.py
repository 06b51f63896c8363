"""An ensemble of independently initialised copies of a model (chemprop's ``--ensemble_size``).

    f(x) = 1/M sum_{m=1..M} f_m(x)

The members share no weights and start from different random initialisations
(each drawn in turn from the generator).  :meth:`Ensemble.each` gives every member's
output stacked on a new first axis.  A task trains on the mean of the members' own
losses, mean_m L(f_m(x_m), y_m), each member on its own batches, so each member's
gradient is the one it would get trained alone, scaled by 1/M, and only their
predictions are averaged.  What stays joint: one checkpoint and one early stop,
chosen on the ensemble's validation score (chemprop keeps each member's own best
epoch), and gradient clipping by the global norm, if set.  Training on
L(f(x), y) instead would let the members co-adapt into one wide model and lose the
variance reduction that makes an ensemble worth its cost.
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
