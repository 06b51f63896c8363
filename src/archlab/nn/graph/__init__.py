"""Graph building blocks, by concern; every public name is re-exported here.

    ops       checks, self-loops, gcn_norm, scatter, segment softmax, reverse edges
    sparse    CSR patterns, SpMM and its backward, SparseTensor, EdgeList,
              dropout and linear maps on dense or sparse features
    readout   sum / mean / max / attention pooling, one vector per graph
    network   GraphNetwork (the layer stack GCN and GAT share), TensorCache

Importing this package changes no global state (no warnings filters).
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
    CSR_BETA_NOTICE,
    BlockDiagonalPattern,
    EdgeList,
    SparsePattern,
    SparseTensor,
    as_features,
    csr_tensor,
    dropout,
    edge_weighted_sum,
    linear,
    per_head_linear,
    spmm,
    to_sparse_csr,
)

__all__ = [
    "CSR_BETA_NOTICE",
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
    "csr_tensor",
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
    "to_sparse_csr",
]
