"""Molecules from SMILES: MoleculeNet's ESOL, FreeSolv and Lipophilicity, as graphs.

Each CSV row is a SMILES string and a measured property (Wu et al. 2018,
"MoleculeNet: a benchmark for molecular machine learning").  RDKit parses the
SMILES; a molecule becomes a graph whose nodes are its heavy atoms and whose edges
are its bonds, each bond stored in both directions (edge 2b is i -> j, edge 2b + 1
is j -> i):

    x          (atoms, ATOM_DIM)    element, degree, formal charge, hybridisation and
                                    total hydrogen count one-hot (each with an "other"
                                    slot), then the aromatic and in-ring flags
    edge_index (2, 2 * bonds)       source row, target row
    edge_attr  (2 * bonds, BOND_DIM) bond type and stereo one-hot, conjugated and
                                    in-ring flags

A SMILES that RDKit cannot parse is skipped and reported in one warning per file
that names its line; RDKit's own error messages are silenced.  Reading and
featurising ESOL takes 0.4 s and Lipophilicity 3 s (on a busy 2-core machine), a
small part of a training run, so the graphs are not cached.

Molecule descriptors, ``rdkit2d``: RDKit's 2-D descriptors, every function of
``rdkit.Chem.Descriptors.descList`` in its order (217 in RDKit 2026.09), as
chemprop 2's ``rdkit_2d`` featurizer computes them, with NaN and +-inf (e.g. the
BCUT2D values of a lone ion) replaced by 0, chemprop's ``replace_nan_token``.
They take about 3 ms a molecule (3 s for ESOL, on a busy 2-core machine), so a
dataset's table is cached in ``$ARCHLAB_CACHE/molecules``, keyed by the file's
SHA-256, the RDKit version and the descriptor names.  :class:`DescriptorScaler` normalises them
with the statistics of the training split only:

    z_j = clip((d_j - mu_j) / sigma_j, -5, 5)     mu_j, sigma_j over the training split
    z_j = 0                                       if sigma_j = 0 (constant in training)

This is chemprop's default scaling of features (a ``StandardScaler`` fitted on
the training data), clipped: the descriptors are heavy-tailed (Ipc, Kappa3 and
rare fragment counts reach 30 standard deviations on ESOL), and the clip keeps
one unusual test molecule from pushing the FFN far outside what it was trained
on.  A descriptor constant in training maps to 0: its weights would get no
gradient, and a test molecule would meet them untrained.

``rdkit2d_normalized`` is chemprop's other choice and the paper's: descriptastorus
maps each of 200 descriptors through the CDF of a distribution fitted beforehand on
a large external set of molecules, F_j(d_j) in [0, 1], which tames the heavy tails
without using the data set at all.  It costs about 30 ms a molecule (scipy's CDFs;
35 s for ESOL), cached the same way, and used as they are, not z-scored (chemprop's
``--no_features_scaling``, which its authors pair with these features).

Splits (80/10/10 by default, seeded): ``random_split`` deals a seeded permutation
as chemprop does; ``scaffold_split`` groups molecules by Bemis-Murcko scaffold and
puts whole groups, largest first, into train, then validation, then test, as
DeepChem's ScaffoldSplitter does (which breaks ties by first appearance; here
groups of equal size come in a seeded random order, so the seed matters).

RDKit and descriptastorus come with the ``chem`` extra (``pip install
'archlab[chem]'``) and are imported when a molecule is first read, so the datasets
are registered, and every other family works, without them.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.metadata
import json
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file
from torch import Tensor
from tqdm import tqdm

from archlab.data.files import (
    DataError,
    DataFile,
    Dataset,
    cache_root,
    fetch,
    get_dataset,
    register_dataset,
)
from archlab.errors import ConfigError, require
from archlab.io import atomic_write

if TYPE_CHECKING:
    from rdkit import Chem

DEEPCHEM_URL = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/"


def _chem(module: str = "rdkit.Chem") -> ModuleType:
    """An RDKit module (the ``chem`` extra); a clear error naming the extra without it."""
    return require(module, extra="chem", purpose="molecules (SMILES)")


def rdkit_version() -> str:
    return _chem("rdkit").__version__


@dataclass(frozen=True)
class MoleculeTable:
    """Where a dataset's CSV lives and which of its columns hold the SMILES and the target."""

    dataset: str
    path: str  # relative to the data root
    target: str
    smiles: str = "smiles"
    unit: str = ""


