"""Knowledge-graph embeddings against PyKEEN: the datasets' ids, the four interaction
functions, the rank-based evaluator (ties included), training, and ``archlab predict``."""

import math
import re
import statistics
from pathlib import Path

import pytest
import torch

import archlab
from archlab.data.kg import read_triples
from archlab.errors import ConfigError
from archlab.models.kge import RotatE
from archlab.tasks.link_prediction import (
    CompletionIndex,
    expected_norm,
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


def test_regulariser_gradient_is_finite_where_a_complex_coordinate_underflows() -> None:
    """abs() of a complex float whose square underflows has a NaN gradient; the moduli here
    do not (a NaN stopped ComplEx on Kinship with such relation floats)."""
    re = torch.tensor([[1e-42, 1.0, 0.5], [0.0, 0.2, 0.1]])
    im = torch.tensor([[1e-42, 0.3, 0.0], [0.0, 0.0, 0.4]])
    x = torch.complex(re, im).requires_grad_()
    norms = normalised_norms(x, 2.0)
    norms.sum().backward()
    assert torch.isfinite(torch.view_as_real(x.grad)).all()
    expected = torch.linalg.vector_norm(torch.cat([re, im], dim=1), dim=1) / expected_norm(2.0, 3)
    torch.testing.assert_close(norms, expected)


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


# ----- losses -----


def test_losses_equal_pykeens() -> None:
    from pykeen import losses

    from archlab.tasks.link_prediction import LinkPredictionData, lcwa_loss, slcwa_loss

    pos, neg = torch.randn(8), torch.randn(8, 5)
    valid, weight = torch.ones(8, 5, dtype=torch.bool), torch.ones(8)
    cases = [
        (dict(loss="margin", margin=1.0), losses.MarginRankingLoss(margin=1.0)),
        (dict(loss="softplus"), losses.SoftplusLoss()),
        (
            dict(loss="nssa", margin=6.0, adversarial_temperature=0.5),
            losses.NSSALoss(margin=6.0, adversarial_temperature=0.5),
        ),
    ]
    for settings, theirs in cases:
        ours = slcwa_loss(LinkPredictionData(**settings), pos, neg, valid, weight)
        expected = theirs.process_slcwa_scores(pos.unsqueeze(1), neg)
        torch.testing.assert_close(ours, expected, msg=settings["loss"])
    scores, labels = torch.randn(4, 9), (torch.rand(4, 9) < 0.3).float()
    labels[:, 0] = 1.0
    for settings, theirs in [
        ("bce", losses.BCEWithLogitsLoss()),
        ("ce", losses.CrossEntropyLoss()),
    ]:
        data = LinkPredictionData(training="lcwa", loss=settings)
        torch.testing.assert_close(
            lcwa_loss(data, scores, labels), theirs.process_lcwa_scores(scores, labels)
        )


def test_filtered_negatives_are_never_training_triples(nations) -> None:
    from archlab.config import read_recipe
    from archlab.run import resolve

    raw = read_recipe("transe-nations")
    raw["data"]["filter_negatives"] = True
    task = resolve(raw).task
    task.setup()
    known = {tuple(t) for t in nations.triples["train"].tolist()}
    for step in (0, 1):  # heads, then tails
        pos, neg, head_side, valid, _ = task.train_batch(step, 256, 0)
        column = 0 if bool(head_side[0]) else 2
        assert (neg != pos[:, column : column + 1]).all()  # never the true entity
        corrupted = pos.unsqueeze(1).repeat(1, neg.shape[1], 1)
        corrupted[..., column] = neg
        is_known = torch.tensor([[tuple(t) in known for t in row] for row in corrupted.tolist()])
        assert torch.equal(valid, ~is_known) and is_known.any()


# ----- training -----


def random_ranking_mrr(graph) -> float:
    """E[1/rank] of the test triples when the candidates are ranked at random: H_n / n,
    n the candidates left after filtering, over both sides."""
    filters = {
        s: CompletionIndex(graph.all_triples, graph.num_entities, graph.num_relations, s)
        for s in ("tail", "head")
    }
    h, r, t = graph.triples["test"].unbind(1)
    values = []
    for side, key in (("tail", filters["tail"].key(h, r)), ("head", filters["head"].key(t, r))):
        rows, _ = filters[side].lookup(key)
        n = graph.num_entities - torch.bincount(rows, minlength=len(key)) + 1
        harmonic = torch.tensor([sum(1 / k for k in range(1, int(m) + 1)) for m in n])
        values.append(harmonic / n)
    return torch.cat(values).mean().item()


LEARNS = {  # a short run at a high rate, and how far above chance its test MRR must be
    "slcwa-margin": ("distmult-nations", [], 0.2),
    "lcwa-bce": ("distmult-nations", ["data.training=lcwa", "data.loss=bce"], 0.2),
    "rotate-paper-nssa": (
        "rotate-nations",
        ["model.form=paper", "model.dim=32", "model.gamma=3", "data.loss=nssa", "data.margin=0"]
        + ["data.adversarial_temperature=1", "data.filter_negatives=true"],
        0.06,
    ),
}


@pytest.mark.parametrize("case", sorted(LEARNS))
def test_training_learns(nations, tmp_path, case) -> None:
    from archlab.run import train

    recipe, overrides, margin = LEARNS[case]
    common = ["trainer.max_epochs=20", "trainer.eval_every_epochs=10", "trainer.lr=0.01"]
    _, results = train(recipe, common + overrides, out=str(tmp_path / "run"), progress=False)
    chance = random_ranking_mrr(nations)  # 0.384 on Nations
    assert results["test"]["mrr"] > chance + margin, (results["test"], chance)
    assert set(results["test"]) == {"mrr", "mr", "hits@1", "hits@3", "hits@10"}


def test_resumed_run_equals_uninterrupted(nations, tmp_path) -> None:
    from safetensors.torch import load_file

    from archlab.run import train

    common = ["trainer.eval_every=5", "trainer.checkpoint_every=5"]
    full, _ = train(
        "complex-nations",
        [*common, "trainer.max_steps=14"],
        out=str(tmp_path / "full"),
        progress=False,
    )
    part, _ = train(
        "complex-nations",
        [*common, "trainer.max_steps=9"],
        out=str(tmp_path / "part"),
        progress=False,
    )
    train(None, ["trainer.max_steps=14"], resume=str(part), progress=False)
    a, b = load_file(full / "last.safetensors"), load_file(part / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_short_slcwa_run_lands_within_noise_of_pykeen(nations, tmp_path) -> None:
    """TransE on Nations, PyKEEN's defaults (64 negatives, margin 1, Adam 1e-3, batch 256),
    5 epochs, 3 seeds each: the mean test MRRs (about 0.28) agree within 0.03 (their
    seed-to-seed spread is about 0.01)."""
    import logging

    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.models import TransE
    from pykeen.training import SLCWATrainingLoop
    from pykeen.triples import TriplesFactory

    from archlab.run import train

    logging.getLogger("pykeen").setLevel(logging.ERROR)
    g = nations
    factory = {s: TriplesFactory(g.triples[s], g.entity_ids, g.relation_ids) for s in g.triples}
    ours, theirs = [], []
    for seed in range(3):
        model = TransE(triples_factory=factory["train"], random_seed=seed)
        optimizer = torch.optim.Adam(model.get_grad_params(), lr=1e-3)
        loop = SLCWATrainingLoop(
            model=model,
            triples_factory=factory["train"],
            optimizer=optimizer,
            negative_sampler="basic",
            negative_sampler_kwargs=dict(num_negs_per_pos=64),
        )
        loop.train(triples_factory=factory["train"], num_epochs=5, batch_size=256, use_tqdm=False)
        result = RankBasedEvaluator().evaluate(
            model,
            factory["test"].mapped_triples,
            additional_filter_triples=[
                factory["train"].mapped_triples,
                factory["val"].mapped_triples,
            ],
            use_tqdm=False,
        )
        theirs.append(result.get_metric("both.realistic.inverse_harmonic_mean_rank"))
        overrides = [  # the recipe, back to PyKEEN's defaults
            *(
                "model.p=1",
                "trainer.lr=1e-3",
                "trainer.max_epochs=5",
                "trainer.eval_every_epochs=5",
            ),
            f"trainer.seed={seed}",
        ]
        _, results = train(
            "transe-nations", overrides, out=str(tmp_path / f"s{seed}"), progress=False
        )
        ours.append(results["test"]["mrr"])
    assert sum(ours) / 3 == pytest.approx(sum(theirs) / 3, abs=0.03), (ours, theirs)


# ----- archlab predict -----


@pytest.fixture(scope="module")
def nations_run(tmp_path_factory):
    require_data("kg/nations.tar.gz")
    from archlab.run import train

    out = tmp_path_factory.mktemp("kge") / "run"
    run_dir, _ = train("distmult-nations", ["trainer.max_epochs=5"], out=str(out), progress=False)
    return run_dir


def test_predict_prints_the_top_k_tails_marking_known_ones(nations_run, nations, capsys) -> None:
    from archlab.cli import main

    assert main(["predict", str(nations_run), "brazil", "intergovorgs", "--top-k", "5"]) == 0
    captured = capsys.readouterr()
    header, *rows = captured.out.splitlines()
    assert header == "rank\tscore\ttail\tknown" and len(rows) == 5
    assert "(brazil, intergovorgs, ?)" in captured.err
    fields = [row.split("\t") for row in rows]
    assert [f[0] for f in fields] == ["1", "2", "3", "4", "5"]
    scores = [float(f[1]) for f in fields]
    assert scores == sorted(scores, reverse=True)
    g = nations
    h, r = g.entity_ids["brazil"], g.relation_ids["intergovorgs"]
    for _, _, tail, known in fields:
        splits = [
            s
            for s in ("train", "val", "test")
            if [h, r, g.entity_ids[tail]] in g.triples[s].tolist()
        ]
        assert known == (splits[0] if splits else "")


def test_predict_heads_and_its_mistakes(nations_run, capsys) -> None:
    from archlab.cli import main

    assert main(["predict", str(nations_run), "--head", "intergovorgs", "usa", "--top-k", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "rank\tscore\thead\tknown"
    assert main(["predict", str(nations_run), "brasil", "intergovorgs"]) == 2
    err = capsys.readouterr().err.strip()
    known = "the closest known: brazil, burma, israel"
    assert err == f"archlab: error: unknown entity 'brasil' in this graph; {known}"
    assert main(["predict", str(nations_run), "brazil", "intergov"]) == 2
    assert "unknown relation 'intergov'" in capsys.readouterr().err
    assert main(["predict", str(nations_run), "brazil"]) == 2
    assert "two inputs, HEAD RELATION" in capsys.readouterr().err
    assert main(["predict", str(nations_run), "brazil", "intergovorgs", "--top-k", "0"]) == 2


def test_predict_options_are_refused_by_other_tasks() -> None:
    from archlab.errors import ConfigError
    from archlab.tasks import check_predict_options
    from archlab.tasks.classification import ClassificationTask

    check_predict_options(ClassificationTask, {"side": None, "top_k": None})
    with pytest.raises(ConfigError, match="--top-k means nothing to a classification run"):
        check_predict_options(ClassificationTask, {"side": None, "top_k": 3})


def test_paper_rotate_gradient_is_finite_where_the_distance_is_zero() -> None:
    from archlab.models.kge import complex_mul

    model = archlab.create_model("rotate", num_entities=3, num_relations=1, dim=4, form="paper")
    with torch.no_grad():  # make (0, 0, 1) a perfect triple: h o r = t exactly
        model.entity[1] = complex_mul(model.entity[0], model.relation_vectors(torch.tensor(0)))
    score = model(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]))
    assert score.item() == pytest.approx(model.config.gamma, abs=1e-5)
    score.sum().backward()
    assert torch.isfinite(model.entity.grad).all() and torch.isfinite(model.relation.grad).all()


def test_paper_rotate_compiled_scoring_equals_eager(monkeypatch) -> None:
    """Evaluation scores every entity with one compiled kernel; it gives the eager values."""
    from archlab.models import kge

    model = archlab.create_model("rotate", num_entities=N, num_relations=R, dim=8, form="paper")
    h, r = torch.randint(N, (B,)), torch.randint(R, (B,))
    with torch.no_grad():
        eager = model(h, r, None)
        monkeypatch.setattr(kge, "COMPILE_ABOVE", 0)
        compiled = model(h, r, None)
    assert kge._compiled.get("kernel") is not None, "torch.compile did not work here"
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


def test_paper_rotate_gradient_written_out_is_autograds() -> None:
    from archlab.models.kge import ModuliSum

    q = torch.randn(3, 1, 8, dtype=torch.double, requires_grad=True)
    e = torch.randn(3, 4, 8, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(ModuliSum.apply, (q, e))


# ----- archlab bench kge -----


@pytest.mark.parametrize("model", ["transe", "rotate", "complex"])
def test_bench_gives_pykeen_the_recipes_model_with_the_same_weights(model) -> None:
    """Each benchmarked recipe, rebuilt in PyKEEN with archlab's initial weights, scores
    every triple as archlab does (same dimension, norm and complex layout)."""
    require_data("kg/nations.tar.gz")
    from archlab.bench import kge

    trainer, task = kge._archlab("nations", model, 256)
    net, _, _ = kge._pykeen(task, model, 256, trainer.model)
    triples = task.graph.triples["test"][:32]
    with torch.no_grad():
        ours = trainer.model(triples[:, 0], triples[:, 1], triples[:, 2])
        theirs = net.score_hrt(triples).squeeze(-1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    batch = kge._pykeen_eval_batch(net, task.graph.num_entities)
    width = net.entity_representations[0]._embeddings.weight.shape[1]
    assert 1 <= batch <= 256 and batch * task.graph.num_entities * width <= 2**27


def test_bench_kge_measures_the_cases_asked_and_keeps_those_its_out_file_holds(
    tmp_path, monkeypatch, capsys
) -> None:
    """`archlab bench kge --cases rotate-wn18rr --out FILE` measures that case only, takes
    up the cases FILE holds (a long case can be run on its own), and writes them all."""
    pytest.importorskip("pykeen")
    import json

    from archlab.bench import kge
    from archlab.cli import main

    measured = []

    def seconds(dataset, model, n):
        measured.append(f"{model}-{dataset}")
        return {"archlab": 1.0, "pykeen": 4.0}

    monkeypatch.setattr(kge, "_train_seconds", seconds)
    monkeypatch.setattr(kge, "_eval_seconds", lambda dataset, model, n: {"archlab": 1, "pykeen": 2})
    monkeypatch.setattr(kge, "_peak_memory", lambda impl, dataset, model: 10.0)
    out = tmp_path / "kge.json"
    held = {"epoch_seconds": {"archlab": 0.1, "pykeen": 0.5}, "epoch_ratio": 0.2,
            "eval_seconds": {"archlab": 0.01, "pykeen": 0.1}, "eval_ratio": 0.1,
            "peak_mb": {"archlab": 1.0, "pykeen": 3.0}, "memory_ratio": 1 / 3}  # fmt: skip
    out.write_text(json.dumps({"benchmarks": {"kge": {"cases": {"transe-umls": held}}}}))
    assert main(["bench", "kge", "--cases", "rotate-wn18rr,transe-umls", "--out", str(out)]) == 0
    assert measured == ["rotate-wn18rr"]
    assert "transe-umls: taken up from the output file" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["command"] == "archlab bench kge --cases rotate-wn18rr,transe-umls"
    cases = report["benchmarks"]["kge"]["cases"]
    assert list(cases) == ["transe-umls", "rotate-wn18rr"] and cases["transe-umls"] == held
    assert cases["rotate-wn18rr"]["epoch_ratio"] == 0.25 and cases["rotate-wn18rr"]["threads"] >= 1
    # a quick run neither takes up nor overwrites the full figures
    assert main(["bench", "kge", "--quick", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        "archlab: error: bench kge: the --out file holds full figures (transe-umls, "
        "rotate-wn18rr), which this call would overwrite; give another --out"
    )
    assert measured == ["rotate-wn18rr"] and json.loads(out.read_text()) == report
    assert main(["bench", "kge", "--cases", "transe-fb15k237"]) == 2
    assert capsys.readouterr().err.strip() == (
        "archlab: error: bench kge: unknown case 'transe-fb15k237'; choose from transe-umls, "
        "rotate-umls, complex-umls, transe-wn18rr, rotate-wn18rr"
    )
    assert main(["bench", "gpt", "--cases", "transe-umls"]) == 2
    assert capsys.readouterr().err.strip() == "archlab: error: bench gpt takes no --cases"


# ----- archlab bench kge-reference -----


def test_bench_kge_reference_quick_writes_pykeens_figures(tmp_path, capsys) -> None:
    """The quick mode (2 epochs of TransE, one seed) through the CLI: the json holds the
    figures, the times, PyKEEN's version and the protocol, and a finite MRR in (0, 1]."""
    require_data("kg/nations.tar.gz")
    from importlib.metadata import version

    from archlab.cli import main

    out = tmp_path / "ref.json"
    assert (
        main(["bench", "kge-reference", "--quick", "--dataset", "nations", "--out", str(out)]) == 0
    )
    assert "transe seed 0: test MRR" in capsys.readouterr().out
    import json

    report = json.loads(out.read_text())
    assert report["command"] == "archlab bench kge-reference --quick --dataset nations"
    bench = report["benchmarks"]["kge-reference"]
    assert bench["dataset"] == "nations" and bench["pykeen"] == version("pykeen")
    assert bench["protocol"]["epochs"] == 2 and bench["protocol"]["seeds"] == [0]
    assert bench["protocol"]["num_negs_per_pos"] == 64
    assert list(bench["models"]) == ["transe"]
    r = bench["models"]["transe"]
    assert math.isfinite(r["mrr"]) and 0 < r["mrr"] <= 1
    assert 0 <= r["hits_at_1"] <= r["hits_at_3"] <= r["hits_at_10"] <= 1
    assert 1 <= r["mr"] <= 14 and r["wall_seconds"] > 0
    assert r["settings"]["epochs"] == 2 and r["settings"]["batch_size"] == 256
    (seed,) = r["seeds"]
    assert seed["mrr"] == r["mrr"] and seed["train_seconds"] > 0
    # run again with the same --out: the finished seed is taken up, not trained again
    assert (
        main(["bench", "kge-reference", "--quick", "--dataset", "nations", "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "1 run(s) taken up from the output file" in printed
    assert "(taken up)" in printed.split("transe seed 0: test MRR")[1].splitlines()[0]
    again = json.loads(out.read_text())["benchmarks"]["kge-reference"]["models"]["transe"]
    assert again["seeds"] == r["seeds"] and again["mrr"] == r["mrr"]


def test_kge_reference_refuses_to_drop_the_runs_its_out_file_holds() -> None:
    """The --out file is rewritten after each seed: a call that would leave out a model,
    a seed or the file's protocol is refused before anything trains."""
    pytest.importorskip("pykeen")
    from archlab.bench import kge_reference

    version = kge_reference.pykeen_version()
    run = {"seed": 0, "mrr": 0.5, "wall_seconds": 1.0}
    previous = {
        "dataset": "nations",
        "pykeen": version,
        "protocol": {"epochs": 2, "num_negs_per_pos": 64},
        "models": {"transe": {"seeds": [run], "settings": {}}},
    }
    for kwargs, message in [
        ({"models": "distmult"}, "leaves out (transe seed 0)"),
        ({"epochs": 3}, f"holds runs of PyKEEN {version} on nations (2 epochs)"),
        ({"dataset": "umls"}, "holds runs of PyKEEN"),
        ({"models": "transe,transe"}, "names a model twice"),
    ]:
        options = {"dataset": "nations", "models": "transe", "epochs": 2, "seeds": 1, **kwargs}
        with pytest.raises(ConfigError, match=re.escape(message)):
            kge_reference.run(previous=previous, **options)


def test_kge_reference_stopped_during_one_model_keeps_the_runs_of_the_others(
    monkeypatch,
) -> None:
    """Resumed, the file saved after each seed still holds the runs taken up of models not
    reached yet (a stop during one model once lost another's), in a fixed model order."""
    pytest.importorskip("pykeen")
    from archlab.bench import kge_reference

    version = kge_reference.pykeen_version()

    def held(seed, mrr):
        return {"seed": seed, "mrr": mrr, "hits_at_1": 0.1, "hits_at_3": 0.2,
                "hits_at_10": 0.3, "mr": 5.0, "wall_seconds": 1.0}  # fmt: skip

    previous = {
        "dataset": "nations",
        "pykeen": version,
        "protocol": {"epochs": 2, "num_negs_per_pos": 64},
        "models": {
            "transe": {"seeds": [held(0, 0.2)], "settings": {"model": "TransE"}},
            "rotate": {"seeds": [held(0, 0.7)], "settings": {"model": "RotatE"}},
        },
    }
    trained, saved = [], []

    def train_and_test(splits, model, epochs, seed):
        trained.append((model, seed))
        figures = {key: 0.4 for key in kge_reference.METRICS}
        return figures, {"wall_seconds": 2.0}, {"model": model}

    def save(report):
        saved.append(report)
        if len(trained) == 2:
            raise KeyboardInterrupt  # Ctrl-C just after TransE seed 1 is saved

    monkeypatch.setattr(kge_reference, "factories", lambda dataset: None)
    monkeypatch.setattr(kge_reference, "train_and_test", train_and_test)
    options = {"dataset": "nations", "models": "rotate,transe", "epochs": 2, "seeds": 2}
    with pytest.raises(KeyboardInterrupt):
        kge_reference.run(previous=previous, save=save, **options)
    assert trained == [("rotate", 1), ("transe", 1)]
    models = saved[-1]["models"]
    assert list(models) == ["transe", "rotate"]
    assert [r["seed"] for r in models["transe"]["seeds"]] == [0, 1]
    assert models["transe"]["mrr"] == pytest.approx(0.3)
    assert models["rotate"]["seeds"][0] == held(0, 0.7)
    assert models["rotate"]["settings"] == {"model": "rotate"}
    assert saved[0]["models"]["transe"]["seeds"] == [held(0, 0.2)]  # before TransE was reached
    # resumed from what was saved: only the runs missing are trained
    report = kge_reference.run(previous=saved[-1], **{**options, "seeds": 3})
    assert trained[2:] == [("rotate", 2), ("transe", 2)]
    assert list(report["models"]) == ["transe", "rotate"]
    assert [r["mrr"] for r in report["models"]["rotate"]["seeds"]] == [0.7, 0.4, 0.4]


def test_kge_reference_summary_says_when_a_model_has_fewer_seeds_than_asked() -> None:
    """Stopped during a model's seeds, the file's summary does not call its mean one of all."""
    from archlab.bench import kge_reference

    def model(mrrs):
        return {"mrr": statistics.fmean(mrrs), "mrr_std": 0.01, "seeds": [{}] * len(mrrs)}

    results = {"transe": model([0.3, 0.32, 0.31]), "complex": model([0.5])}
    summary = kge_reference._report("kinship", "1.x", 300, 3, results)["summary"]
    assert summary.endswith("TransE 0.310 ± 0.010, ComplEx 0.500 (1 of 3 seeds)")
    results["complex"] = model([0.5, 0.5, 0.5])
    summary = kge_reference._report("kinship", "1.x", 300, 3, results)["summary"]
    assert "mean of 3 seeds): TransE 0.310 ± 0.010, ComplEx 0.500 ± 0.010" in summary


def test_bench_out_that_is_a_directory_is_refused_before_anything_runs(tmp_path, capsys):
    from archlab.cli import main

    assert main(["bench", "kge-reference", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"archlab: error: --out {tmp_path} is a directory; give a file name, e.g. "
        f"{tmp_path}/bench.json"
    )


def test_bench_writes_its_out_file_atomically(tmp_path, monkeypatch) -> None:
    """A Ctrl-C while a resumable benchmark saves leaves the file it had, not half of it."""
    import types

    import archlab.bench

    out = tmp_path / "ref.json"
    out.write_text('{"benchmarks": {}}\n')

    def run(quick, previous=None, save=None):
        save({"summary": "x" * 10_000})
        return {}

    fake = types.SimpleNamespace(run=run, RESUMES=True, OPTIONS=())
    monkeypatch.setattr(archlab.bench, "_module", lambda name: fake)
    real = Path.write_text

    def half_then_interrupt(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        archlab.bench.run_benchmarks(["gpt"], out=str(out))
    monkeypatch.undo()
    assert out.read_text() == '{"benchmarks": {}}\n'


@pytest.mark.parametrize(
    "model, dim, regularizer",
    [
        ("transe", 50, None),
        ("distmult", 50, "relation LpRegularizer(0.1)"),
        ("complex", 200, "entity LpRegularizer(0.01), relation LpRegularizer(0.01)"),
        ("rotate", 200, None),
    ],
)
def test_kge_reference_is_issue_16s_protocol_on_pykeens_defaults(
    nations, model, dim, regularizer
) -> None:
    """One epoch of one batch on Nations: PyKEEN sees archlab's ids and triples; the run is
    sLCWA with 64 negatives and PyKEEN's defaults; and its test MRR / Hits / MR are the
    filtered (train + validation + test), both-sides, realistic ranks of the trained model,
    recomputed here from its scores."""
    from archlab.bench import kge_reference

    splits = kge_reference.factories("nations")
    for split, factory in splits.items():
        assert factory.entity_to_id == nations.entity_ids
        assert factory.relation_to_id == nations.relation_ids
        assert torch.equal(factory.mapped_triples, nations.triples[split])
    train = splits["train"]
    splits["train"] = train.clone_and_exchange_triples(train.mapped_triples[:256])
    result, _ = kge_reference.pipeline_run(splits, model, epochs=1, seed=0, progress=False)
    settings = kge_reference.settings(result)
    assert settings["embedding_dim"] == dim and settings["regularizer"] == regularizer
    assert settings["loss"] == "MarginRankingLoss(margin=1)"  # the pipeline's, for all four
    assert (settings["optimizer"], settings["lr"], settings["batch_size"]) == ("Adam", 1e-3, 256)
    assert settings["training_loop"] == "SLCWATrainingLoop" and settings["epochs"] == 1
    assert settings["negative_sampler"] == "BasicNegativeSampler"
    assert settings["num_negs_per_pos"] == 64
    assert settings.get("scoring_fct_norm", 1) == 1  # TransE: L1

    known = torch.cat([splits[s].mapped_triples for s in ("train", "val", "test")])
    test = splits["test"].mapped_triples
    net = result.model.eval()
    ranks = []
    with torch.no_grad():
        for side, scores in (
            ("tail", net.score_t(test[:, :2])),
            ("head", net.score_h(test[:, 1:])),
        ):
            for i, (h, r, t) in enumerate(test.tolist()):
                if side == "tail":
                    true, mask = t, (known[:, 0] == h) & (known[:, 1] == r)
                    others = known[mask, 2]
                else:
                    true, mask = h, (known[:, 1] == r) & (known[:, 2] == t)
                    others = known[mask, 0]
                row = scores[i].clone()
                row[others[others != true]] = float("nan")
                optimistic = (row > row[true]).sum() + 1
                pessimistic = (row >= row[true]).sum()
                ranks.append((optimistic + pessimistic).double() / 2)
    ranks = torch.stack(ranks)
    metrics = result.metric_results
    get = metrics.get_metric
    assert get(kge_reference.METRICS["mrr"]) == pytest.approx(ranks.reciprocal().mean().item())
    assert get(kge_reference.METRICS["mr"]) == pytest.approx(ranks.mean().item())
    for k in (1, 3, 10):
        hits = (ranks <= k).double().mean().item()
        assert get(kge_reference.METRICS[f"hits_at_{k}"]) == pytest.approx(hits)


def test_bench_options_are_refused_where_they_do_not_apply(capsys) -> None:
    from archlab.cli import main

    assert main(["bench", "gpt", "--dataset", "kinship"]) == 2
    assert "bench gpt takes no --dataset" in capsys.readouterr().err
    assert main(["bench", "kge-reference", "--models", "transx"]) == 2
    assert "unknown model transx" in capsys.readouterr().err
