"""GAT: graph attention network (Veličković et al., ICLR 2018).

Each head k scores every edge j -> i (self-loops included) and averages the
neighbours with the normalised scores:

    e_ij^k     = LeakyReLU_0.2( a_k^T [W_k h_i ‖ W_k h_j] )
    alpha_ij^k = softmax_j(e_ij^k)              (over the sources j of the edges into i)
    h_i'       = ‖_k  sum_j alpha_ij^k W_k h_j  (concat, hidden layers)
              or mean_k sum_j alpha_ij^k W_k h_j (mean, the output layer)

a_k^T [W h_i ‖ W h_j] splits into a_dst·W h_i + a_src·W h_j, so scores cost two
dot products per node, not one per edge.  The authors' code computes each half
with a biased 1x1 convolution, so its scores are LeakyReLU(a_k^T [W h_i ‖ W h_j] + b_k):
``attention_bias`` adds that b_k (one per head, the sum of the two biases; zero
at the start).  It moves the LeakyReLU's kink, so it changes alpha, unlike a
shift after it.  PyG's GATConv has no such bias, and the default follows PyG.

Dropout (p = 0.6 in the paper) is applied to each layer's input and to the attention
coefficients. The authors' code drops the input inside each attention head, so every
head sees its own mask: with ``per_head_dropout`` the h of W_k h is head k's own dropped
copy (one block-diagonal sparse matmul for all heads on bag-of-words input). Their code
also drops W_k h_j as it is aggregated (``message_dropout``). The aggregation is one
sparse matmul per head forward and backward; the (edges x features) message tensor is
never built.

With ``readout`` set the model is graph-level (pooled node vectors and a linear
head), as in :mod:`archlab.models.gcn`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Config, NonNegativeFloat, OneOf, Probability, Size
from archlab.models import roles
from archlab.nn.graph import (
    READOUTS,
    EdgeList,
    GraphNetwork,
    SparseTensor,
    add_self_loops,
    dropout,
    edge_weighted_sum,
    linear,
    per_head_linear,
    remove_self_loops,
    segment_softmax,
)
from archlab.registry import register_model


@dataclass
class GATConfig(Config):
    in_dim: Size = 1433
    hidden_dim: Size = 8  # per head
    heads: Size = 8  # in the hidden layers (concatenated)
    out_dim: Size = 7
    out_heads: Size = 1  # in the output layer (averaged)
    n_layer: Size = 2
    dropout: Probability = 0.6  # on each layer's input
    attn_dropout: Probability = 0.6  # on the attention coefficients
    negative_slope: NonNegativeFloat = 0.2
    # on W h_j as it is aggregated (the authors' code: = dropout)
    message_dropout: Probability = 0.0
    per_head_dropout: bool = False  # each head its own input mask (the authors' code: True)
    attention_bias: bool = False  # b_k inside the LeakyReLU of the scores (the authors' code)
    cached: bool = True  # keep the edge structure between calls on the same edge_index
    # None: node-level; sum, mean, max or attention: graph-level
    readout: Annotated[str, OneOf(READOUTS)] | None = None


class GATConv(nn.Module):
    """One multi-head graph attention layer (Veličković et al., eqs. 1-6), input dropout first."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        heads: int,
        concat: bool = True,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        negative_slope: float = 0.2,
        message_dropout: float = 0.0,
        per_head_dropout: bool = False,
        attention_bias: bool = False,
    ) -> None:
        super().__init__()
        self.heads, self.out_dim, self.concat = heads, out_dim, concat
        self.dropout, self.attn_dropout, self.negative_slope = dropout, attn_dropout, negative_slope
        self.message_dropout, self.per_head_dropout = message_dropout, per_head_dropout
        self.W = nn.Linear(in_dim, heads * out_dim, bias=False)
        self.a_src = nn.Parameter(torch.empty(heads, out_dim))
        self.a_dst = nn.Parameter(torch.empty(heads, out_dim))
        self.attn_bias = nn.Parameter(torch.zeros(heads)) if attention_bias else None
        self.bias = nn.Parameter(torch.zeros(heads * out_dim if concat else out_dim))
        for weight in (self.W.weight, self.a_src, self.a_dst):
            nn.init.xavier_uniform_(weight)

    def project(self, h: Tensor | SparseTensor) -> Tensor:
        """W_k h for every head k (nodes, heads, out_dim), h dropped out once or per head."""
        if self.per_head_dropout and self.heads > 1 and self.training and self.dropout > 0:
            return per_head_linear(h, self.W.weight, self.heads, self.dropout, self.training)
        h = dropout(h, self.dropout, self.training)
        return linear(h, self.W.weight).view(-1, self.heads, self.out_dim)

    def forward(
        self, h: Tensor | SparseTensor, edges: EdgeList, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """New node features; with ``return_attention`` also alpha (edges, heads), edge order."""
        Wh = self.project(h)
        score_src = (Wh * self.a_src).sum(-1)  # (nodes, heads)
        score_dst = (Wh * self.a_dst).sum(-1)
        pair = score_src.index_select(0, edges.source) + score_dst.index_select(0, edges.target)
        if self.attn_bias is not None:
            pair = pair + self.attn_bias
        e = F.leaky_relu(pair, self.negative_slope).float()
        alpha = segment_softmax(e, edges.target, edges.num_nodes, edges.in_degree)
        messages = dropout(Wh, self.message_dropout, self.training)
        out = edge_weighted_sum(edges, dropout(alpha, self.attn_dropout, self.training), messages)
        out = out.flatten(1) if self.concat else out.mean(dim=1)
        out = out + self.bias
        return (out, alpha) if return_attention else out


@register_model("gat", GATConfig)
class GAT(GraphNetwork):
    """Graph attention network (Veličković et al. 2018), node- or graph-level."""

    role = roles.NodeModel

    def __init__(self, config: GATConfig) -> None:
        c = config

        def conv(in_dim: int, out_dim: int, heads: int, concat: bool) -> GATConv:
            return GATConv(
                in_dim, out_dim, heads, concat, c.dropout, c.attn_dropout,
                c.negative_slope, c.message_dropout, c.per_head_dropout, c.attention_bias,
            )  # fmt: skip

        width = c.hidden_dim * c.heads
        layers, in_dim = [], c.in_dim
        for _ in range(c.n_layer - 1):
            layers.append(conv(in_dim, c.hidden_dim, c.heads, concat=True))
            in_dim = width
        if c.readout is None:  # output layer: out_heads averaged
            layers.append(conv(in_dim, c.out_dim, c.out_heads, concat=False))
        else:
            layers.append(conv(in_dim, c.hidden_dim, c.heads, concat=True))
        super().__init__(layers, F.elu, c.in_dim, c.readout, width, c.out_dim, c.cached)
        self.config = config

    def build_graph(self, edge_index: Tensor, num_nodes: int) -> EdgeList:
        """The edges with exactly one self-loop per node, as PyG's GATConv uses them."""
        edge_index = add_self_loops(remove_self_loops(edge_index)[0], num_nodes)[0]
        return EdgeList(edge_index, num_nodes)
