"""Molecules from SMILES: featuriser, bad rows, splits, the D-MPNN, training and predict."""

import copy
import json
from pathlib import Path

import pytest
import torch
from rdkit import Chem

import archlab
from archlab.cli import build_parser, main, repeat_plan
from archlab.config import apply_overrides, read_recipe
from archlab.data.molecules import (
    ATOM,
    ATOM_DIM,
    BOND,
    BOND_DIM,
    BadSmilesWarning,
    collate,
    featurise,
    load_molecules,
    random_split,
    read_molecules,
    scaffold,
    scaffold_split,
)
from archlab.errors import ArchlabError, CheckpointError, ConfigError, ShapeError
from archlab.nn.graph import reverse_edge_index
from archlab.run import load, resolve, train
from archlab.tasks.molecules import MoleculeData, MoleculeRegressionTask
from tests.conftest import cli, require_data

TINY_MPNN = [
    "data.descriptors=null",  # the plain D-MPNN; tests/test_molecule_descriptors.py adds them
    "model.dropout=0",
    "model.hidden=64",
    "model.ffn_hidden=64",
    "model.depth=2",
    "trainer.max_epochs=6",
    "trainer.batch_size=25",
    "trainer.lr=3e-3",
    "trainer.warmup_steps=5",
    "trainer.eval_every=37",
]


@pytest.fixture
def esol() -> Path:
    return require_data("molecules/delaney-processed.csv")


def column(onehot, feature: str, value) -> int:
    """The column of ``value`` of ``feature`` (or of a flag) in a featuriser's output."""
    offset = 0
    for name, choices in onehot.settings.items():
        if name == "flags":
            return offset + choices.index(feature)
        if name == feature:
            return offset + choices.index(value)
        offset += len(choices) + 1
    raise KeyError(feature)


def graph(smiles: str):
    return featurise(Chem.MolFromSmiles(smiles))


# ----- featuriser -----


def test_benzene_is_six_aromatic_ring_carbons_with_twelve_directed_bonds() -> None:
    g = graph("c1ccccc1")
    assert g.x.shape == (6, ATOM_DIM) and g.edge_index.shape == (2, 12)
    assert g.edge_attr.shape == (12, BOND_DIM)
    for feature, value in [("element", "C"), ("hybridisation", "SP2"), ("total_hs", 1)]:
        assert g.x[:, column(ATOM, feature, value)].tolist() == [1.0] * 6
    for flag in ("aromatic", "in_ring"):
        assert g.x[:, column(ATOM, flag, None)].tolist() == [1.0] * 6
    assert g.edge_attr[:, column(BOND, "type", "AROMATIC")].tolist() == [1.0] * 12
    assert g.edge_attr[:, column(BOND, "in_ring", None)].tolist() == [1.0] * 12
    # each atom has five one-hot groups and two flags set, each bond two groups and two flags
    assert g.x.sum(1).tolist() == [7.0] * 6 and g.edge_attr.sum(1).tolist() == [4.0] * 12


def test_features_follow_rdkit_on_a_charged_drug_molecule() -> None:
    smiles = "CC(=O)Nc1ccc(O)cc1.C[N+](C)(C)C"  # paracetamol and tetramethylammonium
    mol = Chem.MolFromSmiles(smiles)
    g = featurise(mol)
    assert g.x.shape[0] == mol.GetNumAtoms() == 16
    assert g.edge_index.shape[1] == 2 * mol.GetNumBonds() == 2 * 15
    for atom in mol.GetAtoms():
        row = g.x[atom.GetIdx()]
        assert row[column(ATOM, "element", atom.GetSymbol())] == 1
        assert row[column(ATOM, "degree", atom.GetDegree())] == 1
        assert row[column(ATOM, "formal_charge", atom.GetFormalCharge())] == 1
        assert row[column(ATOM, "hybridisation", str(atom.GetHybridization()))] == 1
        assert row[column(ATOM, "total_hs", atom.GetTotalNumHs())] == 1
        assert row[column(ATOM, "aromatic", None)] == atom.GetIsAromatic()
        assert row[column(ATOM, "in_ring", None)] == atom.IsInRing()
    n_plus = next(a.GetIdx() for a in mol.GetAtoms() if a.GetFormalCharge() == 1)
    assert g.x[n_plus, column(ATOM, "formal_charge", 1)] == 1
    carbonyl = mol.GetBondBetweenAtoms(1, 2)
    assert str(carbonyl.GetBondType()) == "DOUBLE"
    b = carbonyl.GetIdx()
    for e in (2 * b, 2 * b + 1):
        assert g.edge_attr[e, column(BOND, "type", "DOUBLE")] == 1
        assert g.edge_attr[e, column(BOND, "conjugated", None)] == 1


