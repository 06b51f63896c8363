"""D-MPNN + features: RDKit 2-D descriptors, their train-split normalisation, training, predict."""

import json

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import Crippen, Descriptors, rdMolDescriptors
from safetensors.torch import save_file

import archlab
from archlab.data.molecules import (
    DESCRIPTOR_SETS,
    DescriptorScaler,
    DescriptorSet,
    collate,
    dataset_descriptors,
    featurise,
    load_molecules,
    random_split,
    rdkit2d,
    rdkit2d_names,
    rdkit2d_normalized,
    rdkit2d_normalized_names,
)
from archlab.errors import CheckpointError, ConfigError, ShapeError
from archlab.run import load, train
from archlab.tasks.molecules import MoleculeData, MoleculeRegressionTask
from tests.conftest import cli, require_data

PARACETAMOL = "CC(=O)Nc1ccc(O)cc1"


@pytest.fixture
def esol():
    return require_data("molecules/delaney-processed.csv")


def test_rdkit2d_is_rdkits_own_descriptor_list_of_the_molecule() -> None:
    mol = Chem.MolFromSmiles(PARACETAMOL)
    values = dict(zip(rdkit2d_names(), rdkit2d(mol), strict=True))
    assert len(values) == len(Descriptors.descList) > 200
    assert values == pytest.approx(Descriptors.CalcMolDescriptors(mol), rel=1e-12)
    assert values["MolWt"] == pytest.approx(151.165, abs=1e-3)  # C8H9NO2
    assert values["MolLogP"] == Crippen.MolLogP(mol)
    assert values["TPSA"] == rdMolDescriptors.CalcTPSA(mol) == pytest.approx(49.33)
    assert values["NumHDonors"] == 2 and values["RingCount"] == 1


def test_non_finite_descriptors_become_zero() -> None:
    mol = Chem.MolFromSmiles("[Na+].[Cl-]")
    direct = dict(Descriptors.CalcMolDescriptors(mol))
    assert direct["BCUT2D_MWHI"] != direct["BCUT2D_MWHI"]  # RDKit gives NaN for lone ions
    values = dict(zip(rdkit2d_names(), rdkit2d(mol), strict=True))
    assert values["BCUT2D_MWHI"] == 0.0 and all(v == v for v in values.values())
    assert values["MolWt"] == pytest.approx(direct["MolWt"])


def test_rdkit2d_normalized_is_chemprops_cdf_features_from_descriptastorus() -> None:
    from descriptastorus.descriptors import rdNormalizedDescriptors

    names = rdkit2d_normalized_names()
    assert len(names) == 200 and {"MolLogP", "TPSA", "BalabanJ"} <= set(names)
    for smiles in (PARACETAMOL, "[Na+].[Cl-]", "c1ccc2ccccc2c1"):
        values = rdkit2d_normalized(Chem.MolFromSmiles(smiles))
        # chemprop 1's rdkit_2d_normalized_features_generator: process(SMILES) minus its flag
        expected = rdNormalizedDescriptors.RDKit2DNormalized().process(smiles)[1:]
        assert values == pytest.approx([v if v == v else 0.0 for v in expected], abs=1e-12)
        assert all(0.0 <= v <= 1.0 for v in values)
    logp = rdNormalizedDescriptors.cdfs["MolLogP"]  # F(d), the fitted distribution's CDF
    cdf = {}
    for smiles in (PARACETAMOL, "CCCCCCCCCCCCCCCC"):
        mol = Chem.MolFromSmiles(smiles)
        cdf[smiles] = dict(zip(names, rdkit2d_normalized(mol), strict=True))["MolLogP"]
        assert cdf[smiles] == pytest.approx(float(logp(Crippen.MolLogP(mol))), abs=1e-12)
    assert 0.05 < cdf[PARACETAMOL] < cdf["CCCCCCCCCCCCCCCC"] < 1.0  # hexadecane: more lipophilic


