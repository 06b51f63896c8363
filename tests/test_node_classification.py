"""Planetoid data against PyG's loader, the safe unpickler, and GCN/GAT training end to end."""

import io
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

import archlab
from archlab.data.files import DataError
from archlab.data.graphs import _PlanetoidUnpickler, load_karate, load_planetoid, perturb_edges
from archlab.errors import ConfigError
from archlab.run import train
from archlab.tasks.node_classification import NodeClassificationData, NodeClassificationTask


@pytest.mark.parametrize("name", ["cora", "citeseer"])
def test_planetoid_matches_pyg_loader(planetoid, name: str) -> None:
    read_planetoid_data = pytest.importorskip("torch_geometric.io").read_planetoid_data
    ours = load_planetoid(name)
    ref = read_planetoid_data(str(planetoid / "planetoid"), name)
    assert torch.equal(ours.x.to_dense(), ref.x)
    assert torch.equal(ours.y, ref.y)
    for split in ("train", "val", "test"):
        assert torch.equal(ours.masks[split], getattr(ref, f"{split}_mask"))
    n = ours.num_nodes
    as_set = lambda e: set((e[0] * n + e[1]).tolist())  # noqa: E731
    assert as_set(ours.edge_index) == as_set(ref.edge_index)
    assert ours.edge_index.shape == ref.edge_index.shape  # unique edges, as PyG
    counts = {"cora": (140, 7), "citeseer": (120, 6)}[name]
    assert (int(ours.masks["train"].sum()), ours.num_classes) == counts


