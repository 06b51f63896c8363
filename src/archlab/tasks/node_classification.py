"""Semi-supervised node classification on one graph (Planetoid citation graphs, karate club).

Transductive, full-batch, as Kipf & Welling (2017) and Veličković et al. (2018):
every step runs the model on the whole graph and takes the cross-entropy on the
labelled training nodes only; one step is one epoch, so the trainer's batch
settings (batch_size, eval_batch_size, grad_accum) mean nothing here and are
refused.  Metrics are loss and accuracy on the validation and test nodes; the kept
model is the one with the best validation accuracy, or as ``trainer.select_by``
says: ``loss``, or ``loss_and_accuracy`` (GAT's rule, see
:meth:`NodeClassificationTask.select`).  Features are row-normalised (each node's
features sum to 1) and kept sparse, as in the papers' code.

Karate has no held-out labels: its validation nodes are the two labelled ones
(select the kept model by their loss, ``trainer.select_by: loss``), its test nodes
the other 32.  The model's node outputs are also drawn: ``embedding.png`` in the
run directory shows each member at its 2-D output, coloured by true faction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Config, Count, Interval, OneOf, Probability
from archlab.data.graphs import PLANETOID, NodeGraph, load_node_graph, perturb_edges
from archlab.errors import ConfigError
from archlab.models import roles
from archlab.nn.graph import csr_tensor
from archlab.tasks import Selection, Task, register_task

DATASETS = (*PLANETOID, "karate")


@dataclass
class NodeClassificationData(Config):
    section: ClassVar[str] = "data"

    dataset: Annotated[str, OneOf(DATASETS)] = "cora"
    normalize_features: bool = True  # row-normalise, as Kipf & Welling and Veličković et al.
    # structure noise (data.graphs.perturb_edges), for training and evaluation alike: drop
    # this share of the edges, or add this share of random new ones, drawn by noise_seed
    edge_drop: Probability = 0.0
    edge_add: Annotated[float, Interval(0.0, 1.0)] = 0.0
    noise_seed: Count = 0


def row_normalize(x: Tensor) -> Tensor:
    """Each row divided by its sum (rows summing to 0 are left as they are); keeps the layout."""
    if x.layout == torch.sparse_csr:
        rows = torch.repeat_interleave(
            torch.arange(x.shape[0]), x.crow_indices().diff(), output_size=x.values().numel()
        )
        sums = torch.zeros(x.shape[0]).index_add_(0, rows, x.values())
        values = x.values() / sums.clamp_min(1e-12)[rows]
        return csr_tensor(x.crow_indices(), x.col_indices(), values, x.shape)
    return x / x.sum(dim=1, keepdim=True).clamp_min(1e-12)


@register_task
class NodeClassificationTask(Task):
    name = "node_classification"
    DataConfig = NodeClassificationData
    roles = (roles.NodeModel,)
    metric = "accuracy"
    selectable = ("loss", "loss_and_accuracy")
    unused_trainer_keys = dict.fromkeys(
        ("batch_size", "eval_batch_size", "grad_accum"), "every step trains on the whole graph"
    )
    derived_model_keys = {
        "in_dim": "the dataset's node features",
        "out_dim": "the dataset's classes",
    }
    unit = "nodes"
    data_parallel = False

    def setup(self) -> None:
        graph = load_node_graph(self.data.dataset)
        if self.data.normalize_features:
            graph.x = row_normalize(graph.x)
        d = self.data
        if d.edge_drop or d.edge_add:
            noise = torch.Generator().manual_seed(d.noise_seed)
            graph.edge_index = perturb_edges(
                graph.edge_index, graph.num_nodes, d.edge_drop, d.edge_add, noise
            )
        self.graph: NodeGraph = graph

    def select(
        self, metrics: dict[str, float], best: dict[str, float] | None, by: str
    ) -> Selection:
        """``loss_and_accuracy``: GAT's early stopping "on both the loss and accuracy".

        As the authors' code does it: a result that matches or beats the best accuracy or
        the best loss so far resets the patience; the model is kept only when it does both.
        """
        if by != "loss_and_accuracy":
            return super().select(metrics, best, by)
        loss, accuracy = metrics["loss"], metrics["accuracy"]
        if best is None:
            return Selection(True, True, {"loss": loss, "accuracy": accuracy})
        lower, higher = loss <= best["loss"], accuracy >= best["accuracy"]
        new = {"loss": min(loss, best["loss"]), "accuracy": max(accuracy, best["accuracy"])}
        return Selection(lower and higher, lower or higher, new)

    def model_overrides(self) -> dict:
        return {"in_dim": self.graph.x.shape[1], "out_dim": self.graph.num_classes}

    def steps_per_epoch(self, batch_size: int) -> int:
        return 1  # full batch: one step sees the whole graph

    def train_batch(self, step: int, batch_size: int, seed: int) -> NodeGraph:
        return self.graph  # the same tensors every step, so models can cache Â

    def batch_size_of(self, batch: NodeGraph) -> int:
        return batch.num_nodes

    def loss(self, model: nn.Module, batch: NodeGraph) -> Tensor:
        mask = batch.masks["train"]
        return F.cross_entropy(model(batch.x, batch.edge_index)[mask].float(), batch.y[mask])

    def splits(self) -> tuple[str, ...]:
        return ("val", "test")

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        g, mask = self.graph, self.graph.masks[split]
        logits = model(g.x, g.edge_index)[mask].float()
        y = g.y[mask]
        return {
            "loss": F.cross_entropy(logits, y).item(),
            "accuracy": (logits.argmax(dim=1) == y).float().mean().item(),
        }

    def report(self, model: nn.Module, run_dir: Path) -> None:
        if self.data.dataset == "karate":
            self.plot_embedding(model, run_dir / "embedding.png")

    @torch.no_grad()
    def plot_embedding(self, model: nn.Module, path: Path) -> None:
        """Each node at its 2-D model output, coloured by its true class; labelled nodes ringed."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        was_training = model.training
        model.eval()
        z = model(self.graph.x, self.graph.edge_index).float()
        model.train(was_training)
        if z.shape[1] != 2:
            raise ConfigError("the embedding plot needs a model with 2 outputs per node")
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(z[:, 0], z[:, 1], c=self.graph.y, cmap="coolwarm", s=60, edgecolors="k")
        train = self.graph.masks["train"]
        ax.scatter(z[train, 0], z[train, 1], s=250, facecolors="none", edgecolors="k", lw=2)
        ax.set_title(f"{self.data.dataset}: node outputs by true class (ringed: labelled)")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
