"""PyKEEN's own test figures under issue 16's protocol, for the cells the issue gives none.

``archlab bench kge-reference --dataset kinship`` trains each model with PyKEEN's
``pipeline`` -- nothing of archlab's but the data -- and evaluates it on test:

- data: the dataset's archive read as archlab reads it (``archlab.data.kg.load_kg``: the
  splits in file order, ids of the sorted labels), handed to PyKEEN as ``TriplesFactory``
  objects with those ids, as ``archlab bench kge`` and the parity tests do;
- protocol (issue 16): sLCWA, 64 uniform negatives per positive (PyKEEN's basic sampler),
  300 epochs;
- everything else PyKEEN's pipeline default: each model's default dimension, constraints,
  regulariser and initialisation (TransE d = 50, L1; DistMult d = 50; ComplEx d = 200;
  RotatE d = 200), the pipeline's loss (``loss_resolver``'s default, a margin ranking loss
  with margin 1, for all four -- the pipeline does not use a model's own ``loss_default``,
  so ComplEx gets it too), Adam at lr 1e-3, batches of 256 (PyKEEN's choice on a CPU), no
  early stopping;
- evaluation: PyKEEN's ``RankBasedEvaluator`` on test, filtered by training, validation
  and test triples, both sides, realistic ranks.

Each seed (0 .. seeds - 1) is one ``pipeline`` call; a model's figures are the mean (and
standard deviation) over its seeds, with each seed's figures and times kept.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable

from archlab.errors import ConfigError

DATASETS = ("nations", "umls", "kinship")
MODELS = ("transe", "distmult", "complex", "rotate")
PYKEEN_MODEL = {
    "transe": "TransE",
    "distmult": "DistMult",
    "complex": "ComplEx",
    "rotate": "RotatE",
}
EPOCHS, NEGATIVES, SEEDS = 300, 64, 5
QUICK_EPOCHS = 2
# PyKEEN's metric keys: both sides, realistic rank
METRICS = {
    "mrr": "both.realistic.inverse_harmonic_mean_rank",
    "hits_at_1": "both.realistic.hits_at_1",
    "hits_at_3": "both.realistic.hits_at_3",
    "hits_at_10": "both.realistic.hits_at_10",
    "mr": "both.realistic.arithmetic_mean_rank",
}
OPTIONS = ("dataset", "models", "epochs", "seeds")  # what `archlab bench` passes on
RESUMES = True  # with --out: the file is written after each seed, and taken up when rerun


def pykeen_version() -> str:
    from importlib.metadata import version

    return version("pykeen")


def factories(dataset: str) -> dict:
    """PyKEEN's TriplesFactory of each split, with archlab's ids and file order."""
    from pykeen.triples import TriplesFactory

    from archlab.data.kg import load_kg

    graph = load_kg(dataset)
    return {
        split: TriplesFactory(triples, graph.entity_ids, graph.relation_ids)
        for split, triples in graph.triples.items()
    }


def pipeline_run(splits: dict, model: str, epochs: int, seed: int, progress: bool = True):
    """One call of PyKEEN's ``pipeline`` with issue 16's protocol: (its result, wall seconds)."""
    from pykeen.pipeline import pipeline

    for name in ("pykeen", "torch_max_mem"):  # their notes on CPU batch sizes, each run
        logging.getLogger(name).setLevel(logging.ERROR)
    start = time.perf_counter()
    result = pipeline(
        training=splits["train"],
        validation=splits["val"],
        testing=splits["test"],
        model=PYKEEN_MODEL[model],
        training_loop="sLCWA",
        negative_sampler="basic",
        negative_sampler_kwargs=dict(num_negs_per_pos=NEGATIVES),
        epochs=epochs,
        random_seed=seed,
        device="cpu",
        use_tqdm=progress,
        training_kwargs=dict(use_tqdm_batch=False),  # the epochs' bar only
    )
    return result, time.perf_counter() - start


def train_and_test(splits: dict, model: str, epochs: int, seed: int, progress: bool = True):
    """One PyKEEN run: its test figures, times and resolved settings."""
    result, wall = pipeline_run(splits, model, epochs, seed, progress)
    figures = {key: float(result.metric_results.get_metric(name)) for key, name in METRICS.items()}
    times = {
        "train_seconds": float(result.train_seconds),
        "eval_seconds": float(result.evaluate_seconds),
        "wall_seconds": wall,
    }
    return figures, times, settings(result)


def settings(result) -> dict:
    """What the pipeline resolved: the model's dimension, loss, regulariser, optimizer."""
    net, config = result.model, result.configuration
    regularizers, constrainers = [], []
    for side, reps in (
        ("entity", net.entity_representations),
        ("relation", net.relation_representations),
    ):
        for rep in reps:
            if getattr(rep, "regularizer", None) is not None:
                weight = float(rep.regularizer.weight)
                regularizers.append(f"{side} {type(rep.regularizer).__name__}({weight:g})")
            if getattr(rep, "constrainer", None) is not None:
                constrainers.append(
                    f"{side} {getattr(rep.constrainer, '__name__', rep.constrainer)}"
                )
    loss = type(net.loss).__name__
    if hasattr(net.loss, "margin"):
        loss += f"(margin={net.loss.margin:g})"
    return {
        "model": type(net).__name__,
        **{  # the model's own defaults the pipeline filled in: dimension, TransE's norm
            key: value
            for key, value in config["model_kwargs"].items()
            if key != "random_seed" and isinstance(value, (int, float, str, bool))
        },
        "loss": loss,
        "regularizer": ", ".join(regularizers) or None,
        "constrainer": ", ".join(constrainers) or None,
        "optimizer": config["optimizer"],
        "lr": config["optimizer_kwargs"]["lr"],
        "batch_size": config["batch_size"],
        "training_loop": config["training_loop"],
        "negative_sampler": config["negative_sampler"],
        "num_negs_per_pos": config["negative_sampler_kwargs"]["num_negs_per_pos"],
        "epochs": config["num_epochs"],
    }