def test_every_bond_is_stored_in_both_directions_with_the_same_features() -> None:
    mol = Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1")
    g = featurise(mol)
    pairs = [tuple(p) for p in g.edge_index.T.tolist()]
    bonds = {(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()}
    assert set(pairs) == bonds | {(j, i) for i, j in bonds} and len(pairs) == 2 * len(bonds)
    assert torch.equal(g.edge_attr[0::2], g.edge_attr[1::2])
    assert torch.equal(g.edge_index[:, 0::2], g.edge_index[:, 1::2].flip(0))


def test_unknown_element_goes_to_the_other_slot_and_ions_have_no_edges() -> None:
    g = graph("[Na+].[Cl-]")
    assert g.x.shape == (2, ATOM_DIM) and g.edge_index.shape == (2, 0)
    assert g.edge_attr.shape == (0, BOND_DIM)
    other = column(ATOM, "element", "I") + 1  # the slot after the last listed element
    assert g.x[0, other] == 1 and g.x[1, column(ATOM, "element", "Cl")] == 1


def test_collate_offsets_nodes_and_numbers_graphs() -> None:
    graphs = [graph("CCO"), graph("c1ccccc1"), graph("[Na+]")]
    x, edge_index, edge_attr, batch = collate(graphs)
    assert x.shape == (10, ATOM_DIM) and edge_attr.shape == (16, BOND_DIM)
    assert batch.tolist() == [0] * 3 + [1] * 6 + [2]
    assert torch.equal(edge_index[:, :4], graphs[0].edge_index)
    assert torch.equal(edge_index[:, 4:], graphs[1].edge_index + 3)


# ----- files -----


def test_bad_smiles_are_reported_by_line_and_skipped(tmp_path, capfd) -> None:
    path = tmp_path / "mols.csv"
    path.write_text(
        'name,smiles,y\nethanol,CCO ,1.5\n"open, ring",C1CC,2\nbad,c1cccc1,3\nempty,,4\n'
        "propane, CCC,-0.5\n"
    )
    with pytest.warns(BadSmilesWarning) as caught:
        molecules = read_molecules(path, "y")
    (warning,) = caught
    message = str(warning.message)
    assert "skipped 3" in message and str(path) in message
    assert "line 3 'C1CC'" in message and "line 4 'c1cccc1'" in message and "line 5 ''" in message
    assert molecules.smiles == ["CCO", "CCC"]
    assert molecules.y.squeeze(1).tolist() == [1.5, -0.5]
    assert "SMILES Parse Error" not in capfd.readouterr().err  # RDKit's own log is silenced


def test_a_missing_target_column_is_named(tmp_path) -> None:
    path = tmp_path / "mols.csv"
    path.write_text("smiles,value\nCCO,1\n")
    with pytest.raises(archlab.data.files.DataError, match="no column 'y'"):
        read_molecules(path, "y")


def test_esol_has_all_molecules_and_stripped_smiles(esol) -> None:
    molecules = load_molecules("esol")
    assert len(molecules.smiles) == 1128 and molecules.y.shape == (1128, 1)
    assert all(s == s.strip() for s in molecules.smiles)
    # Amigdalin: its SMILES has a trailing space in the file; the target is the measured value
    assert molecules.smiles[0] == "OCC3OC(OCC2OC(OC(C#N)c1ccccc1)C(O)C(O)C2O)C(O)C(O)C3O"
    assert molecules.y[0].item() == pytest.approx(-0.77)


# ----- splits -----


def test_random_split_is_seeded_disjoint_and_80_10_10() -> None:
    split = random_split(1128, seed=3)
    assert [len(split[k]) for k in ("train", "val", "test")] == [902, 113, 113]
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(1128))
    assert random_split(1128, seed=3) == split and random_split(1128, seed=4) != split


def test_scaffold_split_keeps_each_scaffold_in_one_split(esol) -> None:
    smiles = load_molecules("esol").smiles
    split = scaffold_split(smiles, seed=0)
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(len(smiles)))
    scaffolds = {k: {scaffold(smiles[i]) for i in rows} for k, rows in split.items()}
    assert not scaffolds["train"] & scaffolds["val"]
    assert not scaffolds["train"] & scaffolds["test"] and not scaffolds["val"] & scaffolds["test"]
    assert len(split["train"]) <= 902 and len(split["train"]) + len(split["val"]) <= 1015
    assert len(split["train"]) > 850 and len(split["val"]) > 100  # close to 80/10/10
    assert "" in scaffolds["train"]  # acyclic molecules: the largest group, into train
    assert scaffold_split(smiles, seed=0) == split and scaffold_split(smiles, seed=1) != split


