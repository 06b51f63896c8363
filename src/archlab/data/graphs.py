"""Graph datasets: the Planetoid citation graphs and Zachary's karate club.

Planetoid (Yang, Cohen & Salakhutdinov 2016): Cora, CiteSeer and PubMed with the
public split of Kipf & Welling (20 labelled nodes per class for training, 500 for
validation, 1,000 for testing).  The raw files are Python 2 pickles of numpy
arrays, scipy CSR matrices and a ``defaultdict`` adjacency list; each is
unpickled only after its checksum matches, by an unpickler that can build
nothing but those classes.  They are assembled as PyTorch Geometric's
``read_planetoid_data`` does: test rows reordered by their sorted index, and
CiteSeer's 15 isolated test-range nodes padded with zero features and label 0.
Edges are made unique, without self-loops.

Karate club (Zachary 1977, shipped with networkx): 34 members, 78 friendships,
two factions after the split; one labelled member per faction (the instructor,
node 0, and the administrator, node 33).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from archlab.data.files import DataError, DataFile, Dataset, fetch, register_dataset
from archlab.nn.graph import csr_tensor

PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data/"
PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
_SHA256 = {
    "citeseer": {
        "allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
        "ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
        "graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
        "test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
        "tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
        "ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
        "x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
        "y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    },
    "cora": {
        "allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
        "ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
        "graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
        "test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
        "tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
        "ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
        "x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
        "y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
    },
    "pubmed": {
        "allx": "",  # not in ../shared/data; only its git blob id is known (below)
        "ally": "0c37bbe3b5014ec365e9d393cf4791925e5ed94fb194305d74f064a8d7b50f0e",
        "graph": "5b89f0036ca22909471f1e6558eb42fa06e0c730a577bde5b058b40638f81dc9",
        "test.index": "b101d421688bbaecbd82e8a18f1e282378d6830f3a37666f28ebc47f844341b5",
        "tx": "4eb5f5d0f30f26497eb0ac6ac9719d09c67e284f1ed0385c93f3ef27a671da3d",
        "ty": "ee2e0d4819d9fbcc403689c3bf2e49face401b605932f093bc58ab6461130fdd",
        "x": "fbe9cb5c47200d1b7769a26e579be3b7130b556831f9d850e77c4c74f2599b33",
        "y": "e6c807633307a07ed659249006536a147c7999c797f11a2560752990181b41b3",
    },
}
_GIT_BLOB = {("pubmed", "allx"): "3b86bccf08111c37c632a9dd8ab63db25ea76361"}
PLANETOID = ("cora", "citeseer", "pubmed")
_DESCRIPTION = {
    "cora": "Cora citation graph (Planetoid), 2,708 papers, 7 classes, public split",
    "citeseer": "CiteSeer citation graph (Planetoid), 3,327 papers, 6 classes, public split",
    "pubmed": "PubMed citation graph (Planetoid), 19,717 papers, 3 classes, public split",
}

for _name in PLANETOID:
    register_dataset(
        Dataset(
            name=_name,
            description=_DESCRIPTION[_name],
            files=tuple(
                DataFile(
                    f"planetoid/ind.{_name}.{part}",
                    _SHA256[_name][part],
                    f"{PLANETOID_URL}ind.{_name}.{part}",
                    _GIT_BLOB.get((_name, part), ""),
                )
                for part in PARTS
            ),
            licence="MIT (kimiyoung/planetoid)",
        )
    )

KARATE = register_dataset(
    Dataset(
        name="karate",
        description="Zachary's karate club (1977), 34 members, 78 friendships, two factions",
        files=(),  # shipped inside networkx: nothing to fetch
        licence="networkx (BSD-3-Clause)",
    )
)


@dataclass
class NodeGraph:
    """One graph for node classification: features, edges, labels and the split masks."""

    x: Tensor  # (nodes, features), sparse CSR for bag-of-words features
    edge_index: Tensor  # (2, edges)
    y: Tensor  # (nodes,)
    masks: dict[str, Tensor]  # split name -> bool (nodes,)
    num_classes: int

    @property
    def num_nodes(self) -> int:
        return self.y.shape[0]


class _PlanetoidUnpickler(pickle.Unpickler):
    """Builds only the numpy / scipy / container classes the Planetoid files hold."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("scipy.sparse.csr", "csr_matrix"),
        ("collections", "defaultdict"),
        ("__builtin__", "list"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a Planetoid file")
        if module == "numpy.core.multiarray":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        if module == "scipy.sparse.csr":
            import scipy.sparse

            return scipy.sparse.csr_matrix
        if module == "__builtin__":
            return list
        return super().find_class(module, name)


def _unpickle(path: Path):
    try:
        return _PlanetoidUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DataError(f"{path} could not be read as a Planetoid file: {error}") from None


def load_planetoid(name: str) -> NodeGraph:
    """The ``name`` graph (cora, citeseer, pubmed) with raw features and the public split."""
    paths = fetch(name)
    part = {p: paths[f"planetoid/ind.{name}.{p}"] for p in PARTS}
    x, tx, allx = (_unpickle(part[p]).tocsr() for p in ("x", "tx", "allx"))
    y, ty, ally = (np.asarray(_unpickle(part[p])) for p in ("y", "ty", "ally"))
    graph = _unpickle(part["graph"])
    test_index = np.array(part["test.index"].read_text().split(), dtype=np.int64)
    sorted_test = np.sort(test_index)
    if name == "citeseer":  # isolated nodes inside the test range: zero rows, label 0
        import scipy.sparse

        span = sorted_test[-1] - sorted_test[0] + 1
        place = sorted_test - sorted_test[0]
        tx_ext = scipy.sparse.lil_matrix((span, tx.shape[1]), dtype=tx.dtype)
        tx_ext[place] = tx
        ty_ext = np.zeros((span, ty.shape[1]), dtype=ty.dtype)
        ty_ext[place] = ty
        tx, ty = tx_ext.tocsr(), ty_ext
    import scipy.sparse

    features = scipy.sparse.vstack([allx, tx]).tocsr()
    labels = np.concatenate([ally, ty]).argmax(axis=1)
    order = np.arange(features.shape[0])
    order[test_index] = sorted_test  # row test_index[k] takes row sorted_test[k]
    features, labels = features[order], labels[order]
    n = labels.shape[0]
    masks = {
        "train": _mask(np.arange(y.shape[0]), n),
        "val": _mask(np.arange(y.shape[0], y.shape[0] + 500), n),
        "test": _mask(test_index, n),
    }
    return NodeGraph(
        x=_torch_csr(features),
        edge_index=_edges_from_adjacency_list(graph, n),
        y=torch.from_numpy(labels).long(),
        masks=masks,
        num_classes=int(ally.shape[1]),
    )


def _mask(index: np.ndarray, n: int) -> Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.from_numpy(np.asarray(index))] = True
    return mask