def test_scaler_is_a_clipped_z_score_with_zero_for_constant_columns() -> None:
    train = torch.tensor([[1.0, 7.0, 0.3], [3.0, 7.0, 0.3], [5.0, 7.0, 0.3]], dtype=torch.float64)
    scaler = DescriptorScaler.fit(train)
    sigma = (8 / 3) ** 0.5
    assert scaler.mean.tolist() == pytest.approx([3.0, 7.0, 0.3]) and scaler.std[1:].eq(0).all()
    z = scaler(torch.tensor([[3.0 + sigma, 9.0, 0.5], [-100.0, 7.0, 0.3]], dtype=torch.float64))
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, torch.tensor([[1.0, 0.0, 0.0], [-5.0, 0.0, 0.0]]))


def test_the_dmpnn_joins_descriptors_to_its_readout() -> None:
    model = archlab.create_model("mpnn", hidden=16, ffn_hidden=8, descriptor_dim=3).eval()
    graphs = collate([featurise(Chem.MolFromSmiles(s)) for s in (PARACETAMOL, "CCO")])
    d = torch.randn(2, 3)
    expected = model.ffn(torch.cat([model.encode(*graphs, 2), d], dim=1))
    torch.testing.assert_close(model(*graphs, 2, d), expected)
    assert model.ffn[1].in_features == 16 + 3
    other = d.clone()
    other[1] += 1.0
    changed = (model(*graphs, 2, other) - model(*graphs, 2, d)).abs().squeeze(1)
    assert changed[0] == 0 and changed[1] > 0  # each molecule's own descriptors only
    with pytest.raises(ShapeError, match=r"descriptors must be \(molecules, descriptor_dim\)"):
        model(*graphs, 2)


def test_normalisation_uses_the_training_split_only(esol, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ARCHLAB_CACHE", str(tmp_path))
    task = MoleculeRegressionTask(MoleculeData(dataset="esol", split_seed=3, descriptors="rdkit2d"))
    task.setup()
    smiles = load_molecules("esol").smiles
    (cached,) = (tmp_path / "molecules").glob("esol-rdkit2d-*.safetensors")
    raw = dataset_descriptors("esol", smiles)  # read back from the cache
    rows = random_split(len(smiles), 3)
    j = rdkit2d_names().index("MolLogP")
    assert raw[:, j].tolist() == [Crippen.MolLogP(Chem.MolFromSmiles(s)) for s in smiles]
    train_logp = raw[rows["train"], j]
    assert task.scaler.mean[j].item() == pytest.approx(train_logp.mean().item(), rel=1e-12)
    assert task.scaler.std[j].item() == pytest.approx(train_logp.std(correction=0).item())
    assert abs(task.scaler.mean[j] - raw[:, j].mean()) > 1e-3  # not the whole data set's
    for split in ("train", "test"):
        z = (raw[rows[split], j] - train_logp.mean()) / train_logp.std(correction=0)
        torch.testing.assert_close(task.descriptors[split][:, j], z.clamp(-5, 5).float())
    assert task.model_overrides()["descriptor_dim"] == len(rdkit2d_names())
    save_file({"rdkit2d": raw + 1.0}, cached)  # what the cache holds is what a run gets
    torch.testing.assert_close(dataset_descriptors("esol", smiles), raw + 1.0)


def test_features_variant_learns_esol_and_predicts_from_a_loaded_run(
    esol, tmp_path, monkeypatch
) -> None:
    from tests.test_molecules import TINY_MPNN

    monkeypatch.setenv("ARCHLAB_CACHE", str(tmp_path / "cache"))
    run_dir, results = train(
        "gnn-esol",
        [*TINY_MPNN, "data.descriptors=rdkit2d", "trainer.max_epochs=3", "trainer.log_every=1"],
        out=str(tmp_path / "run"),
        progress=False,
    )
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) > 50 and sum(losses[-10:]) < 0.3 * sum(losses[:10]), losses
    run = load(run_dir)
    assert run.model.config.descriptor_dim == len(rdkit2d_names())
    run.task.setup()
    y_val = run.task.y["val"]
    baseline = (y_val - run.task.y["train"].mean()).pow(2).mean().sqrt().item()
    assert results["val"]["rmse"] < 0.6 * baseline, (results["val"], baseline)

    preds = run.task.predict(run.model, ["CCO", "CCCCCCCCCCCCCCCC"])
    assert preds[0]["value"] > preds[1]["value"] + 2  # ethanol dissolves, hexadecane does not
    proc = cli("predict", str(run_dir), "CCO")
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.split("\t")[0]) == pytest.approx(preds[0]["value"], abs=1e-4)
    assert load(run_dir).evaluate("test") == pytest.approx(results["test"], rel=1e-5)

    artifact = json.loads((run_dir / "molecules.json").read_text())
    saved = json.loads(json.dumps(artifact))
    saved["descriptors"]["mean"] = [m + 1.0 for m in saved["descriptors"]["mean"]]
    (run_dir / "molecules.json").write_text(json.dumps(saved))
    shifted = load(run_dir)  # eval and predict use the run's statistics, not recomputed ones
    assert shifted.evaluate("test")["rmse"] != pytest.approx(results["test"]["rmse"], rel=1e-3)
    moved = shifted.task.predict(shifted.model, ["CCO"])[0]["value"]
    assert moved != pytest.approx(preds[0]["value"], abs=1e-3)
    artifact["descriptors"]["names"][0] = "NotADescriptor"
    (run_dir / "molecules.json").write_text(json.dumps(artifact))
    with pytest.raises(CheckpointError, match="other molecule descriptors"):
        load(run_dir)
    del artifact["descriptors"]
    (run_dir / "molecules.json").write_text(json.dumps(artifact))
    with pytest.raises(CheckpointError, match="holds no descriptor statistics"):
        load(run_dir)