def _register(name: str, description: str, file: str, sha256: str, table: MoleculeTable):
    register_dataset(
        Dataset(
            name=name,
            description=description,
            files=(DataFile(file, sha256, DEEPCHEM_URL + Path(file).name),),
            licence="MoleculeNet (Wu et al. 2018); ChEMBL data is CC BY-SA 3.0",
        )
    )
    return table


TABLES = {
    "esol": _register(
        "esol",
        "ESOL aqueous solubility (Delaney 2004), 1,128 molecules, log mol/L",
        "molecules/delaney-processed.csv",
        "8c06a76f0c6487d29ab0f903e6a7a7139f189ab3c1178f159c8be8964602f189",
        MoleculeTable(
            "esol",
            "molecules/delaney-processed.csv",
            "measured log solubility in mols per litre",
            unit="log mol/L",
        ),
    ),
    "freesolv": _register(
        "freesolv",
        "FreeSolv hydration free energy (Mobley & Guthrie 2014), 642 molecules, kcal/mol",
        "molecules/SAMPL.csv",
        "ab5895d914ee87cb563bd7b9611e869527bba45bec6b014d34dc495a0f9dcb72",
        MoleculeTable("freesolv", "molecules/SAMPL.csv", "expt", unit="kcal/mol"),
    ),
    "lipo": _register(
        "lipo",
        "Lipophilicity, octanol/water logD at pH 7.4 (ChEMBL3301361), 4,200 molecules",
        "molecules/Lipophilicity.csv",
        "aed41590cb30609d51d8e08ad3ff06495a76e80e211358801f596b10da69bacd",
        MoleculeTable("lipo", "molecules/Lipophilicity.csv", "exp", unit="logD"),
    ),
}


class BadSmilesWarning(UserWarning):
    """Some rows of a molecule file were skipped because RDKit cannot parse their SMILES."""


# ----- featuriser -----


class OneHot:
    """Column indices of categorical values (each with a last "other" slot), then flags."""

    def __init__(self, categories: dict[str, tuple], flags: tuple[str, ...]) -> None:
        self.tables: list[tuple[dict, int]] = []
        offset = 0
        for choices in categories.values():
            lookup = {value: offset + i for i, value in enumerate(choices)}
            self.tables.append((lookup, offset + len(choices)))
            offset += len(choices) + 1
        self.flag_offset = offset
        self.dim = offset + len(flags)
        self.settings = {**{k: list(v) for k, v in categories.items()}, "flags": list(flags)}

    def columns(self, values: Sequence, flags: Sequence[bool]) -> list[int]:
        hot = [table.get(v, other) for (table, other), v in zip(self.tables, values, strict=True)]
        return hot + [self.flag_offset + i for i, flag in enumerate(flags) if flag]


ATOM = OneHot(
    {
        "element": ("H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Se", "Br", "I"),
        "degree": (0, 1, 2, 3, 4, 5),
        "formal_charge": (-2, -1, 0, 1, 2),
        "hybridisation": ("S", "SP", "SP2", "SP3", "SP3D", "SP3D2"),
        "total_hs": (0, 1, 2, 3, 4),
    },
    ("aromatic", "in_ring"),
)
BOND = OneHot(
    {
        "type": ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC"),
        "stereo": ("STEREONONE", "STEREOANY", "STEREOZ", "STEREOE", "STEREOCIS", "STEREOTRANS"),
    },
    ("conjugated", "in_ring"),
)
ATOM_DIM, BOND_DIM = ATOM.dim, BOND.dim
FEATURISER = {"atom": ATOM.settings, "bond": BOND.settings}  # saved with a run, checked on load


@dataclass
class MolGraph:
    x: Tensor  # (atoms, ATOM_DIM)
    edge_index: Tensor  # (2, 2 * bonds)
    edge_attr: Tensor  # (2 * bonds, BOND_DIM)

    @property
    def num_atoms(self) -> int:
        return self.x.shape[0]


