"""Knowledge-graph embeddings against PyKEEN: training time per epoch, evaluation time, memory.

Both sides train the same model, archlab's ``{model}-umls`` recipe (TransE d = 50, L2,
margin ranking loss; RotatE d = 200, PyKEEN's form, NSSA loss; ComplEx d = 50 with
PyKEEN's Lp regulariser and softplus loss), from the same initial weights, with sLCWA,
64 uniform negatives per positive, batches of 256 and Adam, on the same triples:

- train: seconds per epoch.  archlab: the Trainer's own step (batch, loss, backward,
  Adam, constraints); PyKEEN: its ``SLCWATrainingLoop``, (three epochs - one epoch) / 2
  (its start-up -- memory probing, data loader -- is left out).  On WN18RR both train on
  the first 25,600 training triples (100 batches) and the time is scaled to the whole
  epoch (86,835 triples).
- eval: seconds to rank the test set, both sides, filtered (archlab's task evaluation;
  PyKEEN's ``RankBasedEvaluator`` with the training and validation triples as filter),
  256 queries at a time for archlab; PyKEEN scores h o r - t for every entity at once
  (batch x entities x dim numbers: 17 GB for RotatE on WN18RR at 256), so its batch is
  cut to keep that below 2**27 numbers (WN18RR: 65 queries for TransE, 8 for RotatE).
- memory: peak resident memory of one training step above a fresh process's baseline,
  each side in its own subprocess.

Times are medians of interleaved repeats (one on WN18RR, where a case takes minutes);
ratios are archlab / PyKEEN (below 1: archlab is faster or smaller).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from archlab.bench import in_fresh_process, interleaved_medians, step_peak_mb
from archlab.errors import ConfigError

RESUMES = True  # with --out: the file is written after each case, and taken up when rerun
OPTIONS = ("cases",)  # what `archlab bench` passes on
BATCH, NEGATIVES = 256, 64
SUBSET = 25_600  # WN18RR training triples timed (100 batches)
CASES = (
    ("umls", "transe"),
    ("umls", "rotate"),
    ("umls", "complex"),
    ("wn18rr", "transe"),
    ("wn18rr", "rotate"),
)
QUICK_CASES = (("umls", "transe"), ("umls", "rotate"))
NAMES = tuple(f"{model}-{dataset}" for dataset, model in CASES)  # a case's name: rotate-umls
PYKEEN_MODEL = {"transe": "TransE", "rotate": "RotatE", "complex": "ComplEx"}


def _recipe_overrides(dataset: str) -> list[str]:
    return [f"data.dataset={dataset}", "trainer.eval_batch_size=256", f"trainer.batch_size={BATCH}"]


def _archlab(dataset: str, model: str, train_triples: int | None):
    """(the Trainer, the task) for ``{model}-umls`` on ``dataset``; training cut to the
    first ``train_triples`` triples."""
    from archlab.config import apply_overrides, read_recipe
    from archlab.run import resolve
    from archlab.train import Trainer

    recipe = resolve(apply_overrides(read_recipe(f"{model}-umls"), _recipe_overrides(dataset)))
    recipe.task.setup()
    if train_triples is not None:
        recipe.task.graph.triples["train"] = recipe.task.graph.triples["train"][:train_triples]
    torch.manual_seed(0)
    net, config = recipe.build_model()
    run_dir = Path(tempfile.mkdtemp(prefix="archlab-bench-kge-"))
    trainer = Trainer(recipe.task, net, recipe.trainer, run_dir, model, config, progress=False)
    weakref.finalize(trainer, shutil.rmtree, run_dir, True)  # the scratch folder goes with it
    return trainer, recipe.task


def _pykeen(task, model: str, train_triples: int | None, init: torch.nn.Module):
    """A PyKEEN model with archlab's initial weights, its training loop, and the factories."""
    try:
        import pykeen.models
        from pykeen.training import SLCWATrainingLoop
        from pykeen.triples import TriplesFactory
    except ImportError:
        raise ConfigError(
            "the kge benchmark compares against PyKEEN; install it with: "
            "pip install 'archlab[test]'"
        ) from None
    import logging

    logging.getLogger("pykeen").setLevel(logging.ERROR)
    g = task.graph
    factories = {s: TriplesFactory(g.triples[s], g.entity_ids, g.relation_ids) for s in g.triples}
    net = getattr(pykeen.models, PYKEEN_MODEL[model])(
        triples_factory=factories["train"], random_seed=0, **_pykeen_settings(task, init)
    )
    _copy_weights(init, net)
    optimizer = torch.optim.Adam(net.get_grad_params(), lr=1e-3)
    loop = SLCWATrainingLoop(
        model=net,
        triples_factory=factories["train"],
        optimizer=optimizer,
        negative_sampler="basic",
        negative_sampler_kwargs=dict(num_negs_per_pos=NEGATIVES),
    )
    return net, loop, factories


