"""Molecule property regression from SMILES (MoleculeNet ESOL, FreeSolv, Lipophilicity).

The model sees targets standardised with the training split's mean and standard
deviation and is trained with the mean squared error; metrics are measured in
the property's own units after undoing the standardisation:

    loss = mean (f(G) - (y - mu) / sigma)^2        (standardised; reported as ``loss``)
    rmse = sqrt(mean (sigma f(G) + mu - y)^2),  mae = mean |sigma f(G) + mu - y|

The split is ``random`` or Bemis-Murcko ``scaffold`` (80/10/10), drawn with
``split_seed``.  A ``split_seed`` of null (as in the shipped recipes; the
dataclass default is 0) means the run's own seed (``trainer.seed``), as
chemprop's ``--seed`` draws its split: each seed S..S+N-1 of ``--seeds N`` then
trains on its own split, like ``chemprop_train --num_folds N`` (whose folds keep
one initialisation seed; here the seed draws both), and the mean over seeds is a
mean over random splits, the way MoleculeNet and chemprop report their figures.
The resolved number is saved in the run's config.yaml.  An integer keeps one
split for every seed.

``descriptors`` adds molecule-level features that the model joins to its readout
("D-MPNN + features"): ``rdkit2d``, RDKit's 2-D descriptors normalised with the
training split's statistics (:class:`archlab.data.molecules.DescriptorScaler`),
which are saved with the run, so ``predict`` and ``eval`` of a loaded run use the
ones it was trained with; or ``rdkit2d_normalized``, chemprop's CDF-normalised
descriptors, used as they are.  An ensemble (model ``mpnn_ensemble``) trains each
member on its own loss and its own batches (chemprop trains its members as
separate runs): the loss is the mean over members of their MSE, member m on the
batch drawn with seed ``seed + m * SEED_STRIDE`` (member 0 draws the
single model's batches); the ensemble predicts the members' mean
(:mod:`archlab.nn.ensemble`).  The best checkpoint and the early stop are the
ensemble's, judged on its mean prediction.

A batch is one disconnected graph of its molecules: the tuple (x, edge_index,
edge_attr, batch, descriptors, y), with descriptors (molecules, D), D = 0 without
them, and y standardised, (molecules, 1).  An ensemble's training batch is a list
of M such tuples, one per member.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Config, Count, Fraction, OneOf
from archlab.data.batching import SEED_STRIDE, TrainBatches
from archlab.data.molecules import (
    ATOM_DIM,
    BOND_DIM,
    DESCRIPTOR_SETS,
    FEATURISER,
    TABLES,
    DescriptorScaler,
    check_split_sizes,
    collate,
    dataset_descriptors,
    featurise,
    load_molecules,
    parse_smiles,
    random_split,
    rdkit_version,
    scaffold_split,
)
from archlab.errors import ArchlabError, CheckpointError, ConfigError
from archlab.io import atomic_write_text
from archlab.models import roles
from archlab.nn.ensemble import Ensemble
from archlab.tasks import Task, register_task, score_each

SPLIT_KINDS = ("random", "scaffold")
ARTIFACT = "molecules.json"

Batch = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


@dataclass
class MoleculeData(Config):
    section: ClassVar[str] = "data"

    dataset: Annotated[str, OneOf(TABLES)] = "esol"  # esol, freesolv or lipo
    split: Annotated[str, OneOf(SPLIT_KINDS)] = "random"  # random or scaffold
    split_seed: Count | None = 0  # null: the run's trainer.seed (chemprop's --seed)
    sizes: list[Fraction] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train, val, test
    # rdkit2d or rdkit2d_normalized, joined to the readout
    descriptors: Annotated[str, OneOf(DESCRIPTOR_SETS)] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_split_sizes(self.sizes)


@register_task
class MoleculeRegressionTask(Task):
    name = "molecule_regression"
    DataConfig = MoleculeData
    roles = (roles.MoleculeModel,)
    verbs = frozenset({"predict"})
    predict_inputs = ("SMILES",)
    metric = "rmse"
    selectable = ("loss", "mae")
    derived_model_keys = {
        "atom_dim": "the atom featuriser",
        "bond_dim": "the bond featuriser",
        "n_targets": "the dataset's one target",
        "descriptor_dim": "data.descriptors",
    }
    unit = "mol"
    data_parallel = False

    def __init__(self, data: MoleculeData) -> None:
        super().__init__(data)
        self.scaler: DescriptorScaler | None = None  # fitted in setup, or a run's, loaded
        self.members = 0  # the size of the ensemble being trained (0: one model)

    def use_seed(self, seed: int) -> None:
        if self.data.split_seed is None:
            self.data.split_seed = seed

    def _check(self) -> None:
        if self.data.split_seed is None:
            raise ConfigError(
                "data.split_seed is null, meaning the run's seed, but the task was given no "
                "seed: call use_seed(seed) before setup(), or set data.split_seed"
            )

    def setup(self) -> None:
        self._check()
        d = self.data
        molecules = load_molecules(d.dataset)
        if d.split == "random":
            index = random_split(len(molecules.smiles), d.split_seed, d.sizes)
        else:
            index = scaffold_split(molecules.smiles, d.split_seed, d.sizes)
        self.graphs = {k: [molecules.graphs[i] for i in rows] for k, rows in index.items()}
        self.y = {k: molecules.y[rows] for k, rows in index.items()}
        if d.descriptors:
            raw = dataset_descriptors(d.dataset, molecules.smiles, d.descriptors)
            # a loaded run keeps the statistics it was trained with
            if self.scaler is None and DESCRIPTOR_SETS[d.descriptors].scaled:
                self.scaler = DescriptorScaler.fit(raw[index["train"]])
            features = self._normalise(raw)
        else:
            features = torch.zeros(len(molecules.smiles), 0)
        self.descriptors = {k: features[rows] for k, rows in index.items()}
        train_y = self.y["train"]
        self.mean, self.std = train_y.mean(0), train_y.std(0, correction=0).clamp_min(1e-8)
        self.batches = TrainBatches(len(self.graphs["train"]))
        self._eval_batches: dict[tuple[str, int], list[Batch]] = {}

    def model_overrides(self) -> dict:
        descriptor_dim = len(self._descriptor_names()) if self.data.descriptors else 0
        return {
            "atom_dim": ATOM_DIM,
            "bond_dim": BOND_DIM,
            "n_targets": 1,
            "descriptor_dim": descriptor_dim,
        }

    def _descriptor_names(self) -> list[str]:
        return DESCRIPTOR_SETS[self.data.descriptors].names()

    def _normalise(self, raw: Tensor) -> Tensor:
        """Descriptors as the model sees them: z-scored, or as they come for a set that is not."""
        return raw.float() if self.scaler is None else self.scaler(raw)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.batches.per_epoch(batch_size)

    def _batch(self, split: str, rows: list[int]) -> Batch:
        y = (self.y[split][rows] - self.mean) / self.std
        graphs = collate([self.graphs[split][i] for i in rows])
        return (*graphs, self.descriptors[split][rows], y)

    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch | list[Batch]:
        """The batch at ``step``; for an ensemble, one per member, each from its own shuffle."""
        if not self.members:
            return self._batch("train", self.batches.indices(step, batch_size, seed))
        seeds = [seed + m * SEED_STRIDE for m in range(self.members)]
        return [self._batch("train", self.batches.indices(step, batch_size, s)) for s in seeds]

    def batch_size_of(self, batch: Batch | list[Batch]) -> int:
        """Molecules in the step: an ensemble's members' batches counted together."""
        batches = batch if isinstance(batch, list) else [batch]
        return sum(b[-1].shape[0] for b in batches)

    def use_model(self, model: nn.Module) -> None:
        """Note an ensemble's size, as :meth:`train_batch` draws a batch per member."""
        self.members = len(model.members) if isinstance(model, Ensemble) else 0

    def loss(self, model: nn.Module, batch: Batch | list[Batch]) -> Tensor:
        """The MSE; of an ensemble, mean_m MSE(f_m(G_m), y_m), member m on its batch m."""
        members = len(model.members) if isinstance(model, Ensemble) else 0
        if members != (len(batch) if isinstance(batch, list) else 0):
            raise ArchlabError(
                "an ensemble trains on one batch per member, and one model on one batch: "
                "draw batches with train_batch after use_model(model)"
            )
        if isinstance(batch, list):
            pairs = zip(model.members, batch, strict=True)
            return torch.stack([self.loss(member, own) for member, own in pairs]).mean()
        *graph, descriptors, y = batch
        return F.mse_loss(model(*graph, y.shape[0], descriptors).float(), y)

    def splits(self) -> tuple[str, ...]:
        return ("val", "test")

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        key = (split, batch_size)
        if key not in self._eval_batches:
            n = len(self.graphs[split])
            self._eval_batches[key] = [
                self._batch(split, list(range(i, min(i + batch_size, n))))
                for i in range(0, n, batch_size)
            ]
        device = next(model.parameters()).device
        predicted, targets = [], []
        for batch in self._eval_batches[key]:
            *graph, descriptors, y = (t.to(device) for t in batch)
            predicted.append(model(*graph, y.shape[0], descriptors).float().cpu())
            targets.append(y.cpu())
        z, y = torch.cat(predicted), torch.cat(targets)
        error = (z - y) * self.std  # in the property's units
        return {
            "loss": F.mse_loss(z, y).item(),
            "rmse": error.pow(2).mean().sqrt().item(),
            "mae": error.abs().mean().item(),
        }

    @torch.no_grad()
    def predict_scores(self, model: nn.Module, smiles: list[str]) -> list[Tensor | str]:
        """The predicted property of each SMILES, in the dataset's units.

        Any molecule RDKit parses is predicted, also one without bonds (no messages:
        its atoms' readout is W_a [x_v || 0]) or without heavy atoms (H2, H+).
        """

        def read(text: str):
            if not text.strip():
                raise ArchlabError("the SMILES is empty")
            mol = parse_smiles(text.strip())
            if mol is None:
                raise ArchlabError("RDKit cannot parse this SMILES")
            return mol

        def score(mols: list) -> Tensor:
            if self.data.descriptors:
                compute = DESCRIPTOR_SETS[self.data.descriptors].compute
                raw = torch.tensor([compute(mol) for mol in mols], dtype=torch.float64)
                descriptors = self._normalise(raw)
            else:
                descriptors = torch.zeros(len(mols), 0)
            device = next(model.parameters()).device
            graph = collate([featurise(mol) for mol in mols])
            x, edge_index, edge_attr, batch, d = (t.to(device) for t in (*graph, descriptors))
            z = model(x, edge_index, edge_attr, batch, len(mols), d).float().cpu()
            return z * self.std + self.mean

        return score_each(smiles, read, score)

    def save_artifacts(self, run_dir: Path) -> None:
        table = TABLES[self.data.dataset]
        artifact = {
            "dataset": table.dataset,
            "target": table.target,
            "unit": table.unit,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "featuriser": FEATURISER,
            "descriptors": None,
        }
        if self.data.descriptors:
            artifact["descriptors"] = {
                "set": self.data.descriptors,
                "names": self._descriptor_names(),
            }
        if self.scaler is not None:
            artifact["descriptors"].update(
                mean=self.scaler.mean.tolist(), std=self.scaler.std.tolist(), clip=self.scaler.clip
            )
        atomic_write_text(run_dir / ARTIFACT, json.dumps(artifact, indent=2) + "\n")

    def load_artifacts(self, run_dir: Path) -> None:
        path = run_dir / ARTIFACT
        try:
            artifact = json.loads(path.read_text("utf-8"))
            mean, std, featuriser = artifact["mean"], artifact["std"], artifact["featuriser"]
        except (OSError, ValueError, KeyError, TypeError):
            raise CheckpointError(f"{path} is missing or is not a molecule-task artifact") from None
        if featuriser != json.loads(json.dumps(FEATURISER)):
            raise CheckpointError(
                f"{run_dir} was trained with other atom/bond features than this archlab "
                "computes; retrain it"
            )
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)
        if self.data.descriptors:
            self.scaler = self._load_scaler(artifact.get("descriptors"), path)

    def _load_scaler(self, saved, path: Path) -> DescriptorScaler | None:
        """The descriptor statistics a run was trained with, if this RDKit computes the same."""
        try:
            names = saved["names"]
            scaler = None
            if DESCRIPTOR_SETS[self.data.descriptors].scaled:
                scaler = DescriptorScaler(
                    torch.tensor(saved["mean"], dtype=torch.float64),
                    torch.tensor(saved["std"], dtype=torch.float64),
                    float(saved["clip"]),
                )
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{path} holds no descriptor statistics; retrain the run"
            ) from None
        if saved.get("set") != self.data.descriptors or names != self._descriptor_names():
            raise CheckpointError(
                f"{path.parent} was trained with other molecule descriptors than this RDKit "
                f"{rdkit_version()} computes; retrain it"
            )
        return scaler