def test_a_null_split_seed_is_each_runs_own_seed_as_in_chemprop(esol, tmp_path) -> None:
    out = tmp_path / "seeds"
    tiny = [f"--set={s}" for s in [*TINY_MPNN, "trainer.max_epochs=1"]]
    assert main(["train", "gnn-esol", *tiny, "--seeds", "2", "--out", str(out)]) == 0
    test_targets = []
    for seed in (0, 1):
        assert f"split_seed: {seed}\n" in (out / f"seed-{seed}" / "config.yaml").read_text()
        run = load(out / f"seed-{seed}")
        run.task.setup()
        test_targets.append(run.task.y["test"])
    assert test_targets[0].shape == test_targets[1].shape
    assert not torch.equal(*test_targets)  # each seed is tested on its own molecules
    repeats = json.loads((out / "results.json").read_text())["repeats"]
    assert repeats == {"key": "trainer.seed", "values": [0, 1], "split_seeds": [0, 1]}

    recipe = read_recipe("gnn-esol")
    assert recipe["data"]["split_seed"] is None
    assert resolve(apply_overrides(recipe, ["trainer.seed=7"])).task.data.split_seed == 7
    fixed = resolve(apply_overrides(recipe, ["data.split_seed=5", "trainer.seed=2"]))
    assert fixed.task.data.split_seed == 5  # a number keeps one split for every seed
    # --splits N counts from the run's seed where the recipe's split_seed is null
    args = build_parser().parse_args(["train", "gnn-esol", "--splits", "2", "--seed", "7"])
    key, _, values, _ = repeat_plan(args, ["trainer.seed=7"])
    assert (key, values) == ("data.split_seed", [7, 8])


# ----- D-MPNN -----


def test_reverse_edge_index_finds_each_reverse_edge() -> None:
    edges = torch.tensor([[0, 1], [1, 2], [2, 0], [3, 1], [2, 3]]).T
    both = torch.cat([edges, edges.flip(0)], dim=1)[:, torch.randperm(10)]
    rev = reverse_edge_index(both, 4)
    assert torch.equal(both[:, rev], both.flip(0))
    with pytest.raises(ShapeError, match="has no reverse edge"):
        reverse_edge_index(edges, 4)


def naive_dmpnn(model, g) -> torch.Tensor:
    """D-MPNN of one molecule from the formula, one directed bond at a time."""
    W_i, W_m, W_a = model.W_i, model.W_m, model.W_a
    edges = [tuple(e) for e in g.edge_index.T.tolist()]
    inputs = {e: W_i(torch.cat([g.x[e[0]], g.edge_attr[k]])) for k, e in enumerate(edges)}
    h0 = {e: torch.relu(inputs[e]) for e in edges}
    skip = h0 if model.config.update == "paper" else inputs  # chemprop: before the ReLU
    into = {v: [(k, u) for k, u in edges if u == v] for v in range(g.x.shape[0])}
    zero = torch.zeros(model.config.hidden)
    h = dict(h0)
    for _ in range(model.config.depth):
        m = {(v, w): sum((h[(k, u)] for k, u in into[v] if k != w), zero) for v, w in edges}
        h = {e: torch.relu(skip[e] + W_m(m[e])) for e in edges}
    atoms = []
    for v in range(g.x.shape[0]):
        m_v = sum((h[e] for e in into[v]), zero)
        atoms.append(torch.relu(W_a(torch.cat([g.x[v], m_v]))))
    return model.ffn(torch.stack(atoms).mean(0, keepdim=True))


@pytest.mark.parametrize("update", ["paper", "chemprop"])
def test_dmpnn_matches_the_formula_edge_by_edge(update: str) -> None:
    model = archlab.create_model("mpnn", hidden=16, ffn_hidden=8, depth=3, update=update).eval()
    graphs = [graph("CC(=O)Nc1ccc(O)cc1"), graph("C=CC#N"), graph("[Na+]")]
    x, edge_index, edge_attr, batch = collate(graphs)
    out = model(x, edge_index, edge_attr, batch, 3)
    with torch.no_grad():
        expected = torch.cat([naive_dmpnn(model, g) for g in graphs])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    other = "chemprop" if update == "paper" else "paper"
    model.config.update = other  # the two forms differ: W_i [x || e] has negative entries
    assert not torch.allclose(model(x, edge_index, edge_attr, batch, 3), out, atol=1e-4)
    with pytest.raises(ConfigError, match="update must be one of"):
        archlab.create_model("mpnn", update="gru")


