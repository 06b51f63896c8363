"""GAT: graph attention network (Veličković et al., ICLR 2018).

Each head k scores every edge j -> i (self-loops included) and averages the
neighbours with the normalised scores:

    e_ij^k     = LeakyReLU_0.2( a_k^T [W_k h_i ‖ W_k h_j] )
    alpha_ij^k = softmax_j(e_ij^k)              (over the sources j of the edges into i)
    h_i'       = ‖_k  sum_j alpha_ij^k W_k h_j  (concat, hidden layers)
              or mean_k sum_j alpha_ij^k W_k h_j (mean, the output layer)

a_k^T [W h_i ‖ W h_j] splits into a_dst·W h_i + a_src·W h_j, so scores cost two
dot products per node, not one per edge.  Dropout (p = 0.6 in the paper) is
applied to each layer's input and to the attention coefficients.  The
aggregation is one sparse matmul per head forward and backward; the (edges x
features) message tensor is never built.

With ``readout`` set the model is graph-level (pooled node vectors and a linear
head), as in :mod:`archlab.models.gcn`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.errors import ConfigError
from archlab.nn.graph import (
    READOUTS,
    EdgeList,
    Readout,
    SparseTensor,
    TensorCache,
    add_self_loops,
    as_features,
    check_graph,
    dropout,
    edge_weighted_sum,
    linear,
    remove_self_loops,
    segment_softmax,
)
from archlab.registry import register_model


@dataclass
class GATConfig:
    in_dim: int = 1433
    hidden_dim: int = 8  # per head
    heads: int = 8  # in the hidden layers (concatenated)
    out_dim: int = 7
    out_heads: int = 1  # in the output layer (averaged)
    n_layer: int = 2
    dropout: float = 0.6  # on each layer's input
    attn_dropout: float = 0.6  # on the attention coefficients
    negative_slope: float = 0.2
    message_dropout: float = 0.0  # on W h_j as it is aggregated (the authors' code: = dropout)
    cached: bool = True  # keep the edge structure between calls on the same edge_index
    readout: str | None = None  # None: node-level; sum, mean, max or attention: graph-level

    def __post_init__(self) -> None:
        if self.n_layer < 1 or self.heads < 1 or self.out_heads < 1:
            raise ConfigError("model.n_layer, model.heads and model.out_heads must be at least 1")
        if self.readout is not None and self.readout not in READOUTS:
            raise ConfigError(f"model.readout must be one of {READOUTS} or null")


class GATConv(nn.Module):
    """One multi-head graph attention layer (Veličković et al., eqs. 1-6)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        heads: int,
        concat: bool = True,
        attn_dropout: float = 0.0,
        negative_slope: float = 0.2,
        message_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.heads, self.out_dim, self.concat = heads, out_dim, concat
        self.attn_dropout, self.negative_slope = attn_dropout, negative_slope
        self.message_dropout = message_dropout
        self.W = nn.Linear(in_dim, heads * out_dim, bias=False)
        self.a_src = nn.Parameter(torch.empty(heads, out_dim))
        self.a_dst = nn.Parameter(torch.empty(heads, out_dim))
        self.bias = nn.Parameter(torch.zeros(heads * out_dim if concat else out_dim))
        for weight in (self.W.weight, self.a_src, self.a_dst):
            nn.init.xavier_uniform_(weight)

    def forward(
        self, h: Tensor | SparseTensor, edges: EdgeList, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """New node features; with ``return_attention`` also alpha (edges, heads), edge order."""
        Wh = linear(h, self.W.weight).view(-1, self.heads, self.out_dim)
        score_src = (Wh * self.a_src).sum(-1)  # (nodes, heads)
        score_dst = (Wh * self.a_dst).sum(-1)
        pair = score_src.index_select(0, edges.source) + score_dst.index_select(0, edges.target)
        e = F.leaky_relu(pair, self.negative_slope).float()
        alpha = segment_softmax(e, edges.target, edges.num_nodes, edges.in_degree)
        messages = dropout(Wh, self.message_dropout, self.training)
        out = edge_weighted_sum(edges, dropout(alpha, self.attn_dropout, self.training), messages)
        out = out.flatten(1) if self.concat else out.mean(dim=1)
        out = out + self.bias
        return (out, alpha) if return_attention else out


@register_model("gat", GATConfig)
class GAT(nn.Module):
    """Graph attention network (Veličković et al. 2018), node- or graph-level."""

    def __init__(self, cfg: GATConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers = []
        in_dim = cfg.in_dim
        for _ in range(cfg.n_layer - 1):
            layers.append(self._conv(in_dim, cfg.hidden_dim, cfg.heads, concat=True))
            in_dim = cfg.hidden_dim * cfg.heads
        if cfg.readout is None:  # output layer: out_heads averaged
            layers.append(self._conv(in_dim, cfg.out_dim, cfg.out_heads, concat=False))
        else:
            layers.append(self._conv(in_dim, cfg.hidden_dim, cfg.heads, concat=True))
            self.readout = Readout(cfg.readout, cfg.hidden_dim * cfg.heads)
            self.head = nn.Linear(cfg.hidden_dim * cfg.heads, cfg.out_dim)
        self.layers = nn.ModuleList(layers)
        self._edges = TensorCache(cfg.cached)
        self._features = TensorCache(cfg.cached)

    def _conv(self, in_dim: int, out_dim: int, heads: int, concat: bool) -> GATConv:
        cfg = self.cfg
        return GATConv(
            in_dim, out_dim, heads, concat, cfg.attn_dropout, cfg.negative_slope,
            cfg.message_dropout,
        )  # fmt: skip

    def edges(self, edge_index: Tensor, num_nodes: int) -> EdgeList:
        """The edges with exactly one self-loop per node, as PyG's GATConv uses them."""

        def build() -> EdgeList:
            return EdgeList(
                add_self_loops(remove_self_loops(edge_index)[0], num_nodes)[0], num_nodes
            )

        return self._edges.get(edge_index, build)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        batch: Tensor | None = None,
        num_graphs: int | None = None,
    ) -> Tensor:
        """Node outputs (nodes, out_dim); with a readout, graph outputs (num_graphs, out_dim)."""
        num_nodes = check_graph(x, edge_index, features=self.cfg.in_dim)
        edges = self.edges(edge_index, num_nodes)
        h = self._features.get(x, lambda: as_features(x))
        for n, layer in enumerate(self.layers):
            h = layer(dropout(h, self.cfg.dropout, self.training), edges)
            if n < len(self.layers) - 1 or self.cfg.readout is not None:
                h = F.elu(h)
        if self.cfg.readout is None:
            return h
        return self.head(self.readout(h, batch, num_graphs))