def _pykeen_settings(task, ours: torch.nn.Module) -> dict:
    """PyKEEN's model arguments for archlab's recipe: the dimension, TransE's norm, the loss."""
    from pykeen import losses

    data, config = task.data, ours.config
    settings: dict = {"embedding_dim": config.dim}
    if hasattr(config, "p"):
        settings["scoring_fct_norm"] = config.p
    if data.loss == "margin":
        settings["loss"] = losses.MarginRankingLoss(margin=data.margin)
    elif data.loss == "softplus":
        settings["loss"] = losses.SoftplusLoss()
    elif data.loss == "nssa":
        settings["loss"] = losses.NSSALoss(
            margin=data.margin, adversarial_temperature=data.adversarial_temperature
        )
    else:
        raise ConfigError(f"the kge benchmark has no PyKEEN loss for {data.loss!r}")
    if data.entity_regularizer or data.relation_regularizer:  # PyKEEN's ComplEx default
        if not data.entity_regularizer == data.relation_regularizer == 0.01:
            raise ConfigError("the kge benchmark expects PyKEEN's regulariser (0.01) or none")
    else:
        settings["regularizer"] = None
    return settings


def _copy_weights(ours: torch.nn.Module, theirs) -> None:
    """archlab's [Re | Im] rows as PyKEEN's interleaved (re, im) pairs."""
    with torch.no_grad():
        for mine, rep in (
            (ours.entity, theirs.entity_representations[0]),
            (ours.relation, theirs.relation_representations[0]),
        ):
            weight = rep._embeddings.weight
            if ours.is_complex:
                re, im = mine.chunk(2, dim=-1)
                weight.copy_(torch.stack([re, im], dim=-1).flatten(1))
            else:
                weight.copy_(mine)


def _train_seconds(dataset: str, model: str, repeats: int) -> dict[str, float]:
    train_triples = SUBSET if dataset == "wn18rr" else None
    trainer, task = _archlab(dataset, model, train_triples)
    steps = task.steps_per_epoch(BATCH)
    net, loop, factories = _pykeen(task, model, train_triples, trainer.model)
    full = len(task.graph.triples["train"]) if train_triples is None else 86835
    scale = full / len(task.graph.triples["train"])

    def ours() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            trainer._train_step()
        return (time.perf_counter() - start) * scale

    def theirs() -> float:  # each call starts afresh: (3 epochs - 1 epoch) / 2
        seconds = []
        for epochs in (1, 3):
            # without a progress bar PyKEEN's loop resumes at its epoch counter (it would
            # train epochs 2-3 here, then nothing on later calls): start it from 0
            loop._epoch = 0
            start = time.perf_counter()
            loop.train(
                triples_factory=factories["train"],
                num_epochs=epochs,
                batch_size=BATCH,
                use_tqdm=False,
            )
            seconds.append(time.perf_counter() - start)
        return (seconds[1] - seconds[0]) / 2 * scale

    ours()  # warm-up
    return interleaved_medians({"archlab": ours, "pykeen": theirs}, repeats)


def _eval_seconds(dataset: str, model: str, repeats: int) -> dict[str, float]:
    from pykeen.evaluation import RankBasedEvaluator

    trainer, task = _archlab(dataset, model, None)
    net, _, factories = _pykeen(task, model, None, trainer.model)
    filters = [factories["train"].mapped_triples, factories["val"].mapped_triples]

    def ours() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            trainer.model.eval()
            task.final_metrics(trainer.model, "test", 256)
        return time.perf_counter() - start

    def theirs() -> float:
        start = time.perf_counter()
        RankBasedEvaluator().evaluate(
            net,
            factories["test"].mapped_triples,
            additional_filter_triples=filters,
            batch_size=_pykeen_eval_batch(net, task.graph.num_entities),
            use_tqdm=False,
        )
        return time.perf_counter() - start

    return interleaved_medians({"archlab": ours, "pykeen": theirs}, repeats)