def _torch_csr(matrix) -> Tensor:
    matrix = matrix.tocsr().astype(np.float32)
    matrix.sort_indices()
    return csr_tensor(
        torch.from_numpy(matrix.indptr.astype(np.int64)),
        torch.from_numpy(matrix.indices.astype(np.int64)),
        torch.from_numpy(matrix.data),
        matrix.shape,
        check_invariants=True,  # built from a file: check it once
    )


def _edges_from_adjacency_list(graph: dict, n: int) -> Tensor:
    """Unique directed edges (source, target) without self-loops, sorted."""
    sources = np.concatenate([np.full(len(v), k) for k, v in graph.items()])
    targets = np.concatenate([np.asarray(v, dtype=np.int64) for v in graph.values()])
    keys = np.unique(sources.astype(np.int64) * n + targets)
    keys = keys[keys // n != keys % n]
    return torch.from_numpy(np.stack([keys // n, keys % n]))


def load_karate() -> NodeGraph:
    """Zachary's karate club: one-hot node features, faction labels, one label per faction."""
    import networkx as nx

    g = nx.karate_club_graph()
    n = g.number_of_nodes()
    pairs = np.array(list(g.edges()), dtype=np.int64).T
    edge_index = torch.from_numpy(np.concatenate([pairs, pairs[::-1]], axis=1))
    y = torch.tensor([0 if g.nodes[v]["club"] == "Mr. Hi" else 1 for v in range(n)])
    train = _mask(np.array([0, n - 1]), n)
    return NodeGraph(
        x=torch.eye(n),
        edge_index=edge_index,
        y=y,
        masks={"train": train, "val": train, "test": ~train},  # no held-out labels for val
        num_classes=2,
    )


def load_node_graph(name: str) -> NodeGraph:
    if name == "karate":
        return load_karate()
    return load_planetoid(name)


def perturb_edges(
    edge_index: Tensor, num_nodes: int, drop: float, add: float, generator: torch.Generator
) -> Tensor:
    """Structure noise: drop a share of the graph's edges, or add random new ones.

    The graph is read as undirected: its pairs P = {{u, v} : (u, v) or (v, u) an edge}.
    ``drop`` removes round(drop |P|) pairs drawn uniformly (with both directions);
    ``add`` adds round(add |P|) pairs drawn uniformly from the node pairs not in P and
    not self-loops (both directions).  Edges of the pairs kept stay as they were, and
    the result is sorted by (source, target), as the loaders give it.
    """
    n = num_nodes
    source, target = edge_index
    pair = torch.minimum(source, target) * n + torch.maximum(source, target)
    pairs = pair.unique()
    keep = torch.ones_like(pair, dtype=torch.bool)
    if drop:
        dropped = pairs[torch.randperm(len(pairs), generator=generator)[: round(drop * len(pairs))]]
        keep = ~torch.isin(pair, dropped)
    keys = [source[keep] * n + target[keep]]
    wanted = round(add * len(pairs))
    new = torch.empty(0, dtype=torch.long)
    while len(new) < wanted:  # rejection sampling: new, distinct, no self-loops
        u, v = torch.randint(n, (2, 2 * (wanted - len(new)) + 16), generator=generator)
        drawn = torch.minimum(u, v) * n + torch.maximum(u, v)
        drawn = drawn[(u != v) & ~torch.isin(drawn, pairs) & ~torch.isin(drawn, new)]
        new = torch.cat([new, _first_of_each(drawn)])[:wanted]
    keys += [new, (new % n) * n + new // n]  # (u, v) and (v, u) of each new pair u < v
    keys = torch.cat(keys).sort().values
    return torch.stack([keys // n, keys % n])


def _first_of_each(values: Tensor) -> Tensor:
    """``values`` without repeats, each kept at its first place."""
    unique, inverse = torch.unique(values, return_inverse=True)
    first = torch.full((len(unique),), len(values)).scatter_reduce(
        0, inverse, torch.arange(len(values)), "amin"
    )
    return values[first.sort().values]
