"""GCN and GAT against PyTorch Geometric's ``GCNConv`` / ``GATConv`` models of the same size.

Three graphs:
- Cora (real, 2,708 nodes, 1,433 bag-of-words features), one training epoch:
  dropout, forward, cross-entropy on the 140 training nodes, backward, Adam step.
  Both sides get the same row-normalised features: archlab keeps them sparse (as
  Kipf's code did), PyG takes the dense matrix its ``Planetoid`` loader gives.
- PubMed-sized: PubMed's real citation graph (19,717 nodes, 88,648 edges) with
  random sparse 500-d features of PubMed's density (its ``allx`` file is not in
  every data root), one training epoch as above.
- Random: 100k nodes, 1M random edges, 64 dense features; forward + backward.

Models: GCN 2 layers (hidden 16; PyG ``cached=True`` as in its example), GAT 2 layers
(8 heads x 8, one output head).  Time: median ms over interleaved repeats.  Memory:
peak resident memory above the baseline of a fresh process running one step, for
each side in its own subprocess (so neither sees the other's allocations).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from archlab.bench import in_fresh_process, interleaved_medians, timed
from archlab.errors import ConfigError

HIDDEN, HEADS = 16, 8


def _graph(case: str, dense: bool):
    """(x, edge_index, y, train_mask, classes) for a case; x dense or sparse CSR."""
    g = torch.Generator().manual_seed(0)
    if case == "cora":
        from archlab.data.graphs import load_planetoid
        from archlab.tasks.node_classification import row_normalize

        graph = load_planetoid("cora")
        x = row_normalize(graph.x)
        return (x.to_dense() if dense else x), graph.edge_index, graph.y, graph.masks["train"], 7
    if case == "pubmed":
        from archlab.data.files import fetch
        from archlab.data.graphs import _edges_from_adjacency_list, _unpickle
        from archlab.nn.graph import to_sparse_csr

        (path,) = fetch("pubmed", only=".graph").values()
        n = 19717
        edge_index = _edges_from_adjacency_list(_unpickle(path), n)
        x = (torch.rand(n, 500, generator=g) < 0.1).float() * torch.rand(n, 500, generator=g)
        x = x / x.sum(1, keepdim=True).clamp_min(1e-12)
        y = torch.randint(0, 3, (n,), generator=g)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[:60] = True
        return (x if dense else to_sparse_csr(x)), edge_index, y, mask, 3
    n, e = 100_000, 1_000_000
    edge_index = torch.randint(0, n, (2, e), generator=g)
    x = torch.randn(n, 64, generator=g)
    y = torch.randint(0, 16, (n,), generator=g)
    return x, edge_index, y, torch.ones(n, dtype=torch.bool), 16


def _models(model: str, in_dim: int, classes: int):
    try:
        from torch_geometric.nn import GATConv, GCNConv
    except ImportError:
        raise ConfigError(
            "the gnn benchmark compares against PyTorch Geometric; "
            "install it with: pip install 'archlab[test]'"
        ) from None
    import archlab

    torch.manual_seed(0)
    if model == "gcn":
        ours = archlab.create_model("gcn", in_dim=in_dim, hidden_dim=HIDDEN, out_dim=classes)

        class PyG(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv1 = GCNConv(in_dim, HIDDEN, cached=True)
                self.conv2 = GCNConv(HIDDEN, classes, cached=True)

            def forward(self, x, edge_index):
                x = F.dropout(x, 0.5, self.training)
                x = F.relu(self.conv1(x, edge_index))
                return self.conv2(F.dropout(x, 0.5, self.training), edge_index)

    else:
        ours = archlab.create_model(
            "gat", in_dim=in_dim, hidden_dim=8, heads=HEADS, out_dim=classes, out_heads=1
        )

        class PyG(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv1 = GATConv(in_dim, 8, heads=HEADS, dropout=0.6)
                self.conv2 = GATConv(8 * HEADS, classes, heads=1, concat=False, dropout=0.6)

            def forward(self, x, edge_index):
                x = F.dropout(x, 0.6, self.training)
                x = F.elu(self.conv1(x, edge_index))
                return self.conv2(F.dropout(x, 0.6, self.training), edge_index)

    return ours, PyG()


def _step_fn(model, x, edge_index, y, mask, optimizer: bool):
    opt = torch.optim.Adam(model.parameters(), lr=0.01) if optimizer else None
    model.train()

    def step() -> None:
        loss = F.cross_entropy(model(x, edge_index)[mask], y[mask])
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)

    return step


def _setup(impl: str, model: str, case: str):
    x, edge_index, y, mask, classes = _graph(case, dense=impl == "pyg")
    ours, ref = _models(model, x.shape[1], classes)
    net = ours if impl == "archlab" else ref
    return _step_fn(net, x, edge_index, y, mask, optimizer=case != "random")


def _peak_memory_mb(impl: str, model: str, case: str) -> float:
    """Peak RSS above the baseline during one step, in a fresh subprocess.

    The peak is reset after setup, so loading the graph does not count; the warm-up
    step does (it builds what is cached).
    """
    return in_fresh_process(
        "from archlab.bench import gnn, step_peak_mb; "
        f"print(step_peak_mb(gnn._setup({impl!r}, {model!r}, {case!r})))"
    )


def summarize(results: dict[str, dict]) -> str:
    return ", ".join(
        f"{key} {r['ms']['archlab']:.1f} ms ({r['time_ratio']:.2f}x PyG's time, "
        f"{r['memory_ratio']:.2f}x its memory)"
        for key, r in results.items()
    )


def run(quick: bool = False) -> dict:
    repeats, steps = (1, 2) if quick else (5, 10)
    cases = ("cora", "random") if quick else ("cora", "pubmed", "random")
    results: dict[str, dict] = {}
    for model in ("gcn", "gat"):
        for case in cases:
            n = 1 if case == "random" else steps
            fns = {}
            for impl in ("archlab", "pyg"):
                step = _setup(impl, model, case)
                step()  # warm-up (builds cached structures)
                fns[impl] = lambda step=step, n=n: (
                    1000 * timed(lambda: [step() for _ in range(n)]) / n
                )
            ms = interleaved_medians(fns, repeats)
            memory = {impl: _peak_memory_mb(impl, model, case) for impl in ("archlab", "pyg")}
            results[f"{model}-{case}"] = {
                "ms": ms,
                "time_ratio": ms["archlab"] / ms["pyg"],
                "peak_mb": memory,
                "memory_ratio": memory["archlab"] / max(memory["pyg"], 1e-9),
            }
    summary = summarize(results)
    print(f"gnn  (archlab vs PyTorch Geometric; {torch.get_num_threads()} threads)")
    print(
        f"  {'':<16}{'archlab ms':>11}{'PyG ms':>9}{'time':>7}{'arch MB':>9}{'PyG MB':>8}{'mem':>7}"
    )
    for key, r in results.items():
        print(
            f"  {key:<16}{r['ms']['archlab']:>11.1f}{r['ms']['pyg']:>9.1f}{r['time_ratio']:>6.2f}x"
            f"{r['peak_mb']['archlab']:>9.0f}{r['peak_mb']['pyg']:>8.0f}{r['memory_ratio']:>6.2f}x"
        )
    print("  (ratios are archlab / PyG: below 1 means archlab is faster or smaller)")
    return {
        "cases": results,
        "reference": "PyTorch Geometric GCNConv / GATConv models of the same size",
        "summary": summary,
    }
