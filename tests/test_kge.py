"""Knowledge-graph embeddings against PyKEEN: the datasets' ids, the four interaction
functions, the rank-based evaluator (ties included), training, and ``archlab predict``."""

import math

import pytest
import torch

import archlab
from archlab.data.kg import read_triples
from archlab.models.kge import RotatE
from archlab.tasks.link_prediction import (
    CompletionIndex,
    filtered_ranks,
    normalised_norms,
    rank_metrics,
    rank_triples,
)
from tests.conftest import require_data

pykeen = pytest.importorskip("pykeen")


@pytest.fixture(scope="module")
def nations():
    require_data("kg/nations.tar.gz")
    from archlab.data.kg import load_kg

    return load_kg("nations")


# ----- data -----


@pytest.mark.parametrize("name", ["nations", "umls", "wn18rr"])
def test_ids_are_pykeens(name: str) -> None:
    """Sorted labels over the union of the splits, as PyKEEN's TriplesFactory numbers them;
    on the small sets (where training holds every label) also PyKEEN's dataset ids."""
    import numpy as np
    from pykeen.triples import TriplesFactory

    from archlab.data import fetch
    from archlab.data.kg import build_graph

    require_data(f"kg/{'WN18RR' if name == 'wn18rr' else name}.tar.gz")
    (archive,) = fetch(name).values()
    labelled = read_triples(archive)
    graph = build_graph(name, labelled)
    union = np.array([t for split in labelled.values() for t in split])
    factory = TriplesFactory.from_labeled_triples(union)
    assert factory.entity_to_id == graph.entity_ids
    assert factory.relation_to_id == graph.relation_ids
    if name == "wn18rr":  # test entities unseen in training: kept, so the test set is whole
        assert graph.num_entities == 40943 and len(graph.triples["test"]) == 3134
        return
    train = TriplesFactory.from_labeled_triples(np.array(labelled["train"]))
    assert train.entity_to_id == graph.entity_ids
    for split in ("train", "val", "test"):
        theirs = TriplesFactory.from_labeled_triples(
            np.array(labelled[split]),
            entity_to_id=train.entity_to_id,
            relation_to_id=train.relation_to_id,
        ).mapped_triples  # PyKEEN sorts the triples; ours keep the file order
        assert torch.equal(torch.unique(graph.triples[split], dim=0), theirs)


def test_fb15k237_crlf_is_stripped() -> None:
    require_data("kg/FB15k-237.tar.gz")
    from archlab.data import fetch

    (archive,) = fetch("fb15k237").values()
    triples = read_triples(archive)
    assert [len(v) for v in triples.values()] == [272115, 17535, 20466]
    assert not any("\r" in x for split in triples.values() for t in split for x in t)


# ----- interaction functions -----

N, R, B, K = 30, 7, 5, 6


def interactions():
    from pykeen.nn import modules

    return [
        ("transe", {"p": 1}, modules.TransEInteraction(p=1)),
        ("transe", {"p": 2}, modules.TransEInteraction(p=2)),
        ("distmult", {}, modules.DistMultInteraction()),
        ("complex", {}, modules.ComplExInteraction()),
        ("rotate", {"form": "pykeen"}, modules.RotatEInteraction()),
    ]


@pytest.mark.parametrize(
    "case", range(5), ids=["transe-p1", "transe-p2", "distmult", "complex", "rotate"]
)
def test_interaction_equals_pykeens(case: int) -> None:
    """Single triples, 1-to-all both ways (score_t, score_h), and K candidates per row."""
    name, overrides, interaction = interactions()[case]
    model = archlab.create_model(name, num_entities=N, num_relations=R, dim=16, **overrides)
    with torch.no_grad():
        model.entity.normal_()
        if name != "rotate":  # RotatE's relations keep their unit modulus
            model.relation.normal_()
    E, Rv = model.representations()
    h, r, t = torch.randint(N, (B,)), torch.randint(R, (B,)), torch.randint(N, (B,))
    c = torch.randint(N, (B, K))
    pairs = [
        (model(h, r, t), interaction(E[h], Rv[r], E[t])),
        (model(h, r, None), interaction.score_t(E[h], Rv[r], E)),
        (model(None, r, t), interaction.score_h(E, Rv[r], E[t])),
        (model(h[:, None], r[:, None], c), interaction(E[h][:, None], Rv[r][:, None], E[c])),
        (model(c, r[:, None], t[:, None]), interaction(E[c], Rv[r][:, None], E[t][:, None])),
    ]
    for ours, theirs in pairs:
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_rotate_paper_form_is_the_authors_score() -> None:
    """gamma - sum_i |h_i r_i - t_i|, written out as the authors' RotatE.forward
    (re/im halves, the phase of the relation, stack, norm over re/im, sum)."""
    model = archlab.create_model("rotate", num_entities=N, num_relations=R, dim=8, form="paper")
    gamma = model.config.gamma
    h, r, t = torch.randint(N, (B,)), torch.randint(R, (B,)), torch.randint(N, (B,))
    re_head, im_head = model.entity[h].chunk(2, dim=-1)
    re_tail, im_tail = model.entity[t].chunk(2, dim=-1)
    # the authors store theta * range / pi and divide it back; archlab stores theta
    phase = model.relation[r]
    re_rel, im_rel = torch.cos(phase), torch.sin(phase)
    re_score = re_head * re_rel - im_head * im_rel - re_tail
    im_score = re_head * im_rel + im_head * re_rel - im_tail
    expected = gamma - torch.stack([re_score, im_score], dim=0).norm(dim=0).sum(dim=-1)
    torch.testing.assert_close(model(h, r, t), expected, atol=1e-5, rtol=1e-5)
    # 1-to-all (entities in chunks) agrees with the pairwise score
    all_tails = model(h, r, None)
    torch.testing.assert_close(all_tails[torch.arange(B), t], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        model(None, r, t)[torch.arange(B), h], expected, atol=1e-5, rtol=1e-5
    )


