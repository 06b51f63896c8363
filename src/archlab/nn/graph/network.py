"""The layer stack GCN and GAT share: graph layers, then optionally a readout and a head.

    h^(0) = x,   h^(l+1) = layer_l(h^(l), graph)   (activation between layers)
    node-level:  y_v = h_v^(L)
    graph-level: y_g = W_head · readout_g(act(h^(L))) + b_head

``graph`` is what the layers take of the edges (Â for GCN, the edge list for GAT);
on transductive training the same ``edge_index`` and ``x`` come every step, so the
graph and the features are built once and kept (:class:`TensorCache`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from torch import Tensor, nn

from archlab.nn.graph.ops import check_graph
from archlab.nn.graph.readout import Readout
from archlab.nn.graph.sparse import as_features


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
