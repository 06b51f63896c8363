"""Message passing on directed bonds: the D-MPNN of Yang et al. (2019), chemprop's model.

Yang et al. 2019, "Analyzing Learned Molecular Representations for Property
Prediction" (J. Chem. Inf. Model. 59, 3370).  Hidden states live on directed
bonds v -> w, so a message never flows straight back along the bond it came by:

    h_vw^0     = ReLU(W_i [x_v || e_vw])
    m_vw^{t+1} = sum_{k in N(v) \\ w} h_kv^t  =  a_v - h_wv,        a_v = sum_{k in N(v)} h_kv^t
    h_vw^{t+1} = ReLU(h_vw^0 + W_m m_vw^{t+1})                     t = 0 .. depth - 1
    m_v        = sum_{k in N(v)} h_kv^depth
    h_v        = ReLU(W_a [x_v || m_v])
    y          = FFN([readout_{v in molecule} h_v || d])

with dropout after every ReLU, as the paper writes it.  ``depth`` counts the
updates of h; chemprop's ``--depth`` also counts h^0, so its depth 3 is ``depth=2``
here.  chemprop's code adds W_i [x_v || e_vw] before its ReLU, not h^0:
h_vw^{t+1} = ReLU(W_i [x_v || e_vw] + W_m m_vw^{t+1}), which ``update="chemprop"`` selects
(the default ``"paper"`` is the formula above).  As
in chemprop, W_i and W_m have no bias, the readout is a mean over atoms by
default (the recipes use a sum, which keeps the molecule's size), and the FFN is
``ffn_layers`` linear layers with ReLU and dropout between them.

d is optional: ``descriptor_dim`` molecule-level features (none by default)
concatenated to the learned readout before the FFN, the paper's "D-MPNN +
features" (chemprop's ``--features_generator``; the paper used RDKit 2-D
descriptors, CDF-normalised).  The task computes and normalises them (the
molecule task's ``data.descriptors: rdkit2d``, see archlab.data.molecules).

``mpnn_ensemble`` is ``members`` independently initialised D-MPNNs whose predictions
are averaged, chemprop's ``--ensemble_size`` (archlab.nn.ensemble); the molecule
task trains each member on its own loss and its own batches.

Inputs are a batch of molecules as one disconnected graph: x (atoms, atom_dim),
edge_index (2, E) with every bond in both directions, edge_attr (E, bond_dim),
batch (atoms,) holding each atom's molecule index, and with descriptors d
(molecules, descriptor_dim); the output is (molecules, n_targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn

from archlab.config import Config, Count, OneOf, Probability, Size
from archlab.errors import ShapeError
from archlab.models import roles
from archlab.nn.ensemble import Ensemble
from archlab.nn.graph import READOUTS, Readout, check_graph, reverse_edge_index, scatter
from archlab.registry import register_model

UPDATES = ("paper", "chemprop")


@dataclass
class MPNNConfig(Config):
    atom_dim: Size = 42  # set by the task from its featuriser (archlab.data.molecules)
    bond_dim: Size = 14
    hidden: Size = 300
    depth: Count = 3
    dropout: Probability = 0.0
    readout: Annotated[str, OneOf(READOUTS)] = "mean"
    ffn_hidden: Size = 300
    ffn_layers: Size = 2
    n_targets: Size = 1
    descriptor_dim: Count = 0  # molecule-level features d, set by the task (data.descriptors)
    # h^{t+1} = ReLU(h^0 + W_m m); "chemprop": ReLU(W_i [x || e] + W_m m)
    update: Annotated[str, OneOf(UPDATES)] = "paper"


@register_model("mpnn", MPNNConfig)
class DMPNN(nn.Module):
    """D-MPNN (Yang et al. 2019): messages on directed bonds, a readout (+ features), an FFN."""

    role = roles.MoleculeModel

    def __init__(self, config: MPNNConfig) -> None:
        super().__init__()
        self.config = c = config
        self.W_i = nn.Linear(c.atom_dim + c.bond_dim, c.hidden, bias=False)
        self.W_m = nn.Linear(c.hidden, c.hidden, bias=False)
        self.W_a = nn.Linear(c.atom_dim + c.hidden, c.hidden)
        self.dropout = nn.Dropout(c.dropout)
        self.readout = Readout(c.readout, c.hidden)
        layers: list[nn.Module] = []
        width = c.hidden + c.descriptor_dim
        for _ in range(c.ffn_layers - 1):
            layers += [nn.Dropout(c.dropout), nn.Linear(width, c.ffn_hidden), nn.ReLU()]
            width = c.ffn_hidden
        self.ffn = nn.Sequential(*layers, nn.Dropout(c.dropout), nn.Linear(width, c.n_targets))

    def _check(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor, n: int):
        c = self.config
        atoms = check_graph(x, edge_index, features=c.atom_dim)
        if edge_attr.shape != (edge_index.shape[1], c.bond_dim):
            raise ShapeError(
                f"edge_attr must be (edges, bond_dim) = ({edge_index.shape[1]}, {c.bond_dim}), "
                f"got {tuple(edge_attr.shape)}"
            )
        if batch.shape != (atoms,) or batch.dtype != torch.long:
            raise ShapeError(
                f"batch must be a long tensor of one molecule index per atom ({atoms},), got "
                f"{batch.dtype} {tuple(batch.shape)}"
            )
        if int(batch.min()) < 0 or int(batch.max()) >= n:
            raise ShapeError(f"batch must hold molecule indices 0..{n - 1}")

    def encode(
        self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor, num_graphs: int
    ) -> Tensor:
        """One vector per molecule (num_graphs, hidden), before the FFN."""
        self._check(x, edge_index, edge_attr, batch, num_graphs)
        atoms = x.shape[0]
        source, target = edge_index
        rev = reverse_edge_index(edge_index, atoms)
        # index_select, not x[source]: its backward is an index_add, several times faster
        inputs = self.W_i(torch.cat([x.index_select(0, source), edge_attr], dim=1))
        h0 = torch.relu(inputs)
        skip = h0 if self.config.update == "paper" else inputs
        h = self.dropout(h0)
        for _ in range(self.config.depth):
            a = scatter(h, target, atoms)  # a_v = sum of the states on bonds into v
            m = a.index_select(0, source) - h.index_select(0, rev)
            h = self.dropout(torch.relu(skip + self.W_m(m)))
        m_v = scatter(h, target, atoms)
        h_v = self.dropout(torch.relu(self.W_a(torch.cat([x, m_v], dim=1))))
        return self.readout(h_v, batch, num_graphs)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        batch: Tensor,
        num_graphs: int,
        descriptors: Tensor | None = None,
    ) -> Tensor:
        """Predicted properties (num_graphs, n_targets); ``descriptors`` d if the model has any."""
        readout = self.encode(x, edge_index, edge_attr, batch, num_graphs)
        d = readout.new_zeros(num_graphs, 0) if descriptors is None else descriptors
        if d.shape != (num_graphs, self.config.descriptor_dim):
            raise ShapeError(
                f"descriptors must be (molecules, descriptor_dim) = ({num_graphs}, "
                f"{self.config.descriptor_dim}), got {tuple(d.shape)}"
            )
        return self.ffn(torch.cat([readout, d.to(readout.dtype)], dim=1))


@dataclass
class MPNNEnsembleConfig(MPNNConfig):
    members: Size = 5


@register_model("mpnn_ensemble", MPNNEnsembleConfig)
class DMPNNEnsemble(Ensemble):
    """An ensemble of D-MPNNs: the mean of ``members`` independently trained predictions."""

    role = roles.MoleculeModel

    def __init__(self, config: MPNNEnsembleConfig) -> None:
        super().__init__(lambda: DMPNN(config), config.members)
        self.config = config