def test_constraints_and_init_are_pykeens_defaults() -> None:
    transe = archlab.create_model("transe", num_entities=N, num_relations=R)
    torch.testing.assert_close(transe.entity.norm(dim=1), torch.ones(N))
    torch.testing.assert_close(transe.relation.norm(dim=1), torch.ones(R))
    rotate = archlab.create_model("rotate", num_entities=N, num_relations=R, dim=8)
    with torch.no_grad():
        rotate.relation.mul_(3.0)
    rotate.constrain_()
    torch.testing.assert_close(rotate.representations()[1].abs(), torch.ones(R, 8))
    assert rotate.entity.abs().max() <= math.sqrt(3 / 8)


def test_regulariser_norm_is_pykeens() -> None:
    from pykeen.regularizers import LpRegularizer

    for x in (torch.randn(9, 16), torch.randn(9, 16, dtype=torch.cfloat)):
        theirs = LpRegularizer(p=2.0, normalize=True)(x)
        torch.testing.assert_close(normalised_norms(x, 2.0).mean(), theirs)


# ----- evaluation -----


class TableModel(torch.nn.Module):
    """Fixed integer scores (many ties) for every (h, r, ?) and (?, r, t)."""

    def __init__(self, tails: torch.Tensor, heads: torch.Tensor) -> None:
        super().__init__()
        self.tails, self.heads = tails, heads
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the evaluator a device

    def forward(self, h, r, t):
        return (self.tails[h, r] if t is None else self.heads[t, r]).clone()


def test_evaluator_equals_pykeens_rank_based_evaluator() -> None:
    """Same scores (with ties) and the same filter: PyKEEN's ranks and metrics, both sides."""
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.evaluation.evaluator import _evaluate_batch

    n, r = 25, 4
    known = torch.unique(
        torch.stack(
            [torch.randint(n, (300,)), torch.randint(r, (300,)), torch.randint(n, (300,))], 1
        ),
        dim=0,
    )
    test = known[torch.randperm(len(known))[:60]]
    tails = torch.randint(0, 6, (n, r, n)).float()  # 6 values over 25 entities: ties everywhere
    heads = torch.randint(0, 6, (n, r, n)).float()
    model = TableModel(tails, heads)
    filters = {side: CompletionIndex(known, n, r, side) for side in ("tail", "head")}
    ours = rank_triples(model, test, filters, batch_size=7)

    class Predictor:  # what _evaluate_batch asks of a PyKEEN model
        def predict(self, hrt_batch, target, slice_size=None, mode=None):
            h, rel, t = hrt_batch.unbind(1)
            return model(h, rel, None) if target == "tail" else model(None, rel, t)

    evaluator = RankBasedEvaluator(filtered=True)
    for target in ("tail", "head"):
        for batch in test.split(7):
            _evaluate_batch(
                batch, Predictor(), target, evaluator, None, known, None, None, mode=None
            )
    theirs = torch.cat(
        [
            torch.as_tensor(a)
            for target in ("tail", "head")
            for a in evaluator.ranks[target, "realistic"]
        ]
    )
    torch.testing.assert_close(ours, theirs.double())
    result = evaluator.finalize()
    metrics = rank_metrics(ours)
    for key, name in [
        ("mrr", "inverse_harmonic_mean_rank"),
        ("mr", "arithmetic_mean_rank"),
        ("hits@1", "hits_at_1"),
        ("hits@3", "hits_at_3"),
        ("hits@10", "hits_at_10"),
    ]:
        assert metrics[key] == pytest.approx(result.get_metric(f"both.realistic.{name}"), rel=1e-6)


def test_ranks_by_hand() -> None:
    scores = torch.tensor([[3.0, 5.0, 3.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0, float("nan")]])
    # row 0: target 0 (score 3); entity 1 (5) is filtered, entity 2 ties, entity 4 ties
    ranks = filtered_ranks(scores, torch.tensor([0, 4]), torch.tensor([0]), torch.tensor([1]))
    assert ranks.optimistic.tolist() == [1, 5] and ranks.pessimistic.tolist() == [3, 5]
    assert ranks.realistic.tolist() == [2.0, 5.0]  # a NaN true score ranks last


def test_paper_rotate_memory_is_bounded(monkeypatch) -> None:
    from archlab.models import kge

    monkeypatch.setattr(kge, "CHUNK_ELEMENTS", 64)
    model = archlab.create_model("rotate", num_entities=N, num_relations=R, dim=4, form="paper")
    h, r = torch.randint(N, (B,)), torch.randint(R, (B,))
    chunked = model(h, r, None)
    monkeypatch.setattr(kge, "CHUNK_ELEMENTS", 1 << 30)
    torch.testing.assert_close(chunked, model(h, r, None))
    assert isinstance(model, RotatE)
