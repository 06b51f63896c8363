"""Graph building blocks, by concern; every public name is re-exported here.

ops       checks, self-loops, gcn_norm, scatter, segment softmax, reverse edges
sparse    CSR patterns, SpMM and its backward, SparseTensor, EdgeList,
          dropout and linear maps on dense or sparse features
readout   sum / mean / max / attention pooling, one vector per graph
network   GraphNetwork (the layer stack GCN and GAT share), TensorCache
"""

from archlab.nn.graph.network import GraphNetwork, TensorCache
from archlab.nn.graph.ops import (
    REDUCTIONS,
    add_remaining_self_loops,
    add_self_loops,
    check_graph,
    gcn_norm,
    remove_self_loops,
    reverse_edge_index,
    scatter,
    segment_softmax,
)
from archlab.nn.graph.readout import READOUTS, AttentionReadout, Readout, global_pool
from archlab.nn.graph.sparse import (
    BlockDiagonalPattern,
    EdgeList,
    SparsePattern,
    SparseTensor,
    as_features,
    dropout,
    edge_weighted_sum,
    linear,
    per_head_linear,
    spmm,
)

__all__ = [
    "READOUTS",
    "REDUCTIONS",
    "AttentionReadout",
    "BlockDiagonalPattern",
    "EdgeList",
    "GraphNetwork",
    "Readout",
    "SparsePattern",
    "SparseTensor",
    "TensorCache",
    "add_remaining_self_loops",
    "add_self_loops",
    "as_features",
    "check_graph",
    "dropout",
    "edge_weighted_sum",
    "gcn_norm",
    "global_pool",
    "linear",
    "per_head_linear",
    "remove_self_loops",
    "reverse_edge_index",
    "scatter",
    "segment_softmax",
    "spmm",
]