def test_dmpnn_is_invariant_to_atom_order() -> None:
    model = archlab.create_model("mpnn", hidden=32, ffn_hidden=16, dropout=0.2).eval()
    mols = [Chem.MolFromSmiles(s) for s in ("CC(=O)Nc1ccc(O)cc1", "OCC(Cl)C#N")]
    renumbered = [Chem.RenumberAtoms(m, torch.randperm(m.GetNumAtoms()).tolist()) for m in mols]
    assert Chem.MolToSmiles(renumbered[0]) == Chem.MolToSmiles(mols[0])
    out = model(*collate([featurise(m) for m in mols]), 2)
    again = model(*collate([featurise(m) for m in renumbered]), 2)
    torch.testing.assert_close(again, out, atol=1e-5, rtol=1e-5)
    assert (out[0] - out[1]).abs().item() > 1e-4  # and it tells the molecules apart


def test_dmpnn_names_bad_inputs() -> None:
    model = archlab.create_model("mpnn", hidden=8, ffn_hidden=8)
    x, edge_index, edge_attr, batch = collate([graph("CCO")])
    with pytest.raises(ShapeError, match="edge_attr must be"):
        model(x, edge_index, edge_attr[:, :3], batch, 1)
    bad = edge_index.clone()
    bad[0, 1] = 7
    with pytest.raises(ShapeError, match="refers to node 7"):
        model(x, bad, edge_attr, batch, 1)
    with pytest.raises(ShapeError, match="no reverse edge"):
        model(x, edge_index[:, :3], edge_attr[:3], batch, 1)
    with pytest.raises(ShapeError, match="molecule indices 0..0"):
        model(x, edge_index, edge_attr, batch + 1, 1)


def test_ensemble_averages_members_each_trained_on_its_own_loss_and_batches() -> None:
    ensemble = archlab.create_model("mpnn_ensemble", hidden=16, ffn_hidden=8, members=3).eval()
    graphs = collate([graph("CC(=O)Nc1ccc(O)cc1"), graph("C=CC#N")])
    each = ensemble.each(*graphs, 2)
    assert each.shape == (3, 2, 1)
    torch.testing.assert_close(ensemble(*graphs, 2), each.mean(0))
    assert (each[0] - each[1]).abs().min() > 1e-4  # initialised independently
    assert ensemble.members[0].W_m.weight.data_ptr() != ensemble.members[1].W_m.weight.data_ptr()

    task = MoleculeRegressionTask(MoleculeData())
    task.use_model(ensemble)
    assert task.members == 3
    batches = [  # member m's own batch
        (*collate([graph(smiles)]), torch.zeros(1, 0), torch.tensor([[y]]))
        for smiles, y in [("CCO", 0.5), ("c1ccccc1", -1.0), ("CC(=O)O", 0.2)]
    ]
    alone = copy.deepcopy(ensemble.members[1])
    loss = task.loss(ensemble, batches)
    losses = [task.loss(m, b) for m, b in zip(ensemble.members, batches, strict=True)]
    assert len({round(x.item(), 6) for x in losses}) == 3
    torch.testing.assert_close(loss, torch.stack(losses).mean())  # mean_m MSE(f_m(G_m), y_m)
    loss.backward()
    task.loss(alone, batches[1]).backward()
    for p, q in zip(ensemble.members[1].parameters(), alone.parameters(), strict=True):
        torch.testing.assert_close(p.grad * 3, q.grad)  # as if trained alone, scaled by 1/M
    single = archlab.create_model("mpnn", hidden=16, ffn_hidden=8)
    task.use_model(single)
    assert task.members == 0
    with pytest.raises(ConfigError, match="members must be at least 1"):
        archlab.create_model("mpnn_ensemble", members=0)
    torch.manual_seed(0)
    one = archlab.create_model("mpnn_ensemble", hidden=16, ffn_hidden=8, members=1).eval()
    torch.manual_seed(0)
    single = archlab.create_model("mpnn", hidden=16, ffn_hidden=8).eval()
    assert torch.equal(one(*graphs, 2), single(*graphs, 2))  # an ensemble of one is the model


