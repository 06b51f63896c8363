"""Graph operations on an ``edge_index``: self-loops, normalisation, scatter, softmax, SpMM.

A graph of ``N`` nodes is given by ``edge_index`` of shape (2, E): row 0 holds each
edge's source ``j``, row 1 its target ``i``, and messages flow j -> i (PyTorch
Geometric's ``source_to_target`` convention).  Every operation here is a tensor
op over all edges at once; none loops over nodes or edges in Python.

    gcn_norm:         Â = D^-1/2 (A + I) D^-1/2,   d_i = sum_j (A + I)_ij
    segment_softmax:  alpha_ij = exp(e_ij - max_k e_ik) / sum_k exp(e_ik - max_k e_ik),
                      k over the sources of the edges into i
    scatter:          out_i = reduce_{e: target(e) = i} src_e   (sum, mean or max)

A batch of graphs is one big disconnected graph plus ``batch`` (N,), the graph
index of each node; the readouts pool node vectors into one vector per graph.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.errors import ConfigError, ShapeError

REDUCTIONS = ("sum", "mean", "max")

# CSR is the layout this module is built on; PyTorch's "beta" notice about it is noise here.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


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


# ----- sparse matrices -----


class SparsePattern:
    """Where a (rows x cols) sparse matrix is non-zero, in CSR order, and where its transpose is.

    Values are kept apart (GCN's fixed Â weights, one head's attention coefficients,
    dropped-out features), so one pattern, built once per graph, serves every matrix
    on it.  ``order`` is the permutation that sorted the given entries into CSR order;
    the transpose's CSR (``crow_t``, ``col_t``, ``perm_t``) is what backward uses.
    """

    def __init__(
        self, rows: Tensor, cols: Tensor, shape: tuple[int, int], presorted: bool = False
    ) -> None:
        n_rows, n_cols = shape
        rows, cols = rows.long(), cols.long()
        self.order: Tensor | None = None  # None: the entries came in CSR order
        if not presorted:
            self.order = (rows * n_cols + cols).argsort()
            rows, cols = rows[self.order], cols[self.order]
        self.shape, self.row, self.col = (n_rows, n_cols), rows, cols
        self.perm_t = (cols * n_rows + rows).argsort()
        # the CSR index arrays in int32 where they fit: half the memory, and MKL takes them
        # (gathers keep int64: index_select's backward is much slower with int32)
        small = max(n_rows, n_cols, rows.numel()) < 2**31
        index = torch.int32 if small else torch.int64
        self.crow, self.csr_col = _crow(rows, n_rows).to(index), cols.to(index)
        self.crow_t = _crow(cols[self.perm_t], n_cols).to(index)
        self.col_t = rows[self.perm_t].to(index)
        self._blocks: dict[int, BlockDiagonalPattern] = {}

    def blocks(self, k: int) -> BlockDiagonalPattern:
        """The pattern of diag(S, ..., S), k blocks; built once per k."""
        if k not in self._blocks:
            self._blocks[k] = BlockDiagonalPattern(self, k)
        return self._blocks[k]

    def matrix(self, values: Tensor) -> Tensor:
        """The CSR matrix with ``values`` (nnz,) in this pattern's order."""
        return torch.sparse_csr_tensor(
            self.crow, self.csr_col, values, self.shape, check_invariants=False
        )

    def matrix_t(self, values: Tensor) -> Tensor:
        """The transposed CSR matrix of the same ``values``."""
        return torch.sparse_csr_tensor(
            self.crow_t,
            self.col_t,
            self.values_t(values),
            self.shape[::-1],
            check_invariants=False,
        )

    def values_t(self, values: Tensor) -> Tensor:
        """``values`` in the transpose's CSR order."""
        return values.index_select(0, self.perm_t)


class BlockDiagonalPattern(SparsePattern):
    """diag(S, ..., S): k copies of a pattern S; values are the k copies' values in turn."""

    def __init__(self, base: SparsePattern, k: int) -> None:
        (n_rows, n_cols), nnz = base.shape, base.row.numel()
        block = torch.arange(k, device=base.row.device).repeat_interleave(nnz)
        row, col = block * n_rows + base.row.repeat(k), block * n_cols + base.col.repeat(k)
        super().__init__(row, col, (n_rows * k, n_cols * k), presorted=True)
        self.base, self.k = base, k

    def values_t(self, values: Tensor) -> Tensor:
        # block by block with S's permutation: several times faster than one long gather
        return values.view(self.k, -1).index_select(1, self.base.perm_t).reshape(-1)