def _aggregate(runs: list[dict]) -> dict:
    out: dict = {}
    for key in METRICS:
        values = [r[key] for r in runs]
        out[key] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def _entry(runs: dict[int, dict], settings: dict) -> dict:
    """One model's part of the report: its seeds' runs (by seed), their mean and spread."""
    ordered = [runs[seed] for seed in sorted(runs)]
    return {
        **_aggregate(ordered),
        "wall_seconds": sum(r["wall_seconds"] for r in ordered),
        "settings": settings,
        "seeds": ordered,
    }


def _choices(models: str | list[str] | None, quick: bool) -> list[str]:
    if models is None:
        return [MODELS[0]] if quick else list(MODELS)
    names = models.split(",") if isinstance(models, str) else list(models)
    unknown = [m for m in names if m not in MODELS]
    if len(set(names)) < len(names):
        raise ConfigError(f"kge-reference: --models {','.join(names)} names a model twice")
    if unknown or not names:
        raise ConfigError(
            f"kge-reference: unknown model {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(MODELS)}"
        )
    return names


def _done(previous: dict | None, dataset: str, version: str, epochs: int) -> dict:
    """The (model, seed) runs an earlier output of the same protocol already holds."""
    if not previous or (
        previous.get("dataset"),
        previous.get("pykeen"),
        previous.get("protocol", {}).get("epochs"),
        previous.get("protocol", {}).get("num_negs_per_pos"),
    ) != (dataset, version, epochs, NEGATIVES):
        return {}
    return {
        (model, run["seed"]): (run, r["settings"])
        for model, r in previous.get("models", {}).items()
        for run in r.get("seeds", [])
    }


def _keeps_all(
    previous: dict | None, dataset: str, version: str, epochs: int, names: list[str], seeds: int
) -> None:
    """Refuse a call whose report would drop runs the --out file holds (another dataset,
    PyKEEN or epochs; a model or seed not asked for): that file is rewritten after each seed."""
    held = {
        (model, run.get("seed"))
        for model, r in ((previous or {}).get("models") or {}).items()
        for run in r.get("seeds", [])
    }
    if not held:
        return
    if not _done(previous, dataset, version, epochs):
        protocol = previous.get("protocol", {})
        raise ConfigError(
            f"kge-reference: the --out file holds runs of PyKEEN {previous.get('pykeen')} on "
            f"{previous.get('dataset')} ({protocol.get('epochs')} epochs), which this call "
            "would overwrite; give another --out"
        )
    dropped = sorted(held - {(m, s) for m in names for s in range(seeds)})
    if dropped:
        runs = ", ".join(f"{m} seed {s}" for m, s in dropped)
        raise ConfigError(
            f"kge-reference: the --out file holds runs this call leaves out ({runs}); "
            "ask for them too with --models and --seeds, or give another --out"
        )