def _pykeen_eval_batch(net, num_entities: int) -> int:
    """PyKEEN's evaluation batch: at most 256, and batch x entities x width < 2**27."""
    width = net.entity_representations[0]._embeddings.weight.shape[1]
    return max(1, min(256, 2**27 // (num_entities * width)))


def one_step_peak(impl: str, dataset: str, model: str) -> float:
    """Peak RSS above the baseline during one training step (run in a fresh process)."""
    trainer, task = _archlab(dataset, model, SUBSET if dataset == "wn18rr" else None)
    if impl == "archlab":
        step = trainer._train_step
    else:
        net, loop, factories = _pykeen(task, model, None, trainer.model)
        train = factories["train"]
        small = train.clone_and_exchange_triples(train.mapped_triples[:BATCH])

        def step() -> None:
            loop.train(triples_factory=small, num_epochs=1, batch_size=BATCH, use_tqdm=False)

    return step_peak_mb(step)


def _peak_memory(impl: str, dataset: str, model: str) -> float:
    return in_fresh_process(
        f"from archlab.bench import kge; print(kge.one_step_peak({impl!r}, {dataset!r}, {model!r}))"
    )


def _cases(cases: str | list[str] | None, quick: bool) -> list[str]:
    """The asked cases as ``model-dataset`` names, in the benchmark's order."""
    if cases is None:
        return [f"{model}-{dataset}" for dataset, model in (QUICK_CASES if quick else CASES)]
    names = cases.split(",") if isinstance(cases, str) else list(cases)
    unknown = [c for c in names if c not in NAMES]
    if unknown:
        raise ConfigError(f"bench kge: unknown case {unknown[0]!r}; choose from {', '.join(NAMES)}")
    return [c for c in NAMES if c in names]


def run(
    quick: bool = False,
    cases: str | list[str] | None = None,
    previous: dict | None = None,
    save: Callable[[dict], None] | None = None,
) -> dict:
    """Every case asked (``cases``, default all).  ``save`` gets the report after each case;
    the cases ``previous`` (the --out file's report, made in the same mode) holds are
    taken up, not measured again, and kept in the report when not asked for."""
    repeats = 1 if quick else 3
    names = _cases(cases, quick)
    held = {k: v for k, v in (previous or {}).get("cases", {}).items() if k in NAMES}
    if held and bool(previous.get("quick", False)) != quick:  # would be overwritten
        mode = "--quick" if previous.get("quick") else "full"
        raise ConfigError(
            f"bench kge: the --out file holds {mode} figures ({', '.join(held)}), which this "
            "call would overwrite; give another --out"
        )
    results = dict(held)
    for key in names:
        if key in held:
            print(f"  {key}: taken up from the output file (another --out measures it again)")
            continue
        model, dataset = key.split("-")
        n = 1 if dataset == "wn18rr" else repeats
        train = _train_seconds(dataset, model, n)
        evaluation = _eval_seconds(dataset, model, n)
        memory = {impl: _peak_memory(impl, dataset, model) for impl in ("archlab", "pykeen")}
        results[key] = {
            "epoch_seconds": train,
            "epoch_ratio": train["archlab"] / train["pykeen"],
            "eval_seconds": evaluation,
            "eval_ratio": evaluation["archlab"] / evaluation["pykeen"],
            "peak_mb": memory,
            "memory_ratio": memory["archlab"] / max(memory["pykeen"], 1e-9),
            "threads": torch.get_num_threads(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        }
        print(f"  {key}: {results[key]}", flush=True)
        if save is not None:
            save(_report(results, quick))
    report = _report(results, quick)
    print(f"kge  (archlab vs PyKEEN; {torch.get_num_threads()} threads)")
    columns = ("epoch s", "PyKEEN", "ratio", "eval s", "PyKEEN", "ratio", "mem")
    print(
        f"  {'':<16}"
        + "".join(f"{c:>{w}}" for c, w in zip(columns, (9, 8, 7, 8, 8, 7, 7), strict=True))
    )
    for key, r in report["cases"].items():
        e, v = r["epoch_seconds"], r["eval_seconds"]
        print(
            f"  {key:<16}{e['archlab']:>9.2f}{e['pykeen']:>8.2f}{r['epoch_ratio']:>6.2f}x"
            f"{v['archlab']:>8.2f}{v['pykeen']:>8.2f}{r['eval_ratio']:>6.2f}x{r['memory_ratio']:>6.2f}x"
        )
    print("  (ratios are archlab / PyKEEN: below 1 means archlab is faster or smaller)")
    return report


def _report(results: dict, quick: bool) -> dict:
    results = {k: results[k] for k in NAMES if k in results}  # in the benchmark's order
    summary = (
        "archlab's time and peak memory as a share of PyKEEN's (goal <= 0.5x time, <= 1x memory): "
        + "; ".join(
            f"{key}: epoch {r['epoch_ratio']:.2f}x, evaluation {r['eval_ratio']:.2f}x, "
            f"memory {r['memory_ratio']:.2f}x PyKEEN's"
            for key, r in results.items()
        )
    )
    return {
        "cases": results,
        "quick": quick,
        "reference": "PyKEEN 1.11 (sLCWA training loop, RankBasedEvaluator), same dataset, "
        "model, dimension, negatives (64) and batch (256), archlab's initial weights copied in",
        "summary": summary,
    }