def _crow(rows_sorted: Tensor, n_rows: int) -> Tensor:
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=rows_sorted.device)
    crow[1:] = torch.bincount(rows_sorted, minlength=n_rows).cumsum(0)
    return crow


class _SpMM(torch.autograd.Function):
    """S @ x for S = pattern.matrix(values), differentiable in ``values`` and ``x``.

    Backward: d x = S^T g (an SpMM with the stored transpose) and d values = g x^T
    sampled at the non-zeros (an SDDMM); no (nnz x features) tensor is ever stored.
    """

    @staticmethod
    def forward(ctx, values: Tensor, x: Tensor, pattern: SparsePattern) -> Tensor:
        ctx.save_for_backward(values, x)
        ctx.pattern = pattern
        return pattern.matrix(values) @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        values, x = ctx.saved_tensors
        pattern: SparsePattern = ctx.pattern
        grad_values = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_x = pattern.matrix_t(values) @ grad
        if ctx.needs_input_grad[0]:
            zeros = pattern.matrix(values.new_zeros(values.shape))
            grad_values = torch.sparse.sampled_addmm(zeros, grad, x.t(), beta=0.0).values()
        return grad_values, grad_x, None


def spmm(pattern: SparsePattern, values: Tensor, x: Tensor) -> Tensor:
    """pattern.matrix(values) @ x for dense x (rows, features), differentiable in both."""
    if values.dtype != x.dtype:
        values = values.to(x.dtype)
    return _SpMM.apply(values, x.contiguous(), pattern)


class SparseTensor:
    """A sparse matrix as (pattern, values): ``S @ dense`` and dropout on the values only.

    Bag-of-words node features are ~99 % zeros: X W as an SpMM and dropout on the
    stored values only is what Kipf's code did, and far cheaper than dense.
    """

    def __init__(self, pattern: SparsePattern, values: Tensor) -> None:
        self.pattern, self.values = pattern, values

    @classmethod
    def from_csr(cls, x: Tensor) -> SparseTensor:
        rows = torch.repeat_interleave(
            torch.arange(x.shape[0], device=x.device),
            x.crow_indices().diff(),
            output_size=x.values().numel(),
        )
        pattern = SparsePattern(rows, x.col_indices(), tuple(x.shape), presorted=True)
        return cls(pattern, x.values())

    @property
    def shape(self) -> tuple[int, int]:
        return self.pattern.shape

    def __matmul__(self, dense: Tensor) -> Tensor:
        return spmm(self.pattern, self.values, dense)

    def dropout(self, p: float, training: bool) -> SparseTensor:
        return SparseTensor(self.pattern, dropout(self.values, p, training))


def as_features(x: Tensor) -> Tensor | SparseTensor:
    """Node features as the layers take them: dense as given, sparse CSR as a SparseTensor."""
    return SparseTensor.from_csr(x) if x.layout == torch.sparse_csr else x


def dropout(x: Tensor | SparseTensor, p: float, training: bool) -> Tensor | SparseTensor:
    """Dropout for dense tensors, or for the stored values of sparse ones.

    The mask is drawn as ``rand >= p``, about 3x faster on CPU than the Bernoulli
    sampler of ``F.dropout`` (which was the largest cost of a GAT epoch on Cora), and
    then multiplied by x and scaled in place: one buffer, also when x is an expanded
    view (a mask per copy, as per-head dropout draws them).
    """
    if isinstance(x, SparseTensor):
        return x.dropout(p, training)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    return torch.rand_like(x).ge_(p).mul_(x).mul_(1.0 / (1.0 - p))


def linear(x: Tensor | SparseTensor, weight: Tensor) -> Tensor:
    """x W^T for dense or sparse x: an SpMM when x is sparse."""
    return x @ weight.t() if isinstance(x, SparseTensor) else F.linear(x, weight)


def per_head_linear(
    x: Tensor | SparseTensor, weight: Tensor, heads: int, p: float, training: bool
) -> Tensor:
    """x_k W_k^T for each head k, x_k being x under head k's own dropout mask: (nodes, heads, out).

    ``weight`` (heads * out, in) holds W_1 .. W_H one under another, as a shared
    ``nn.Linear(in, heads * out)`` does.  Dense x: one batched matmul of the heads'
    dropped copies (heads, nodes, in).  Sparse x: one SpMM of diag(x_1, ..., x_H) with
    the W_k^T stacked; masks are drawn for the stored values only, and the
    multiply-adds are those of x W^T.
    """
    out_dim = weight.shape[0] // heads
    W = weight.view(heads, out_dim, -1).transpose(1, 2)  # (heads, in, out)
    if isinstance(x, SparseTensor):
        values = dropout(x.values.expand(heads, -1), p, training).reshape(-1)
        out = spmm(x.pattern.blocks(heads), values, W.reshape(-1, out_dim))
        out = out.view(heads, -1, out_dim)
    else:
        out = torch.bmm(dropout(x.expand(heads, *x.shape), p, training), W)
    return out.transpose(0, 1)


