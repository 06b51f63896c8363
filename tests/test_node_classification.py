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
from archlab.data.graphs import _PlanetoidUnpickler, load_karate, load_planetoid
from archlab.run import train


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
