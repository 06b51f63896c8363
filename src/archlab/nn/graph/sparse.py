"""Sparse matrices on a graph: CSR patterns, SpMM with its own backward, sparse features.

A sparse (rows x cols) matrix S is kept as a pattern (where it is non-zero, in CSR
order, and where its transpose is) plus values (nnz,), so one pattern built once per
graph serves every matrix on it: GCN's Â, one attention head's alpha, dropped-out
bag-of-words features.

    spmm:               Y = S X,  dL/dX = S^T dL/dY,  dL/dS_ij = (dL/dY X^T)_ij at S's non-zeros
                        (an SpMM with the stored transpose and an SDDMM; no (nnz x features)
                        tensor is ever stored)
    edge_weighted_sum:  out_ih = sum_{e = j -> i} alpha_eh x_jh   (one SpMM per head h)
    per_head_linear:    out_:,k = dropout_k(x) W_k^T  for each head k, each with its own mask
    dropout:            x * m / (1 - p),  m_i ~ Bernoulli(1 - p), on the stored values only
                        when x is sparse

PyTorch warns once per process, at the first CSR tensor built, that CSR support is
"in beta".  This package builds on that layout by design, so the notice is taken
quietly at the first CSR tensor built here (:func:`csr_tensor`, :func:`to_sparse_csr`)
rather than by a process-wide warnings filter.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

CSR_BETA_NOTICE = "Sparse CSR tensor support is in beta"


@functools.cache
def _take_csr_beta_notice() -> None:
    """Build one empty CSR tensor with PyTorch's one-time "beta" notice silenced.

    PyTorch gives that notice once per process (``TORCH_WARN_ONCE``), at the first
    CSR tensor it builds, so taking it here keeps it from the user for good.  Doing it
    once, rather than wrapping every CSR construction in ``warnings.catch_warnings``,
    matters: each ``catch_warnings`` resets Python's "already shown" registries, and a
    user's own once-per-line warnings would then repeat on every training step.
    """
    empty = torch.zeros(1, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CSR_BETA_NOTICE)
        torch.sparse_csr_tensor(*empty, torch.zeros(0), (0, 0), check_invariants=False)


def csr_tensor(
    crow: Tensor,
    col: Tensor,
    values: Tensor,
    shape: tuple[int, ...],
    check_invariants: bool = False,
) -> Tensor:
    """``torch.sparse_csr_tensor``, without PyTorch's "beta" notice."""
    _take_csr_beta_notice()
    return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=check_invariants)


def to_sparse_csr(x: Tensor) -> Tensor:
    """``x.to_sparse_csr()``, without PyTorch's "beta" notice."""
    _take_csr_beta_notice()
    return x.to_sparse_csr()


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
        return csr_tensor(self.crow, self.csr_col, values, self.shape)

    def matrix_t(self, values: Tensor) -> Tensor:
        """The transposed CSR matrix of the same ``values``."""
        return csr_tensor(self.crow_t, self.col_t, self.values_t(values), self.shape[::-1])

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
