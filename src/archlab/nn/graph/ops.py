"""Graph operations on an ``edge_index``: checks, self-loops, normalisation, scatter, softmax.

A graph of ``N`` nodes is given by ``edge_index`` of shape (2, E): row 0 holds each
edge's source ``j``, row 1 its target ``i``, and messages flow j -> i (PyTorch
Geometric's ``source_to_target`` convention).  Every operation here is a tensor
op over all edges at once; none loops over nodes or edges in Python.

    gcn_norm:           Â = D^-1/2 (A + I) D^-1/2,   d_i = sum_j (A + I)_ij
    scatter:            out_i = reduce_{e: index(e) = i} src_e   (sum, mean or max)
    segment_softmax:    alpha_ij = exp(e_ij - max_k e_ik) / sum_k exp(e_ik - max_k e_ik),
                        k over the sources of the edges into i
    reverse_edge_index: rev(e) = e' with e = (j -> i), e' = (i -> j)
"""

from __future__ import annotations

import torch
from torch import Tensor

from archlab.errors import ShapeError

REDUCTIONS = ("sum", "mean", "max")


def check_graph(
    x: Tensor | None,
    edge_index: Tensor,
    num_nodes: int | None = None,
    features: int | None = None,
) -> int:
    """Validate a graph's tensors (and the feature width) and return its node count.

    Anything wrong gets one clear error here, not a crash deep inside a scatter.
    """
    if num_nodes is None:
        if x is None:
            raise ShapeError("the number of nodes is needed when no node features are given")
        num_nodes = x.shape[0]
    if x is not None and x.dim() != 2:
        raise ShapeError(f"node features must be (nodes, features), got shape {tuple(x.shape)}")
    if x is not None and features is not None and x.shape[1] != features:
        raise ShapeError(f"the model expects {features} node features, got {x.shape[1]}")
    if num_nodes == 0:
        raise ShapeError("the graph is empty: it has no nodes")
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        shape = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index)
        raise ShapeError(f"edge_index must have shape (2, edges), got {shape}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise ShapeError(f"edge_index must hold integer node ids, got dtype {edge_index.dtype}")
    if edge_index.numel():
        low, high = int(edge_index.min()), int(edge_index.max())
        if low < 0 or high >= num_nodes:
            bad = low if low < 0 else high
            raise ShapeError(
                f"edge_index refers to node {bad}, but the graph has nodes 0..{num_nodes - 1}"
            )
    return num_nodes


def remove_self_loops(
    edge_index: Tensor, edge_weight: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    keep = edge_index[0] != edge_index[1]
    return edge_index[:, keep], None if edge_weight is None else edge_weight[keep]


def add_self_loops(
    edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None, fill: float = 1.0
) -> tuple[Tensor, Tensor | None]:
    """Append one loop i -> i per node (existing loops are kept as they are)."""
    loops = torch.arange(num_nodes, device=edge_index.device).to(edge_index.dtype).repeat(2, 1)
    edge_index = torch.cat([edge_index, loops], dim=1)
    if edge_weight is not None:
        edge_weight = torch.cat([edge_weight, edge_weight.new_full((num_nodes,), fill)])
    return edge_index, edge_weight


def add_remaining_self_loops(
    edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None, fill: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Exactly one loop per node: an existing loop keeps its weight, a missing one gets ``fill``."""
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.shape[1], device=edge_index.device)
    is_loop = edge_index[0] == edge_index[1]
    loop_weight = edge_weight.new_full((num_nodes,), fill)
    loop_weight[edge_index[0, is_loop]] = edge_weight[is_loop]
    loops = torch.arange(num_nodes, device=edge_index.device).to(edge_index.dtype).repeat(2, 1)
    return (
        torch.cat([edge_index[:, ~is_loop], loops], dim=1),
        torch.cat([edge_weight[~is_loop], loop_weight]),
    )


def gcn_norm(
    edge_index: Tensor,
    num_nodes: int,
    edge_weight: Tensor | None = None,
    self_loops: bool = True,
) -> tuple[Tensor, Tensor]:
    """Edges of Â = D^-1/2 (A + I) D^-1/2 and their weights (Kipf & Welling 2017, eq. 2)."""
    if self_loops:
        edge_index, edge_weight = add_remaining_self_loops(edge_index, num_nodes, edge_weight)
    elif edge_weight is None:
        edge_weight = torch.ones(edge_index.shape[1], device=edge_index.device)
    source, target = edge_index
    degree = scatter(edge_weight, target, num_nodes, "sum")
    d_inv_sqrt = degree.pow(-0.5).masked_fill(degree == 0, 0.0)
    return edge_index, d_inv_sqrt[source] * edge_weight * d_inv_sqrt[target]


def scatter(src: Tensor, index: Tensor, num_nodes: int, reduce: str = "sum") -> Tensor:
    """Reduce the rows of ``src`` that share an ``index`` into row ``index`` of the output.

    Rows of the output that receive nothing are 0 for every reduction.
    """
    shape = (num_nodes, *src.shape[1:])
    if reduce == "sum":
        return src.new_zeros(shape).index_add_(0, index, src)
    if reduce == "mean":
        total = src.new_zeros(shape).index_add_(0, index, src)
        count = torch.bincount(index, minlength=num_nodes).clamp_(min=1).to(src.dtype)
        return total / count.view(-1, *[1] * (src.dim() - 1))
    if reduce == "max":
        index = index.view(-1, *[1] * (src.dim() - 1)).expand_as(src)
        return src.new_zeros(shape).scatter_reduce_(0, index, src, "amax", include_self=False)
    raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")


def segment_softmax(
    scores: Tensor, index: Tensor, num_nodes: int, counts: Tensor | None = None
) -> Tensor:
    """Softmax of ``scores`` (E, ...) over the edges that share a target ``index``.

    With ``counts`` (edges per target), ``index`` must be sorted: the reductions
    then stream over contiguous segments (``segment_reduce``), several times faster
    than scattering into random rows.
    """
    if counts is None:
        peak = scatter(scores.detach(), index, num_nodes, "max")
        exp = (scores - peak.index_select(0, index)).exp()
        total = scatter(exp, index, num_nodes, "sum")
    else:
        peak = torch.segment_reduce(scores.detach(), "max", lengths=counts, axis=0)
        exp = (scores - peak.index_select(0, index)).exp()  # empty segments select nothing
        total = torch.segment_reduce(exp, "sum", lengths=counts, axis=0)
    return exp / total.index_select(0, index).clamp_min(1e-16)


def reverse_edge_index(edge_index: Tensor, num_nodes: int) -> Tensor:
    """rev (E,) such that edge ``rev[e]`` is edge ``e`` reversed: j -> i for e = i -> j.

    For directed-edge models (D-MPNN) on graphs that store every edge in both
    directions; found by sorting the edges' (source, target) keys, with no loop.
    """
    source, target = edge_index.long()
    key, reverse_key = source * num_nodes + target, target * num_nodes + source
    order = torch.argsort(key)
    position = torch.searchsorted(key[order], reverse_key).clamp_(max=max(key.numel() - 1, 0))
    rev = order[position]
    if not torch.equal(key[rev], reverse_key):
        e = int((key[rev] != reverse_key).nonzero()[0])
        raise ShapeError(
            f"edge {e} ({int(source[e])} -> {int(target[e])}) has no reverse edge; directed-edge "
            "models need every edge in both directions"
        )
    return rev