def test_ensemble_members_draw_their_own_batches(esol) -> None:
    task = MoleculeRegressionTask(MoleculeData())
    task.setup()
    single = task.train_batch(5, 50, seed=0)
    ensemble = archlab.create_model("mpnn_ensemble", hidden=8, ffn_hidden=8, members=3)
    with pytest.raises(ArchlabError, match="one batch per member"):
        task.loss(ensemble, single)  # not the MSE of the mean: the members would co-adapt
    task.use_model(ensemble)
    batches = task.train_batch(5, 50, seed=0)
    assert len(batches) == 3 and task.batch_size_of(batches) == 150
    for a, b in zip(batches[0], single, strict=True):  # member 0 draws the single model's batch
        assert torch.equal(a, b)
    targets = [b[-1].flatten().tolist() for b in batches]
    assert targets[0] != targets[1] != targets[2] != targets[0]
    with pytest.raises(ArchlabError, match="one batch per member"):
        task.loss(ensemble, batches[:2])
    resumed = MoleculeRegressionTask(MoleculeData())  # a fresh process draws the same batches
    resumed.setup()
    resumed.use_model(ensemble)
    again = resumed.train_batch(5, 50, seed=0)
    assert all(torch.equal(a[-1], b[-1]) for a, b in zip(again, batches, strict=True))


# ----- training and predict -----


def test_training_beats_the_train_mean_and_predicts(esol, tmp_path) -> None:
    run_dir, results = train("gnn-esol", TINY_MPNN, out=str(tmp_path / "run"), progress=False)
    run = load(run_dir)
    run.task.setup()
    y_val = run.task.y["val"]
    baseline = (y_val - run.task.y["train"].mean()).pow(2).mean().sqrt().item()
    assert results["val"]["rmse"] < 0.6 * baseline, (results["val"], baseline)
    assert results["val"]["mae"] < results["val"]["rmse"]

    artifact = json.loads((run_dir / "molecules.json").read_text())
    assert artifact["mean"] == pytest.approx(run.task.y["train"].mean(0).tolist())
    preds = run.task.predict(run.model, ["CCO", "CCCCCCCCCCCCCCCC"])
    assert preds[0]["value"] > preds[1]["value"]  # ethanol dissolves, hexadecane does not
    # a bad input is reported in its place; the others are still predicted
    good, bad = run.task.predict(run.model, ["CCO", "C1CC"])
    assert good["value"] == pytest.approx(preds[0]["value"], abs=1e-5)
    assert bad == {"error": "RDKit cannot parse this SMILES"}

    proc = cli("predict", str(run_dir), "CCO")
    assert proc.returncode == 0, proc.stderr
    value, smiles = proc.stdout.strip().split("\t")
    assert smiles == "CCO" and float(value) == pytest.approx(preds[0]["value"], abs=1e-4)

    artifact["featuriser"]["atom"]["element"].append("Xe")
    (run_dir / "molecules.json").write_text(json.dumps(artifact))
    with pytest.raises(CheckpointError, match="other atom/bond features"):
        load(run_dir)


def test_an_ensemble_trains_saves_and_predicts_as_one_model(esol, tmp_path) -> None:
    members = ["model.name=mpnn_ensemble", "model.members=2", "trainer.max_epochs=3"]
    run_dir, results = train(
        "gnn-esol", [*TINY_MPNN, *members], out=str(tmp_path / "run"), progress=False
    )
    run = load(run_dir)
    assert len(run.model.members) == 2
    run.task.setup()
    baseline = (run.task.y["val"] - run.task.y["train"].mean()).pow(2).mean().sqrt().item()
    assert results["val"]["rmse"] < 0.7 * baseline, (results["val"], baseline)
    assert run.evaluate("test") == pytest.approx(results["test"], rel=1e-5)
    (value,) = run.task.predict(run.model, ["CCO"])
    graphs = collate([featurise(Chem.MolFromSmiles("CCO"))])
    z = run.model.each(*graphs, 1, torch.zeros(1, 0)).mean(0) * run.task.std + run.task.mean
    assert value["value"] == pytest.approx(z.item(), abs=1e-5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (dict(split="weird"), "data.split must be one of"),
        (dict(dataset="tox21"), "data.dataset must be one of"),
        (dict(sizes=[0.5, 0.6, 0.1]), "data.sizes must be three positive fractions"),
        (dict(split_seed=None), "data.split_seed is null, meaning the run's seed"),
    ],
)
def test_bad_data_settings_are_refused_before_reading(data, message) -> None:
    with pytest.raises(ConfigError, match=message):
        MoleculeRegressionTask(MoleculeData(**data)).setup()
