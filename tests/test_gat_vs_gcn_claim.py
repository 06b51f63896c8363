"""scripts/gat_vs_gcn.py: GCN against GAT by node degree and under edge noise, tiny."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def gat_vs_gcn():
    spec = importlib.util.spec_from_file_location("gat_vs_gcn", ROOT / "scripts/gat_vs_gcn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_test_and_verdict() -> None:
    gg = gat_vs_gcn()
    row = gg.paired([0.70, 0.71, 0.69, 0.70, 0.72, 0.70], [0.75, 0.77, 0.74, 0.76, 0.78, 0.75])
    assert abs(row["difference"] - 0.055) < 1e-9 and row["p"] < 0.05 and row["seeds"] == 6
    assert gg.paired([0.7, 0.7], [0.7, 0.7])["p"] == 1.0
    better = {"clean": row, "by_degree": {"1": row}, "test_noise": {"drop 10%": row},
              "train_and_test_noise": {}, "robustness": {"drop 10%": row}}  # fmt: skip
    assert gg.verdict({"cora": better}).startswith("supported: of 2 settings")
    even = {**row, "p": 0.5}
    assert gg.verdict({"cora": {**better, "robustness": {"drop 10%": even}}}).startswith(
        "partly supported (GAT is more accurate, but not more robust"
    )
    worse = {**row, "difference": -0.05}
    table = {"cora": {**better, "by_degree": {"1": worse}, "test_noise": {"drop 10%": worse}}}
    assert gg.verdict(table).startswith("not supported")
    assert gg.bucket_label([1, 3, 5], 0) == "1-2" and gg.bucket_label([1, 2], 0) == "1"
    assert gg.bucket_label([1, 3, 5], 2) == "5+"


def test_a_tiny_comparison_runs_and_collects(planetoid, tmp_path, monkeypatch) -> None:
    gg = gat_vs_gcn()
    monkeypatch.setattr(gg, "LEVELS", (0.2,))
    monkeypatch.setattr(gg, "NOISE", {"drop": "edge_drop"})
    common = ["--datasets", "cora", "--seeds", "2", "--runs", str(tmp_path / "runs")]
    common += ["--set", "trainer.max_epochs=3"]
    gg.main(["run", *common])
    assert (tmp_path / "runs/cora-gat-drop20-s1/results.json").is_file()
    out, img = tmp_path / "claim.json", tmp_path / "img"
    gg.main(["collect", *common, "--out", str(out), "--img", str(img)])
    claim = json.loads(out.read_text())["benchmarks"]["claim-gat-vs-gcn"]
    cora = claim["results"]["cora"]
    assert set(cora["test_noise"]) == set(cora["train_and_test_noise"]) == {"drop 20%"}
    assert sum(row["nodes"] for row in cora["by_degree"].values()) == 1000  # Cora's test nodes
    for row in [cora["clean"], *cora["by_degree"].values(), *cora["test_noise"].values()]:
        assert row["seeds"] == 2 and 0 <= row["gcn"] <= 1 and 0 <= row["gat"] <= 1
    assert set(cora["robustness"]) == {"test noise, drop 20%", "train and test noise, drop 20%"}
    assert claim["missing"] == [] and claim["verdict"] == claim["summary"]
    assert "in training and test" in claim["reference"]
    command = json.loads(out.read_text())["command"]  # the options collect was given
    assert command.startswith("python scripts/gat_vs_gcn.py run --datasets cora --seeds 2 ")
    assert command.count("--set trainer.max_epochs=3") == 2
    assert (img / "claim-gat-vs-gcn.png").is_file()