class EdgeList(SparsePattern):
    """A graph's edges j -> i as the pattern of its (target x source) adjacency matrix.

    ``source`` and ``target`` are in CSR order (sorted by target, then source);
    ``order`` maps that order back to the edge_index it was built from.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int) -> None:
        super().__init__(edge_index[1], edge_index[0], (num_nodes, num_nodes))
        self.num_nodes = num_nodes

    @property
    def source(self) -> Tensor:
        return self.col

    @property
    def in_degree(self) -> Tensor:
        """Edges into each node: the lengths of the target segments."""
        return self.crow.diff()

    @property
    def target(self) -> Tensor:
        return self.row

    @property
    def edge_index(self) -> Tensor:
        return torch.stack([self.source, self.target])


def edge_weighted_sum(edges: EdgeList, alpha: Tensor, x: Tensor) -> Tensor:
    """out[i, h] = sum over edges j -> i of alpha[e, h] x[j, h]; alpha (E, H), x (N, H, C)."""
    # unbind, not alpha[:, h]: its backward is one stack, not a zero-filled copy per head
    heads = zip(alpha.t().contiguous().unbind(0), x.transpose(0, 1).unbind(0), strict=True)
    return torch.stack([spmm(edges, a, x_h) for a, x_h in heads], dim=1)


class TensorCache:
    """One value derived from one input tensor, rebuilt only when a different tensor comes.

    Transductive training passes the same edge_index (and features) every step, so
    structures built from them (Â, sorted edges, sparse patterns) are built once.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._key: Tensor | None = None
        self._value = None

    def get(self, key: Tensor, build):
        if self._key is key:
            return self._value
        value = build()
        if self.enabled:
            self._key, self._value = key, value
        return value


# ----- readouts: one vector per graph of a batch -----


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


READOUTS = ("sum", "mean", "max", "attention")


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


# ----- the layer stack GCN and GAT share -----


class GraphNetwork(nn.Module, ABC):
    """Graph layers, then for graph-level outputs a readout and a linear head.

    Each layer is called as ``layer(h, graph)`` and drops out its own input; ``graph``
    is what the layers need of the edges (Â for GCN, the edge list for GAT), built by
    :meth:`build_graph`.  With ``cached`` it and the features are built once for
    the same ``edge_index`` and ``x`` (transductive training).
    """

    def __init__(
        self,
        layers: list[nn.Module],
        activation: Callable[[Tensor], Tensor],
        in_dim: int,
        readout: str | None,
        width: int,
        out_dim: int,
        cached: bool,
    ) -> None:
        super().__init__()
        self.layers, self.activation, self.in_dim = nn.ModuleList(layers), activation, in_dim
        self.readout = None if readout is None else Readout(readout, width)
        self.head = None if readout is None else nn.Linear(width, out_dim)
        self._graph = TensorCache(cached)
        self._features = TensorCache(cached)

    @abstractmethod
    def build_graph(self, edge_index: Tensor, num_nodes: int):
        """What the layers take of the graph of ``edge_index``; each model says what."""

    def graph(self, edge_index: Tensor, num_nodes: int):
        """What the layers take of this graph (see :meth:`build_graph`), cached."""
        return self._graph.get(edge_index, lambda: self.build_graph(edge_index, num_nodes))

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        batch: Tensor | None = None,
        num_graphs: int | None = None,
    ) -> Tensor:
        """Node outputs (nodes, out_dim); with a readout, graph outputs (num_graphs, out_dim).

        ``x`` is dense, or a sparse CSR tensor (then kept sparse in the first layer).
        """
        num_nodes = check_graph(x, edge_index, features=self.in_dim)
        graph = self.graph(edge_index, num_nodes)
        h = self._features.get(x, lambda: as_features(x))
        for n, layer in enumerate(self.layers):
            h = layer(h, graph)
            if n < len(self.layers) - 1 or self.readout is not None:
                h = self.activation(h)
        if self.readout is None:
            return h
        return self.head(self.readout(h, batch, num_graphs))


# ----- directed edges -----


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