def _report(dataset: str, version: str, epochs: int, seeds: int, results: dict) -> dict:
    summary = ", ".join(
        f"{PYKEEN_MODEL[m]} {r['mrr']:.3f}"
        + (f" ± {r['mrr_std']:.3f}" if len(r["seeds"]) > 1 else "")
        + ("" if len(r["seeds"]) == seeds else f" ({len(r['seeds'])} of {seeds} seeds)")
        for m, r in results.items()
    )
    return {
        "dataset": dataset,
        "pykeen": version,
        "protocol": {
            "training_loop": "sLCWA",
            "num_negs_per_pos": NEGATIVES,
            "epochs": epochs,
            "seeds": list(range(seeds)),
            "evaluation": "test, filtered (train + validation + test), both sides, realistic rank",
            "else": "PyKEEN's pipeline defaults",
        },
        "models": results,
        "summary": f"PyKEEN {version}'s test MRR on {dataset.capitalize()}, issue 16's protocol "
        f"({epochs} epochs, mean of {seeds} seed{'s' if seeds > 1 else ''}): {summary}",
        "reference": f"PyKEEN {version}'s own pipeline (sLCWA, {NEGATIVES} negatives, "
        f"{epochs} epochs, its defaults otherwise; RankBasedEvaluator)",
    }


def run(
    quick: bool = False,
    dataset: str | None = None,
    models: str | list[str] | None = None,
    epochs: int | None = None,
    seeds: int | None = None,
    previous: dict | None = None,
    save: Callable[[dict], None] | None = None,
) -> dict:
    """PyKEEN's test figures on ``dataset`` (default kinship); ``quick``: 2 epochs of TransE,
    one seed (unless the options say otherwise).  ``save`` gets the report so far after
    each seed; the runs ``previous`` (an earlier report) holds with the same dataset,
    PyKEEN, epochs and negatives are taken up, not trained again."""
    try:
        import pykeen  # noqa: F401
    except ImportError:
        raise ConfigError(
            "kge-reference trains PyKEEN; install it with: pip install 'archlab[test]'"
        ) from None
    dataset = dataset or "kinship"
    if dataset not in DATASETS:
        raise ConfigError(
            f"kge-reference: unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}"
        )
    names = _choices(models, quick)
    epochs = epochs if epochs is not None else QUICK_EPOCHS if quick else EPOCHS
    seeds = seeds if seeds is not None else 1 if quick else SEEDS
    if epochs < 1 or seeds < 1:
        raise ConfigError("kge-reference: --epochs and --seeds must be at least 1")
    version = pykeen_version()
    _keeps_all(previous, dataset, version, epochs, names, seeds)
    splits = factories(dataset)
    done = _done(previous, dataset, version, epochs)
    print(
        f"kge-reference: PyKEEN {version} on {dataset}, {', '.join(names)}; "
        f"{epochs} epochs, {seeds} seed{'s' if seeds > 1 else ''} each"
        + (f"; {len(done)} run(s) taken up from the output file" if done else ""),
        flush=True,
    )
    # every report saved holds the runs taken up, also those of models not reached yet,
    # so that a stop during one model loses none of another's
    runs = {m: {s: done[m, s][0] for s in range(seeds) if (m, s) in done} for m in names}
    settings = {m: done[m, s][1] for m, s in done if m in runs}

    def results() -> dict:  # in a fixed model order
        return {m: _entry(runs[m], settings[m]) for m in MODELS if runs.get(m)}

    for i, model in enumerate(names, 1):
        for seed in range(seeds):
            if (model, seed) in done:
                run = done[model, seed][0]
                figures = {key: run[key] for key in METRICS}
                times = {"wall_seconds": run["wall_seconds"]}
                taken = " (taken up)"
            else:
                figures, times, settings[model] = train_and_test(splits, model, epochs, seed)
                run, taken = {"seed": seed, **figures, **times}, ""
            if not all(math.isfinite(v) for v in figures.values()):
                raise ConfigError(f"kge-reference: {model} seed {seed} gave {figures}")
            runs[model][seed] = run
            print(
                f"  [{i}/{len(names)}] {model} seed {seed}: test MRR {figures['mrr']:.3f}, "
                f"H@10 {figures['hits_at_10']:.3f}, MR {figures['mr']:.2f} "
                f"({times['wall_seconds']:.0f} s){taken}",
                flush=True,
            )
            if save is not None:
                save(_report(dataset, version, epochs, seeds, results()))
        r = _entry(runs[model], settings[model])
        print(
            f"  {model}: test MRR {r['mrr']:.3f} ± {r['mrr_std']:.3f} over {seeds} seed(s) "
            f"in {r['wall_seconds']:.0f} s",
            flush=True,
        )
    return _report(dataset, version, epochs, seeds, results())