def parse_smiles(smiles: str) -> Chem.Mol | None:
    """The RDKit molecule, or None if RDKit cannot parse it or it has no atoms (quietly)."""
    chem, rd_base = _chem(), _chem("rdkit.rdBase")
    with rd_base.BlockLogs():
        mol = chem.MolFromSmiles(smiles)
    return mol if mol is not None and mol.GetNumAtoms() > 0 else None


def _hot(rows: int, dim: int, columns: list[list[int]]) -> Tensor:
    out = torch.zeros(rows, dim)
    index = [(r, c) for r, cols in enumerate(columns) for c in cols]
    if index:
        r, c = zip(*index, strict=True)
        out[list(r), list(c)] = 1.0
    return out


def featurise(mol: Chem.Mol) -> MolGraph:
    """The graph of an RDKit molecule (implicit hydrogens are counted on atoms, not nodes)."""
    atoms = [
        ATOM.columns(
            (
                a.GetSymbol(),
                a.GetDegree(),
                a.GetFormalCharge(),
                str(a.GetHybridization()),
                a.GetTotalNumHs(),
            ),
            (a.GetIsAromatic(), a.IsInRing()),
        )
        for a in mol.GetAtoms()
    ]
    bonds = mol.GetBonds()
    ends = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in bonds]
    features = [
        BOND.columns(
            (str(b.GetBondType()), str(b.GetStereo())), (b.GetIsConjugated(), b.IsInRing())
        )
        for b in bonds
    ]
    both_ways = [pair for i, j in ends for pair in ((i, j), (j, i))]
    edge_index = torch.tensor(both_ways, dtype=torch.long).reshape(-1, 2).T.contiguous()
    edge_attr = _hot(len(bonds), BOND_DIM, features).repeat_interleave(2, dim=0)
    return MolGraph(_hot(len(atoms), ATOM_DIM, atoms), edge_index, edge_attr)