def test_an_unscaled_descriptor_set_reaches_the_model_as_computed(
    esol, tmp_path, monkeypatch
) -> None:
    from tests.test_molecules import TINY_MPNN

    monkeypatch.setenv("ARCHLAB_CACHE", str(tmp_path / "cache"))
    # rdkit2d_normalized's plumbing, with two quick features in place of its 35 s of CDFs
    quick = DescriptorSet(
        lambda: ["MolLogP", "TPSA"],
        lambda mol: [Crippen.MolLogP(mol) / 10, rdMolDescriptors.CalcTPSA(mol) / 100],
        lambda: "quick",
        scaled=False,
    )
    monkeypatch.setitem(DESCRIPTOR_SETS, "rdkit2d_normalized", quick)
    sets = [*TINY_MPNN, "data.descriptors=rdkit2d_normalized", "trainer.max_epochs=2"]
    run_dir, results = train("gnn-esol", sets, out=str(tmp_path / "run"), progress=False)
    artifact = json.loads((run_dir / "molecules.json").read_text())["descriptors"]
    assert artifact == {"set": "rdkit2d_normalized", "names": ["MolLogP", "TPSA"]}
    run = load(run_dir)
    assert run.task.scaler is None and run.model.config.descriptor_dim == 2
    run.task.setup()
    smiles = load_molecules("esol").smiles
    rows = random_split(len(smiles), 0)["test"]
    mols = [Chem.MolFromSmiles(smiles[i]) for i in rows]
    expected = torch.tensor([quick.compute(mol) for mol in mols])
    torch.testing.assert_close(run.task.descriptors["test"], expected)  # not z-scored
    assert run.evaluate("test") == pytest.approx(results["test"], rel=1e-5)
    (value,) = run.task.predict(run.model, [smiles[rows[0]]])
    graphs = collate([featurise(mols[0])])
    z = run.model(*graphs, 1, expected[:1]) * run.task.std + run.task.mean
    assert value["value"] == pytest.approx(z.item(), abs=1e-5)


def test_unknown_descriptor_set_is_refused_before_reading() -> None:
    with pytest.raises(ConfigError, match="data.descriptors must be null or one of"):
        MoleculeRegressionTask(MoleculeData(descriptors="morgan")).setup()
