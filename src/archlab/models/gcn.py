"""GCN: graph convolutional network (Kipf & Welling, ICLR 2017).

One layer propagates each node's features to its neighbours with the
renormalised adjacency and a shared weight:

    H' = Â H W + b,        Â = D̃^-1/2 (A + I) D̃^-1/2,   D̃_ii = sum_j (A + I)_ij

and the two-layer model of the paper (eq. 9) is

    Z = softmax(Â ReLU(Â X W^(0)) W^(1)).

Â is constant for a fixed graph, so it is built once as a sparse CSR matrix and
each propagation is one sparse-dense matmul; with ``cached`` the model keeps it
between calls on the same ``edge_index`` (transductive training).  Bag-of-words
inputs may be given as a sparse CSR matrix: dropout then touches only the stored
non-zeros and X W^(0) is a sparse matmul, as in Kipf's original code.

With ``readout`` set the model is graph-level: node vectors of each graph in a
batch are pooled (sum, mean, max or attention) and a linear head maps the pooled
vector to ``out_dim`` outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn

from archlab.config import Config, OneOf, Probability, Size
from archlab.models import roles
from archlab.nn.graph import (
    READOUTS,
    EdgeList,
    GraphNetwork,
    SparseTensor,
    dropout,
    gcn_norm,
    linear,
)
from archlab.registry import register_model


@dataclass
class GCNConfig(Config):
    in_dim: Size = 1433
    hidden_dim: Size = 16
    out_dim: Size = 7
    n_layer: Size = 2  # graph convolutions
    dropout: Probability = 0.5  # on the input of every convolution
    self_loops: bool = True
    cached: bool = True  # keep Â between calls on the same edge_index
    # None: node-level; sum, mean, max or attention: graph-level
    readout: Annotated[str, OneOf(READOUTS)] | None = None


class GCNConv(nn.Module):
    """H' = Â dropout(H) W + b (Kipf & Welling, eq. 2; the input dropout as in their code)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = dropout
        self.W = nn.Linear(in_dim, out_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        nn.init.xavier_uniform_(self.W.weight)  # Glorot, as the paper

    def forward(self, h: Tensor | SparseTensor, A_hat: SparseTensor) -> Tensor:
        h = dropout(h, self.dropout, self.training)
        return A_hat @ linear(h, self.W.weight) + self.bias


@register_model("gcn", GCNConfig)
class GCN(GraphNetwork):
    """Graph convolutional network (Kipf & Welling 2017), node- or graph-level."""

    role = roles.NodeModel

    def __init__(self, config: GCNConfig) -> None:
        c = config
        node_out = c.out_dim if c.readout is None else c.hidden_dim
        dims = [c.in_dim] + [c.hidden_dim] * (c.n_layer - 1) + [node_out]
        layers = [GCNConv(a, b, c.dropout) for a, b in zip(dims, dims[1:], strict=False)]
        super().__init__(layers, torch.relu, c.in_dim, c.readout, c.hidden_dim, c.out_dim, c.cached)
        self.config = config

    def build_graph(self, edge_index: Tensor, num_nodes: int) -> SparseTensor:
        """Â of this graph as a sparse matrix."""
        edges, weight = gcn_norm(edge_index, num_nodes, self_loops=self.config.self_loops)
        pattern = EdgeList(edges, num_nodes)
        return SparseTensor(pattern, weight[pattern.order])