def test_unpickler_refuses_anything_but_arrays() -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    payload = pickle.dumps(Evil(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        _PlanetoidUnpickler(io.BytesIO(payload), encoding="latin1").load()


def test_pubmed_without_allx_is_one_clear_error(planetoid, monkeypatch) -> None:
    if (planetoid / "planetoid/ind.pubmed.allx").exists():
        pytest.skip("this data root has ind.pubmed.allx")
    monkeypatch.setenv("ARCHLAB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"missing planetoid/ind\.pubmed\.allx"):
        load_planetoid("pubmed")
    proc = subprocess.run(
        [sys.executable, "-m", "archlab", "train", "gcn-pubmed", "--out", "/tmp/never"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ARCHLAB_OFFLINE": "1"},
    )
    assert proc.returncode == 2
    assert "ind.pubmed.allx" in proc.stderr and "Traceback" not in proc.stderr


FEW_STEPS = ["trainer.max_steps=30", "trainer.log_every=5"]


@pytest.mark.parametrize(
    "recipe, extra",
    [("gcn-cora", []), ("gat-cora", []), ("gat-cora", ["model.per_head_dropout=true"])],
)
def test_training_on_cora_learns(planetoid, tmp_path, recipe: str, extra: list[str]) -> None:
    steps = FEW_STEPS + extra
    run_dir, results = train(recipe, steps, out=str(tmp_path / "run"), progress=False)
    assert results["test"]["accuracy"] > 0.6  # chance is about 0.3 (7 classes, 30 steps)
    losses = [
        json.loads(line)["loss"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if '"train"' in line
    ]
    assert losses[-1] < losses[0]
    run = archlab.load(run_dir)
    assert run.evaluate("test")["accuracy"] == pytest.approx(results["test"]["accuracy"])


def gat_authors_rule(records: list[dict], patience: int) -> tuple[int, int]:
    """The step kept and the last step evaluated, by the loop of the GAT authors' code."""
    acc_max, loss_min, kept, waited = 0.0, float("inf"), None, 0
    for r in records:
        if r["accuracy"] >= acc_max or r["loss"] <= loss_min:
            if r["accuracy"] >= acc_max and r["loss"] <= loss_min:
                kept = r["step"]
            acc_max, loss_min, waited = max(r["accuracy"], acc_max), min(r["loss"], loss_min), 0
        else:
            waited += 1
            if waited == patience:
                return kept, r["step"]
    return kept, records[-1]["step"]


def test_loss_and_accuracy_selection_follows_the_gat_authors_loop(planetoid, tmp_path) -> None:
    task = NodeClassificationTask(NodeClassificationData())
    history = [(1.0, 0.5), (0.9, 0.5), (0.8, 0.4), (0.85, 0.6), (0.7, 0.6), (0.9, 0.55)]
    judged, best = [], None
    for loss, accuracy in history:
        keep, progress, best = task.select(
            {"loss": loss, "accuracy": accuracy}, best, "loss_and_accuracy"
        )
        judged.append((keep, progress))
    # a tie counts; lower loss alone is progress, not kept; both at once is kept
    expected = [(True, True), (True, True), (False, True), (False, True), (True, True)]
    assert judged == [*expected, (False, False)] and best == {"loss": 0.7, "accuracy": 0.6}
    records = [{"step": i, "loss": a, "accuracy": b} for i, (a, b) in enumerate(history)]
    assert gat_authors_rule(records, patience=1) == (4, 5)

    sets = ["trainer.select_by=loss_and_accuracy", "trainer.max_steps=300"]
    sets += ["trainer.early_stopping_patience=10", "model.hidden_dim=4", "trainer.lr=0.02"]
    run_dir, results = train("gat-cora", sets, out=str(tmp_path / "run"), progress=False)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    val = [r for r in map(json.loads, lines) if r["split"] == "val"]
    kept, last = gat_authors_rule(val, patience=10)
    assert val[-1]["step"] == last < 300  # stopped by the patience rule
    expected = next(r for r in val if r["step"] == kept)
    assert not any(r["accuracy"] > expected["accuracy"] for r in val if r["step"] <= kept)
    assert results["val"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert results["val"]["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    with pytest.raises(ConfigError, match="trainer.select_by must be one of"):
        train("gat-cora", ["trainer.select_by=f1"], out=str(tmp_path / "bad"), progress=False)


def test_seeds_aggregate_mean_and_std(planetoid, tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "archlab", "train", "gcn-citeseer", "--seeds", "2",
         "--set", "trainer.max_steps=20", "--out", str(tmp_path / "runs")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "runs/results.json").read_text())["test"]
    runs = results["accuracy_runs"]
    assert len(runs) == 2 and runs[0] != runs[1]
    assert results["accuracy"] == pytest.approx(sum(runs) / 2)
    assert results["accuracy_std"] > 0


def test_karate_two_labels_find_the_factions(tmp_path) -> None:
    graph = load_karate()
    assert graph.num_nodes == 34 and graph.edge_index.shape == (2, 156)
    assert int(graph.masks["train"].sum()) == 2 and int(graph.masks["test"].sum()) == 32
    steps = ["trainer.max_steps=100"]
    run_dir, results = train("gcn-karate", steps, out=str(tmp_path / "run"), progress=False)
    assert results["test"]["accuracy"] >= 0.85  # chance is 0.5
    assert (run_dir / "embedding.png").stat().st_size > 1000


def _pairs(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return {(min(u, v), max(u, v)) for u, v in edge_index.t().tolist()}


@pytest.mark.parametrize(("drop", "add"), [(0.25, 0.0), (0.0, 0.5), (0.4, 0.4)])
def test_structure_noise_drops_and_adds_whole_pairs(drop: float, add: float) -> None:
    g = load_karate()
    n, pairs = g.num_nodes, _pairs(g.edge_index)
    # one directed-only edge stays directed when its pair is kept
    edges = torch.cat([g.edge_index, torch.tensor([[0], [9]])], dim=1)
    assert (0, 9) not in pairs
    noisy = perturb_edges(edges, n, drop, add, torch.Generator().manual_seed(3))
    again = perturb_edges(edges, n, drop, add, torch.Generator().manual_seed(3))
    assert torch.equal(noisy, again)
    directed = {tuple(e) for e in noisy.t().tolist()}
    assert len(directed) == noisy.shape[1] and all(u != v for u, v in directed)
    assert noisy.t().tolist() == sorted(noisy.t().tolist())
    total = len(pairs) + 1
    kept, added = _pairs(noisy) & (pairs | {(0, 9)}), _pairs(noisy) - pairs - {(0, 9)}
    assert len(kept) == total - round(drop * total)
    assert len(added) == round(add * total)
    assert all((u, v) in directed and (v, u) in directed for u, v in added)
    original = {tuple(e) for e in edges.t().tolist()}
    assert {e for e in directed if (min(e), max(e)) in kept} <= original
    if (0, 9) in kept:
        assert (0, 9) in directed and (9, 0) not in directed


def test_structure_noise_is_a_data_setting(planetoid, tmp_path) -> None:
    with pytest.raises(ConfigError, match="edge_drop"):
        NodeClassificationData(dataset="cora", edge_drop=1.0)
    with pytest.raises(ConfigError, match="edge_add"):
        NodeClassificationData(dataset="cora", edge_add=float("nan"))
    task = NodeClassificationTask(NodeClassificationData(dataset="cora", edge_drop=0.2))
    task.setup()
    clean = NodeClassificationTask(NodeClassificationData(dataset="cora"))
    clean.setup()
    assert task.graph.edge_index.shape[1] < 0.81 * clean.graph.edge_index.shape[1]
