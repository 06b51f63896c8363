"""Readouts: one vector per graph of a batch.

A batch of graphs is one big disconnected graph plus ``batch`` (N,), the graph
index of each node.  A readout pools the node vectors h_v of each graph g:

    sum:        r_g = sum_{v in g} h_v
    mean:       r_g = 1/|g| sum_{v in g} h_v
    max:        r_g = max_{v in g} h_v                        (elementwise)
    attention:  r_g = sum_{v in g} softmax_v(w^T h_v) h_v      (Li et al. 2016)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from archlab.errors import ConfigError
from archlab.nn.graph.ops import scatter, segment_softmax

READOUTS = ("sum", "mean", "max", "attention")


def global_pool(x: Tensor, batch: Tensor, num_graphs: int, reduce: str = "sum") -> Tensor:
    """Sum, mean or max of the node vectors of each graph."""
    return scatter(x, batch, num_graphs, reduce)


class AttentionReadout(nn.Module):
    """Gated attention pooling (Li et al. 2016): r_g = sum_{v in g} softmax_v(w^T h_v) h_v."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, 1)

    def forward(self, x: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        weight = segment_softmax(self.gate(x), batch, num_graphs)
        return scatter(weight * x, batch, num_graphs, "sum")


class Readout(nn.Module):
    """One of :data:`READOUTS`, chosen by name."""

    def __init__(self, kind: str, dim: int) -> None:
        super().__init__()
        if kind not in READOUTS:
            raise ConfigError(f"readout must be one of {READOUTS}, got {kind!r}")
        self.kind = kind
        self.attention = AttentionReadout(dim) if kind == "attention" else None

    def forward(self, x: Tensor, batch: Tensor | None, num_graphs: int | None = None) -> Tensor:
        """(num_graphs, dim); ``batch`` None means all nodes form one graph."""
        if batch is None:
            batch, num_graphs = torch.zeros(x.shape[0], dtype=torch.long, device=x.device), 1
        num_graphs = num_graphs or int(batch.max()) + 1
        if self.attention is not None:
            return self.attention(x, batch, num_graphs)
        return global_pool(x, batch, num_graphs, self.kind)
