"""Link prediction on a knowledge graph: rank the true head or tail among all entities.

**Evaluation** (PyKEEN's ``RankBasedEvaluator``, filtered, both sides).  For each test
triple (h, r, t) every entity e is scored as a tail, f(h, r, e), and as a head,
f(e, r, t).  The other known completions -- every (h, r, e) or (e, r, t) in train,
validation or test, as the filtered setting of Bordes et al. (2013) and the ConvE and
RotatE authors' code -- are left out, and the true entity's rank is the *realistic*
one, the mean of the optimistic and pessimistic ranks, so that ties cost what they
cost on average:

    rank_opt = #{e : s_e > s_true} + 1,   rank_pes = #{e : s_e >= s_true} (the true one
    included),   rank = (rank_opt + rank_pes) / 2

    MRR = mean 1/rank,   MR = mean rank,   Hits@k = mean [rank <= k]

over both sides of every triple (2 x the split's triples).  Queries are scored in
chunks of ``trainer.eval_batch_size`` (memory: that many rows of scores), the filter
is a CSR index of the known triples, and the ranks of a chunk are a few tensor
operations; nothing loops over triples.

**Training**, as PyKEEN's two training loops:

- sLCWA: each positive triple gets K negatives, its head (even steps) or its tail (odd
  steps) replaced by an entity drawn uniformly from the others (PyKEEN's basic sampler
  never draws the true entity, nor does this one); with ``filter_negatives`` a negative
  that is itself a training triple is dropped (as the RotatE authors' sampler).  One
  side per batch, alternating, as the RotatE authors' code, so that the query q(h, r)
  (or q'(r, t)) is built once per positive and compared with its K + 1 candidates.
  Losses over positive scores s and negative scores s'_k:

      margin     mean over pairs of max(0, lambda + s'_k - s)                   (PyKEEN default)
      softplus   mean over all scores of softplus(-y f), y = +-1: the BCE with logits
      nssa       self-adversarial negative sampling (Sun et al. 2019, eq. 5):
                 1/2 [ -log sigma(gamma + s) - sum_k p_k log sigma(-s'_k - gamma) ],
                 p = softmax(alpha s') without gradient (alpha = 0: uniform)

  (PyKEEN's NSSA and the paper's agree: the paper's RotatE score holds gamma itself,
  so its recipes set ``margin: 0``.)  With ``subsampling_weights`` each positive counts
  1/sqrt(#(h, r, .) + #(., r, t) + 8), as the RotatE authors' code weights it.
- LCWA (1-to-N): each (h, r) of the training set against every entity at once,
  target 1 for its known tails (PyKEEN's LCWA: tails); ``bce`` (binary cross-entropy on
  each score) or ``ce`` (softmax cross-entropy against the normalised targets).

**Regularisers** (PyKEEN's LpRegularizer): ``entity_regularizer`` and
``relation_regularizer`` weigh the mean normalised Lp norm, ||x||_p / E||z||_p
(z ~ N(0, I_d), complex vectors counting d complex coordinates), of every vector the
batch looks up -- positives and negatives as PyKEEN's two ``score_hrt`` calls look them
up, or every entity in LCWA -- added to the loss.  **Constraints** (unit-norm entities,
unit-modulus RotatE relations) are the model's, applied after every optimizer step.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Config, NonNegativeFloat, OneOf, PositiveFloat, Size
from archlab.data.batching import stream_seed
from archlab.data.kg import KG_DATASETS, load_kg
from archlab.errors import ArchlabError, ConfigError
from archlab.models import roles
from archlab.tasks import Task, register_task, unwrap

SLCWA_LOSSES = ("margin", "softplus", "nssa")
LCWA_LOSSES = ("bce", "ce")
HITS = (1, 3, 10)


@dataclass
class LinkPredictionData(Config):
    section: ClassVar[str] = "data"

    dataset: Annotated[str, OneOf(tuple(KG_DATASETS))] = "nations"
    training: Annotated[str, OneOf(("slcwa", "lcwa"))] = "slcwa"
    # sLCWA: margin, softplus or nssa; LCWA: bce or ce
    loss: Annotated[str, OneOf(SLCWA_LOSSES + LCWA_LOSSES)] = "margin"
    margin: NonNegativeFloat = 1.0  # lambda of the margin ranking loss; gamma of NSSA
    adversarial_temperature: NonNegativeFloat = 1.0  # alpha of NSSA (0: uniform weights)
    num_negatives: Size = 64  # sLCWA: negatives per positive
    filter_negatives: bool = False  # sLCWA: drop negatives that are training triples
    subsampling_weights: bool = False  # sLCWA: the RotatE authors' frequency weights
    entity_regularizer: NonNegativeFloat = 0.0  # weight of the Lp regulariser on entities
    relation_regularizer: NonNegativeFloat = 0.0  # and on relations
    regularizer_p: PositiveFloat = 2.0
    # evaluate during training on the first N validation triples (None: all); the
    # final evaluation always ranks the whole split
    val_triples: Size | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        allowed = SLCWA_LOSSES if self.training == "slcwa" else LCWA_LOSSES
        if self.loss not in allowed:
            raise ConfigError(
                f"{self.key('loss')} must be one of {', '.join(allowed)} for "
                f"{self.key('training')}={self.training}, got {self.loss!r}"
            )


# ----- the known triples, indexed -----


class CompletionIndex:
    """The entities that complete each (h, r, ?) (side "tail") or (?, r, t) (side "head")
    among some triples, as a CSR index: sorted query keys, offsets, entities."""

    def __init__(self, triples: Tensor, num_entities: int, num_relations: int, side: str):
        self.side, self.num_relations = side, num_relations
        fixed, target = (0, 2) if side == "tail" else (2, 0)
        keys = triples[:, fixed] * num_relations + triples[:, 1]
        order = torch.argsort(keys * num_entities + triples[:, target])
        self.keys, counts = torch.unique_consecutive(keys[order], return_counts=True)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        self.entities = triples[order, target]

    def key(self, entity: Tensor, relation: Tensor) -> Tensor:
        """The query key of (entity, relation): h and r for tails, t and r for heads."""
        return entity * self.num_relations + relation

    def lookup(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        """(row, entity) pairs: for query ``keys[row]`` each entity that completes it."""
        pos = torch.searchsorted(self.keys, keys).clamp_max(len(self.keys) - 1)
        start = self.offsets[pos]
        count = torch.where(self.keys[pos] == keys, self.offsets[pos + 1] - start, 0)
        rows = torch.repeat_interleave(torch.arange(len(keys)), count)
        first = torch.repeat_interleave(count.cumsum(0) - count, count)
        return rows, self.entities[start[rows] + torch.arange(len(rows)) - first]


def triple_keys(triples: Tensor, num_entities: int, num_relations: int) -> Tensor:
    """One integer per (h, r, t): (h R + r) N + t."""
    return (triples[..., 0] * num_relations + triples[..., 1]) * num_entities + triples[..., 2]


# ----- filtered ranks -----


class Ranks(NamedTuple):
    optimistic: Tensor  # #(s > s_true) + 1
    pessimistic: Tensor  # #(s >= s_true), the true one included

    @property
    def realistic(self) -> Tensor:
        return (self.optimistic + self.pessimistic).double() / 2


def filtered_ranks(scores: Tensor, targets: Tensor, rows: Tensor, cols: Tensor) -> Ranks:
    """Ranks of ``scores[i, targets[i]]`` in row i of ``scores`` (B, N), leaving out the
    filtered entries (``rows``, ``cols``) other than the target itself.

    ``scores`` is overwritten.  A true score that is NaN (a diverged model) ranks last.
    """
    batch = torch.arange(scores.shape[0], device=scores.device)
    true = scores[batch, targets].unsqueeze(1)
    scores[rows, cols] = float("nan")
    scores[batch, targets] = float("nan")  # counted once, below
    optimistic = (scores > true).sum(1) + 1
    pessimistic = (scores >= true).sum(1) + 1
    last = (~scores.isnan()).sum(1) + 1
    lost = true.squeeze(1).isnan()
    return Ranks(torch.where(lost, last, optimistic), torch.where(lost, last, pessimistic))


def rank_metrics(ranks: Tensor) -> dict[str, float]:
    """MRR, MR and Hits@1/3/10 of realistic ranks."""
    ranks = ranks.double()
    metrics = {"mrr": ranks.reciprocal().mean().item(), "mr": ranks.mean().item()}
    for k in HITS:
        metrics[f"hits@{k}"] = (ranks <= k).double().mean().item()
    return metrics


@torch.no_grad()
def rank_triples(
    model: nn.Module, triples: Tensor, filters: dict[str, CompletionIndex], batch_size: int
) -> Tensor:
    """The realistic filtered rank of each triple's tail, then of each triple's head (2T,)."""
    device = next(model.parameters()).device
    out = []
    for side in ("tail", "head"):
        index = filters[side]
        for chunk in triples.split(batch_size):
            h, r, t = chunk.unbind(1)
            if side == "tail":
                scores, target, key = model(h.to(device), r.to(device), None), t, index.key(h, r)
            else:
                scores, target, key = model(None, r.to(device), t.to(device)), h, index.key(t, r)
            rows, cols = index.lookup(key)
            ranks = filtered_ranks(
                scores.float(), target.to(device), rows.to(device), cols.to(device)
            )
            out.append(ranks.realistic.cpu())
    return torch.cat(out)


# ----- losses and regularisers -----


def _weighted_mean(x: Tensor, weight: Tensor) -> Tensor:
    return (x * weight).sum() / weight.sum().clamp_min(1e-12)


def slcwa_loss(
    data: LinkPredictionData, pos: Tensor, neg: Tensor, valid: Tensor, weight: Tensor
) -> Tensor:
    """The sLCWA loss of positive scores (B,) and negative scores (B, K) (see the module)."""
    pair_weight = valid * weight.unsqueeze(1)
    if data.loss == "margin":
        return _weighted_mean(F.relu(data.margin + neg - pos.unsqueeze(1)), pair_weight)
    if data.loss == "softplus":  # softplus(-y f): the positives and the negatives in one mean
        total = (F.softplus(-pos) * weight).sum() + (F.softplus(neg) * pair_weight).sum()
        return total / (weight.sum() + pair_weight.sum()).clamp_min(1e-12)
    gamma = data.margin
    p = torch.softmax(
        (data.adversarial_temperature * neg.detach()).masked_fill(~valid, -math.inf), 1
    )
    p = p.nan_to_num(0.0)  # a row with no valid negative
    neg_loss = (p * -F.logsigmoid(-neg - gamma)).sum(1)
    return 0.5 * (
        _weighted_mean(-F.logsigmoid(gamma + pos), weight) + _weighted_mean(neg_loss, weight)
    )


def lcwa_loss(data: LinkPredictionData, scores: Tensor, labels: Tensor) -> Tensor:
    """1-to-N: BCE on every score, or the cross-entropy against the normalised targets."""
    if data.loss == "bce":
        return F.binary_cross_entropy_with_logits(scores, labels)
    return F.cross_entropy(scores, labels / labels.sum(1, keepdim=True))


def expected_norm(p: float, d: int) -> float:
    """E ||z||_p for z ~ N(0, I_d): (d 2^{p/2} Gamma((p + 1)/2) / sqrt(pi))^{1/p} (PyKEEN)."""
    return (d * 2 ** (p / 2) * math.gamma((p + 1) / 2) / math.sqrt(math.pi)) ** (1 / p)


def normalised_norms(x: Tensor, p: float) -> Tensor:
    """||x_i||_p / E||z||_p of each row of a real (n, d) or complex (n, d) tensor.

    A complex coordinate's modulus is the L2 norm of its (Re, Im) pair: its gradient is
    0 where the pair underflows to 0, where ``abs`` gives NaN (z / |z| with |z| = 0). The
    regulariser drives coordinates to denormal floats: ComplEx on Kinship at lr 1e-2 got
    a NaN loss at step 8,642 with 804 of 2,500 relation floats below 1e-30.
    """
    values = torch.linalg.vector_norm(torch.view_as_real(x), dim=-1) if x.is_complex() else x
    return torch.linalg.vector_norm(values, ord=p, dim=-1) / expected_norm(p, x.shape[-1])


# ----- the task -----


@register_task
class LinkPredictionTask(Task):
    name = "link_prediction"
    DataConfig = LinkPredictionData
    roles = (roles.KGEModel,)
    metric = "mrr"
    selectable = ("hits@1", "hits@3", "hits@10", "mr")
    verbs = frozenset({"predict"})
    predicts = "query"
    predict_options = frozenset({"side", "top_k"})
    # the query's two parts as the server names them: the known entity (the head, or
    # with side "head" the tail) and the relation; ``predict`` reads them in the command
    # line's order (HEAD RELATION, or RELATION TAIL)
    predict_inputs = ("ENTITY", "RELATION")
    derived_model_keys = {
        "num_entities": "the dataset's entities",
        "num_relations": "the dataset's relations",
    }
    unit = "triple"

    def setup(self) -> None:
        if getattr(self, "graph", None) is not None:
            return
        g = self.graph = load_kg(self.data.dataset)
        n, r = g.num_entities, g.num_relations
        self.filters = {
            side: CompletionIndex(g.all_triples, n, r, side) for side in ("tail", "head")
        }
        train = g.triples["train"]
        self.train_keys = torch.sort(triple_keys(train, n, r)).values
        if self.data.training == "lcwa":
            self.lcwa_index = CompletionIndex(train, n, r, "tail")
        self._epoch: tuple[int, int, Tensor] | None = None  # (seed, epoch, permutation)
        self.weights = self._subsampling_weights(train) if self.data.subsampling_weights else None

    def model_overrides(self) -> dict:
        return {"num_entities": self.graph.num_entities, "num_relations": self.graph.num_relations}

    def splits(self) -> tuple[str, ...]:
        return ("val", "test")

    def after_step(self, model: nn.Module) -> None:
        model.constrain_()

    # ----- batches -----

    def _examples(self) -> int:
        if self.data.training == "lcwa":
            return len(self.lcwa_index.keys)
        return len(self.graph.triples["train"])

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-self._examples() // batch_size)

    def _rows(self, step: int, batch_size: int, seed: int) -> Tensor:
        """The examples of ``step``: a seeded permutation per epoch, cut into batches."""
        epoch, index = divmod(step, self.steps_per_epoch(batch_size))
        if self._epoch is None or self._epoch[:2] != (seed, epoch):
            g = torch.Generator().manual_seed(stream_seed(seed, epoch))
            self._epoch = (seed, epoch, torch.randperm(self._examples(), generator=g))
        return self._epoch[2][index * batch_size : (index + 1) * batch_size]

    def train_batch(self, step: int, batch_size: int, seed: int) -> tuple[Tensor, ...]:
        rows = self._rows(step, batch_size, seed)
        if self.data.training == "lcwa":
            index = self.lcwa_index
            keys = index.keys[rows]
            labels = torch.zeros(len(rows), self.graph.num_entities)
            labels[index.lookup(keys)] = 1.0
            return (
                torch.div(keys, self.graph.num_relations, rounding_mode="floor"),
                keys % self.graph.num_relations,
                labels,
            )
        pos = self.graph.triples["train"][rows]
        head_side = step % 2 == 0
        column = 0 if head_side else 2
        n, k = self.graph.num_entities, self.data.num_negatives
        g = torch.Generator().manual_seed(stream_seed(seed, step, stream=1))
        neg = torch.randint(n - 1, (len(rows), k), generator=g)
        neg += neg >= pos[:, column : column + 1]  # any entity but the true one
        if self.data.filter_negatives:
            corrupted = pos.unsqueeze(1).expand(-1, k, -1).clone()
            corrupted[..., column] = neg
            keys = triple_keys(corrupted, n, self.graph.num_relations)
            where = torch.searchsorted(self.train_keys, keys).clamp_max(len(self.train_keys) - 1)
            valid = self.train_keys[where] != keys
        else:
            valid = torch.ones(len(rows), k, dtype=torch.bool)
        weight = torch.ones(len(rows)) if self.weights is None else self.weights[rows]
        return pos, neg, torch.full((len(rows),), head_side), valid, weight

    def _subsampling_weights(self, train: Tensor) -> Tensor:
        """1 / sqrt(#(h, r, .) + #(., r, t) + 8) per training triple (the RotatE authors')."""
        counts = []
        for fixed in (0, 2):
            keys = train[:, fixed] * self.graph.num_relations + train[:, 1]
            _, inverse, count = torch.unique(keys, return_inverse=True, return_counts=True)
            counts.append(count[inverse])
        return (counts[0] + counts[1] + 8).double().rsqrt().float()

    def batch_size_of(self, batch: tuple[Tensor, ...]) -> int:
        return len(batch[0])

    # ----- loss -----

    def loss(self, model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
        if self.data.training == "lcwa":
            h, r, labels = batch
            loss = lcwa_loss(self.data, model(h, r, None).float(), labels)
            return loss + self._regularization(unwrap(model), (h,), None, r, all_entities=True)
        pos, neg, head_side, valid, weight = batch
        h, r, t = pos.unbind(1)
        if bool(head_side[0]):
            heads = torch.cat([h.unsqueeze(1), neg], 1)
            scores = model(heads, r.unsqueeze(1), t.unsqueeze(1)).float()
            neg_h, neg_t = neg, t.unsqueeze(1)
        else:
            tails = torch.cat([t.unsqueeze(1), neg], 1)
            scores = model(h.unsqueeze(1), r.unsqueeze(1), tails).float()
            neg_h, neg_t = h.unsqueeze(1), neg
        loss = slcwa_loss(self.data, scores[:, 0], scores[:, 1:], valid, weight)
        looked_up = (h, t, neg_h, neg_t)
        return loss + self._regularization(unwrap(model), looked_up, valid, r)

    def _regularization(
        self,
        model: nn.Module,
        entities: tuple[Tensor, ...],
        valid: Tensor | None,
        r: Tensor,
        all_entities: bool = False,
    ) -> Tensor | float:
        """PyKEEN's LpRegularizer terms: a mean normalised norm per lookup, weighted.

        sLCWA looks up h and t of the positives, then h and t of the (valid) negatives
        (the negatives' relations too); LCWA looks up h, r and every entity.
        """
        d = self.data
        total: Tensor | float = 0.0
        if d.entity_regularizer > 0:
            e, _ = model.representations()
            norms = normalised_norms(e, d.regularizer_p)
            terms = [norms.mean()] if all_entities else []
            for ids in entities:
                if ids.dim() == 2 and valid is not None:  # a negative's head or tail
                    terms.append(_weighted_mean(norms[ids].expand_as(valid), valid.float()))
                else:
                    terms.append(norms[ids].mean())
            total = total + d.entity_regularizer * sum(terms)
        if d.relation_regularizer > 0:
            _, rel = model.representations()
            norms = normalised_norms(rel, d.regularizer_p)[r]
            terms = [norms.mean()]
            if valid is not None:  # the negatives' relations
                terms.append(_weighted_mean(norms.unsqueeze(1).expand_as(valid), valid.float()))
            total = total + d.relation_regularizer * sum(terms)
        return total

    # ----- evaluation -----

    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        triples = self.graph.triples[split]
        if split == "val" and self.data.val_triples is not None:
            triples = triples[: self.data.val_triples]
        return rank_metrics(rank_triples(model, triples, self.filters, batch_size))

    def final_metrics(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        return rank_metrics(
            rank_triples(model, self.graph.triples[split], self.filters, batch_size)
        )

    # ----- predict -----

    def predict(self, model: nn.Module, inputs: list[str], **options: Any) -> list[dict[str, Any]]:
        return self.predict_ensemble([model], inputs, **options)

    @torch.no_grad()
    def predict_ensemble(
        self,
        models: list[nn.Module],
        inputs: list[str],
        side: str | None = None,
        top_k: int | None = None,
    ) -> list[dict[str, Any]]:
        """The top-k completions of one query: HEAD RELATION (side tail) or RELATION TAIL
        (side head), by score (the members' mean), each marked with the split that knows
        the completed triple, if one does."""
        self.setup()
        side, top_k = side or "tail", 10 if top_k is None else top_k
        if top_k < 1:
            raise ConfigError(f"--top-k must be at least 1, got {top_k}")
        if len(inputs) != 2:
            order = "HEAD RELATION" if side == "tail" else "RELATION TAIL (with --head)"
            raise ArchlabError(f"link prediction takes two inputs, {order}; got {len(inputs)}")
        g = self.graph
        entity_text, relation_text = inputs if side == "tail" else inputs[::-1]
        e = self._lookup(entity_text, g.entity_ids, "entity")
        r = self._lookup(relation_text, g.relation_ids, "relation")
        ids, rel = torch.tensor([e]), torch.tensor([r])
        scores = torch.stack(
            [
                (m(ids, rel, None) if side == "tail" else m(None, rel, ids))[0].float()
                for m in models
            ]
        ).mean(0)
        known = {}
        for split in ("train", "val", "test"):
            index = CompletionIndex(g.triples[split], g.num_entities, g.num_relations, side)
            for other in index.lookup(index.key(ids, rel))[1].tolist():
                known.setdefault(other, split)
        top = scores.topk(min(top_k, g.num_entities))
        query = (
            f"({g.entities[e]}, {g.relations[r]}, ?)"
            if side == "tail"
            else f"(?, {g.relations[r]}, {g.entities[e]})"
        )
        ranking = [
            {"rank": i + 1, "entity": g.entities[j], "score": float(s), "known": known.get(j, "")}
            for i, (s, j) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True))
        ]
        return [{"query": query, "side": side, "ranking": ranking}]

    @staticmethod
    def _lookup(text: str, ids: dict[str, int], kind: str) -> int:
        if text in ids:
            return ids[text]
        close = difflib.get_close_matches(text, list(ids), n=3, cutoff=0.5)
        hint = f"; the closest known: {', '.join(close)}" if close else ""
        raise ArchlabError(f"unknown {kind} {text!r} in this graph{hint}")