def collate(graphs: Sequence[MolGraph]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One disconnected graph of a batch: (x, edge_index, edge_attr, batch).

    Node ids of graph g are offset by the atoms of graphs 0..g-1; ``batch`` (atoms,)
    holds each atom's graph index.
    """
    atoms = torch.tensor([g.num_atoms for g in graphs])
    edges = torch.tensor([g.edge_index.shape[1] for g in graphs])
    offsets = atoms.cumsum(0) - atoms
    edge_index = torch.cat([g.edge_index for g in graphs], dim=1)
    edge_index = edge_index + offsets.repeat_interleave(edges)
    return (
        torch.cat([g.x for g in graphs]),
        edge_index,
        torch.cat([g.edge_attr for g in graphs]),
        torch.arange(len(graphs)).repeat_interleave(atoms),
    )


# ----- files -----


@dataclass
class Molecules:
    smiles: list[str]
    graphs: list[MolGraph]
    y: Tensor  # (molecules, 1)


def read_molecules(path: Path, target: str, smiles_column: str = "smiles") -> Molecules:
    """Parse a CSV of SMILES and targets; rows RDKit cannot parse are skipped and reported."""
    smiles, graphs, y, bad = [], [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (smiles_column, target) if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path} has no column {missing[0]!r} (it has {reader.fieldnames})")
        for row in reader:
            text = (row[smiles_column] or "").strip()
            try:
                value = float(row[target])
            except (TypeError, ValueError):
                raise DataError(
                    f"{path}, line {reader.line_num}: the {target!r} value {row[target]!r} "
                    "is not a number"
                ) from None
            mol = parse_smiles(text)
            if mol is None:
                bad.append(f"line {reader.line_num} {text!r}")
                continue
            smiles.append(text)
            graphs.append(featurise(mol))
            y.append(value)
    if bad:
        warnings.warn(
            f"{path}: skipped {len(bad)} SMILES that RDKit cannot parse: {', '.join(bad)}",
            BadSmilesWarning,
            stacklevel=2,
        )
    if not graphs:
        raise DataError(f"{path} holds no molecule that RDKit can parse")
    return Molecules(smiles, graphs, torch.tensor(y, dtype=torch.float32).unsqueeze(1))


def load_molecules(name: str) -> Molecules:
    """A registered molecule dataset (``esol``, ``freesolv``, ``lipo``), verified and parsed."""
    table = TABLES[name]
    return read_molecules(fetch(name)[table.path], table.target, table.smiles)


# ----- molecule descriptors -----

DESCRIPTOR_CLIP = 5.0


def rdkit2d_names() -> list[str]:
    """The names of RDKit's 2-D descriptors, in ``Descriptors.descList`` order."""
    descriptors = _chem("rdkit.Chem.Descriptors")  # 0.1 s to import, so only here
    return [name for name, _ in descriptors.descList]


def _finite(values: Iterable[float | None]) -> list[float]:
    """chemprop's ``replace_nan_token``: NaN, +-inf and a failed value (None) -> 0."""
    return [float(v) if v is not None and math.isfinite(v) else 0.0 for v in values]


def _or_none(func: Callable[[Chem.Mol], float], mol: Chem.Mol) -> float | None:
    """``func(mol)``, or None where the descriptor fails on this molecule.

    Some raise on valid molecules: SPS divides by the heavy atoms, which H2 or H+
    has none of.  descriptastorus, which chemprop calls, catches every such failure
    and gives NaN, which chemprop turns into 0 (:func:`_finite`).
    """
    try:
        return func(mol)
    except Exception:  # any failure of one descriptor, as descriptastorus
        return None


def rdkit2d(mol: Chem.Mol) -> list[float]:
    """RDKit's 2-D descriptors of a molecule (chemprop's ``rdkit_2d``); NaN, +-inf, failed -> 0."""
    descriptors = _chem("rdkit.Chem.Descriptors")
    with _chem("rdkit.rdBase").BlockLogs():
        return _finite(_or_none(func, mol) for _, func in descriptors.descList)


@functools.cache
def _cdf_generator():
    """descriptastorus' ``RDKit2DNormalized`` (1-2 s to import: scipy.stats)."""
    normalized = require(
        "descriptastorus.descriptors.rdNormalizedDescriptors",
        extra="chem",
        purpose="the rdkit2d_normalized molecule descriptors",
    )
    return normalized.RDKit2DNormalized()


def rdkit2d_normalized_names() -> list[str]:
    """The descriptors descriptastorus fitted a distribution to (200), in its order."""
    return [name for name, _ in _cdf_generator().columns]


def rdkit2d_normalized(mol: Chem.Mol) -> list[float]:
    """chemprop's ``rdkit_2d_normalized``: each descriptor d_j mapped to F_j(d_j) in [0, 1].

    F_j is the CDF of a distribution descriptastorus fitted to d_j over a large set of
    molecules (not this data set), so the value is the share of that population below
    the molecule.  chemprop 1 computes it from the SMILES; here from the parsed molecule,
    the same thing for RDKit's ``MolFromSmiles``.
    """
    with _chem("rdkit.rdBase").BlockLogs():
        return _finite(_cdf_generator().calculateMol(mol, ""))


def _descriptastorus_version() -> str:
    return importlib.metadata.version("descriptastorus")


@dataclass(frozen=True)
class DescriptorSet:
    """Molecule-level features: their names, one molecule's values, and what they depend on."""

    names: Callable[[], list[str]]
    compute: Callable[[Chem.Mol], list[float]]
    version: Callable[[], str]  # the library whose release may change the values
    scaled: bool  # z-scored with training statistics (DescriptorScaler), or used as they are


DESCRIPTOR_SETS = {
    "rdkit2d": DescriptorSet(rdkit2d_names, rdkit2d, rdkit_version, scaled=True),
    "rdkit2d_normalized": DescriptorSet(
        rdkit2d_normalized_names,
        rdkit2d_normalized,
        lambda: f"{rdkit_version()} descriptastorus {_descriptastorus_version()}",
        scaled=False,  # already in [0, 1]; chemprop's --no_features_scaling
    ),
}


def dataset_descriptors(name: str, smiles: Sequence[str], kind: str = "rdkit2d") -> Tensor:
    """Descriptors ``kind`` of each molecule of a registered dataset, (molecules, D) float64.

    Cached in ``$ARCHLAB_CACHE/molecules``, keyed by the files' SHA-256, the library
    versions and the descriptor names.
    """
    descriptors = DESCRIPTOR_SETS[kind]
    names = descriptors.names()
    key = json.dumps([[f.sha256 for f in get_dataset(name).files], descriptors.version(), names])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = cache_root() / "molecules" / f"{name}-{kind}-{digest}.safetensors"
    try:
        table = load(path.read_bytes())[kind]  # read, not mapped: the file may change
        if table.shape == (len(smiles), len(names)):
            return table
    except (OSError, SafetensorError, KeyError):
        pass  # absent or unreadable: compute it afresh
    progress = tqdm(smiles, f"{name} {kind}", disable=None)  # off when not on a terminal
    rows = [descriptors.compute(parse_smiles(s)) for s in progress]
    table = torch.tensor(rows, dtype=torch.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file({kind: table}, tmp))
    return table


@dataclass
class DescriptorScaler:
    """z_j = clip((d_j - mu_j) / sigma_j, -clip, clip), and 0 where sigma_j = 0."""

    mean: Tensor  # (D,) float64, over the training split
    std: Tensor  # (D,) float64, 0 for a descriptor constant in training
    clip: float = DESCRIPTOR_CLIP

    @classmethod
    def fit(cls, train: Tensor) -> DescriptorScaler:
        train = train.double()
        constant = train.amax(0) == train.amin(0)  # exactly 0, not a rounding error's 1e-17
        return cls(train.mean(0), train.std(0, correction=0).masked_fill(constant, 0.0))

    def __call__(self, descriptors: Tensor) -> Tensor:
        """Normalised descriptors, float32, of the same shape (molecules, D)."""
        scale = torch.where(self.std > 0, 1.0 / self.std, torch.zeros_like(self.std))
        z = (descriptors.double() - self.mean) * scale
        return z.clamp(-self.clip, self.clip).float()


# ----- splits -----

SPLITS = ("train", "val", "test")


def check_split_sizes(sizes: Sequence[float]) -> None:
    if len(sizes) != 3 or min(sizes) <= 0 or not math.isclose(sum(sizes), 1.0):
        raise ConfigError(f"data.sizes must be three positive fractions summing to 1: {sizes}")


def _cutoffs(n: int, sizes: Sequence[float]) -> tuple[int, int]:
    check_split_sizes(sizes)
    return int(sizes[0] * n), int((sizes[0] + sizes[1]) * n)


def random_split(n: int, seed: int, sizes: Sequence[float] = (0.8, 0.1, 0.1)) -> dict:
    """Indices of train/val/test: a seeded permutation cut at 80 % and 90 % (chemprop)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    train_end, val_end = _cutoffs(n, sizes)
    return {"train": order[:train_end], "val": order[train_end:val_end], "test": order[val_end:]}


def scaffold(smiles: str) -> str:
    """The Bemis-Murcko scaffold SMILES ('' for a molecule without rings)."""
    murcko = _chem("rdkit.Chem.Scaffolds.MurckoScaffold")  # imports AllChem: 0.2 s, so here
    return murcko.MurckoScaffoldSmiles(mol=parse_smiles(smiles), includeChirality=False)


def scaffold_split(smiles: Sequence[str], seed: int, sizes: Sequence[float] = (0.8, 0.1, 0.1)):
    """Indices of train/val/test with no scaffold in two splits (DeepChem's greedy rule).

    Scaffold groups go largest first (equal sizes in a seeded order) into train while
    it stays within its share, else into validation while that stays within its
    share, else into test.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(smiles):
        groups[scaffold(s)].append(i)
    sets = list(groups.values())
    shuffle = torch.randperm(len(sets), generator=torch.Generator().manual_seed(seed)).tolist()
    sets = sorted((sets[i] for i in shuffle), key=len, reverse=True)  # sort is stable
    train_end, val_end = _cutoffs(len(smiles), sizes)
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    for group in sets:
        if len(out["train"]) + len(group) <= train_end:
            out["train"] += group
        elif len(out["train"]) + len(out["val"]) + len(group) <= val_end:
            out["val"] += group
        else:
            out["test"] += group
    return out
