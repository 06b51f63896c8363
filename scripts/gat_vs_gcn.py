"""Claim 2: GAT handles varying structure better than GCN -- by node degree and under edge noise.

The articles claim that attention over neighbours (GAT) copes with varying graph
structure better than GCN's fixed degree-normalised averaging.  Here both train with
their recipes (``gcn-cora``, ``gat-cora``, ``gcn-citeseer``, ``gat-citeseer``) over the
same seeds, and are compared

- by node degree: test accuracy per degree bucket (quantiles of the test nodes'
  degrees in the clean graph);
- under structure noise at test time: the clean-trained models evaluated on the graph
  with 10/20/40 % of its edges dropped, or as many random edges added
  (:func:`archlab.data.graphs.perturb_edges`, noise drawn by the run's seed);
- under structure noise at training and test time: models trained on the noisy graph
  (``--set data.edge_drop=...`` / ``data.edge_add=...``, ``data.noise_seed`` = seed).

Each setting's two models share their seeds, so the test is paired: Wilcoxon's
signed-rank test on the per-seed accuracies (exact, two-sided), with the mean
difference GAT - GCN.  Each training is one ``archlab train`` in its own directory, so
the sweep resumes where it stopped.

    python scripts/gat_vs_gcn.py plan                     # the runs and their overrides
    python scripts/gat_vs_gcn.py run [--max-seconds 480]  # train the runs not yet done
    python scripts/gat_vs_gcn.py collect                  # results/claim-gat-vs-gcn.json, plots
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # this checkout's archlab, wherever it is installed

import numpy as np  # noqa: E402
import torch  # noqa: E402

import archlab  # noqa: E402
from archlab.claims import (  # noqa: E402
    ALPHA,
    done,
    parse_script_args,
    script_command,
    train_missing,
    wilcoxon_p,
    write_claim,
)
from archlab.data.graphs import perturb_edges  # noqa: E402

OUT = ROOT / "results" / "claim-gat-vs-gcn.json"
IMG = ROOT / "docs" / "img"
RUNS = ROOT / "runs" / "gat-vs-gcn"
DATASETS = ("cora", "citeseer")
MODELS = ("gcn", "gat")
LEVELS = (0.1, 0.2, 0.4)
NOISE = {"drop": "edge_drop", "add": "edge_add"}  # kind of noise -> its data key
BUCKETS = 4  # degree quantiles


def settings(noisy_training: bool) -> list[tuple[str, float]]:
    """("clean", 0) and, with noisy training, each (kind, level)."""
    noisy = [(kind, level) for kind in NOISE for level in LEVELS]
    return [("clean", 0.0), *(noisy if noisy_training else [])]


def run_dir(runs: Path, dataset: str, model: str, kind: str, level: float, seed: int) -> Path:
    noise = "clean" if kind == "clean" else f"{kind}{round(level * 100)}"
    return runs / f"{dataset}-{model}-{noise}-s{seed}"


def overrides(kind: str, level: float, seed: int, extra: list[str]) -> list[str]:
    sets = [f"trainer.seed={seed}", *extra]
    if kind != "clean":
        sets += [f"data.{NOISE[kind]}={level}", f"data.noise_seed={seed}"]
    return sets


def cells(args) -> list[tuple[str, str, str, float, int]]:
    return [
        (dataset, model, kind, level, seed)
        for dataset in args.datasets
        for kind, level in settings(not args.clean_only)
        for seed in range(args.seeds)
        for model in MODELS
    ]


def cmd_plan(args) -> None:
    for dataset, model, kind, level, seed in cells(args):
        path = run_dir(args.runs, dataset, model, kind, level, seed)
        state = "done" if done(path) else "to run"
        sets = " --set ".join(overrides(kind, level, seed, args.set))
        print(f"{state:<7} archlab train {model}-{dataset} --set {sets} --out {path}")


def cmd_run(args) -> None:
    """Train the runs not yet done; start none after --max-seconds."""
    train_missing(
        (
            (
                f"{dataset} {model} {kind} {level:g} seed {seed}",
                f"{model}-{dataset}",
                overrides(kind, level, seed, args.set),
                run_dir(args.runs, dataset, model, kind, level, seed),
            )  # fmt: skip
            for dataset, model, kind, level, seed in cells(args)
        ),
        args.max_seconds,
    )


def load_run(path: Path):
    """The trained run, its model in evaluation mode, and its graph."""
    run = archlab.load(path)
    run.task.setup()
    run.model.eval()
    return run, run.task.graph


@torch.no_grad()
def test_correct(run, graph, edge_index: torch.Tensor) -> torch.Tensor:
    """Per test node: is the run's prediction right, on the graph with ``edge_index``."""
    mask = graph.masks["test"]
    return run.model(graph.x, edge_index)[mask].argmax(1) == graph.y[mask]


def paired(gcn: list[float], gat: list[float]) -> dict:
    """Means, the mean difference GAT - GCN and Wilcoxon's signed-rank p (two-sided)."""
    a, b = np.array(gcn), np.array(gat)
    diff = b - a
    p = wilcoxon_p(gat, gcn)
    return {
        "gcn": float(a.mean()),
        "gcn_std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "gat": float(b.mean()),
        "gat_std": float(b.std(ddof=1)) if len(b) > 1 else 0.0,
        "difference": float(diff.mean()),
        "p": p,
        "seeds": len(a),
    }


def bucket_edges(degrees: torch.Tensor) -> list[int]:
    """Lower bounds of the degree buckets: quantiles of the test nodes' degrees, distinct."""
    q = np.quantile(degrees.numpy(), np.linspace(0, 1, BUCKETS + 1)[:-1], method="lower")
    return sorted({int(v) for v in q})


def bucket_label(lows: list[int], i: int) -> str:
    high = lows[i + 1] - 1 if i + 1 < len(lows) else None
    if high is None:
        return f"{lows[i]}+"
    return str(lows[i]) if high == lows[i] else f"{lows[i]}-{high}"


def collect_dataset(args, dataset: str) -> dict:
    clean = {m: [] for m in MODELS}  # per seed: (right, degree) on the clean graph
    test_noise = {(k, lv): {m: [] for m in MODELS} for k in NOISE for lv in LEVELS}
    train_noise = {(k, lv): {m: [] for m in MODELS} for k in NOISE for lv in LEVELS}
    for seed in range(args.seeds):
        paths = {m: run_dir(args.runs, dataset, m, "clean", 0.0, seed) for m in MODELS}
        if not all(done(p) for p in paths.values()):
            continue
        for model, path in paths.items():
            run, g = load_run(path)
            degree = torch.bincount(g.edge_index[0], minlength=g.num_nodes)[g.masks["test"]]
            clean[model].append((test_correct(run, g, g.edge_index), degree))
            for kind, level in test_noise:
                drop, add = (level, 0.0) if kind == "drop" else (0.0, level)
                noise = torch.Generator().manual_seed(seed)
                noisy = perturb_edges(g.edge_index, g.num_nodes, drop, add, noise)
                right = test_correct(run, g, noisy)
                test_noise[kind, level][model].append(right.float().mean().item())
        for kind, level in train_noise:
            noisy_paths = {m: run_dir(args.runs, dataset, m, kind, level, seed) for m in MODELS}
            if all(done(p) for p in noisy_paths.values()):
                for model, path in noisy_paths.items():
                    results = json.loads((path / "results.json").read_text("utf-8"))
                    train_noise[kind, level][model].append(results["test"]["accuracy"])
    if not clean["gcn"]:
        return {}
    accuracy = {m: [float(r.float().mean()) for r, _ in clean[m]] for m in MODELS}
    lows = bucket_edges(clean["gcn"][0][1])
    by_degree = {}
    for i in range(len(lows)):
        high = lows[i + 1] if i + 1 < len(lows) else math.inf
        per_model = {}
        for model in MODELS:
            per_model[model] = []
            for right, degree in clean[model]:
                inside = (degree >= lows[i]) & (degree < high)
                per_model[model].append(float(right[inside].float().mean()))
        nodes = int(((clean["gcn"][0][1] >= lows[i]) & (clean["gcn"][0][1] < high)).sum())
        by_degree[bucket_label(lows, i)] = {**paired(per_model["gcn"], per_model["gat"]),
                                            "nodes": nodes}  # fmt: skip
    # robustness: each model's accuracy change from its clean figure, paired over seeds
    # (difference > 0: GAT loses less than GCN)
    robustness = {}
    for part, noise in (("test_noise", test_noise), ("train_and_test_noise", train_noise)):
        for (kind, level), v in noise.items():
            if len(v["gcn"]) == len(accuracy["gcn"]):  # every seed: pairs line up
                drops = {m: [a - b for a, b in zip(v[m], accuracy[m], strict=True)]
                         for m in MODELS}  # fmt: skip
                robustness[f"{part.replace('_', ' ')}, {kind} {level:.0%}"] = paired(
                    drops["gcn"], drops["gat"]
                )
    return {
        "clean": paired(accuracy["gcn"], accuracy["gat"]),
        "robustness": robustness,
        "by_degree": by_degree,
        "test_noise": {
            f"{kind} {level:.0%}": paired(v["gcn"], v["gat"])
            for (kind, level), v in test_noise.items()
        },
        "train_and_test_noise": {
            f"{kind} {level:.0%}": paired(v["gcn"], v["gat"])
            for (kind, level), v in train_noise.items()
            if v["gcn"]
        },
    }


def _tally(table: dict, parts: tuple[str, ...]) -> tuple[list, list, list]:
    """The settings where GAT's figure is significantly above GCN's, below it, or neither."""
    above, below, neither = [], [], []
    for dataset, found in table.items():
        for part in parts:
            for setting, row in found[part].items():
                name = f"{dataset} {part.replace('_', ' ')} {setting}"
                if row["p"] >= ALPHA:
                    neither.append(name)
                else:
                    (above if row["difference"] > 0 else below).append(name)
    return above, below, neither


def verdict(table: dict) -> str:
    """Two counts: where GAT is more accurate than GCN (by degree, under noise), and where
    it loses less accuracy to edge noise than GCN does (robustness); then the verdict."""
    better, worse, same = _tally(table, ("by_degree", "test_noise", "train_and_test_noise"))
    sturdier, frailer, even = _tally(table, ("robustness",))
    total, noisy = len(better) + len(worse) + len(same), len(sturdier) + len(frailer) + len(even)
    if len(better) > total / 2 and len(sturdier) > noisy / 2:
        word = "supported"
    elif len(better) > total / 2:
        word = "partly supported (GAT is more accurate, but not more robust to edge noise)"
    elif len(worse) >= len(better) and worse:
        word = "not supported"
    else:
        word = "inconclusive at this budget"
    return (
        f"{word}: of {total} settings (degree buckets and edge noise on {', '.join(table)}), "
        f"GAT is more accurate than GCN in {len(better)}, less in {len(worse)}, and not told "
        f"apart in {len(same)}; of {noisy} noise settings, GAT loses less accuracy than GCN "
        f"in {len(sturdier)}, more in {len(frailer)}, and not told apart in {len(even)} "
        f"(paired Wilcoxon over seeds, p < {ALPHA})"
    )


def plot(table: dict, img: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"gcn": "tab:blue", "gat": "tab:orange"}
    trained = any(parts["train_and_test_noise"] for parts in table.values())
    cols = 3 if trained else 2  # the third panel only once models trained on noisy graphs
    fig, axes = plt.subplots(len(table), cols, figsize=(3.4 * cols, 3 * len(table)),
                             squeeze=False)  # fmt: skip
    for row, (dataset, parts) in zip(axes, table.items(), strict=True):
        buckets = list(parts["by_degree"])
        x = np.arange(len(buckets))
        for j, model in enumerate(MODELS):
            means = [parts["by_degree"][b][model] for b in buckets]
            stds = [parts["by_degree"][b][f"{model}_std"] for b in buckets]
            # points, not bars: a bar's length would mislead on an axis that starts above 0
            row[0].errorbar(x + (j - 0.5) * 0.2, means, yerr=stds, fmt="o", capsize=3,
                            label=model.upper(), color=colours[model])  # fmt: skip
        row[0].set(xticks=x, xticklabels=buckets, xlabel="degree", ylabel="test accuracy "
                   "(mean ± std)", title=f"{dataset}: by node degree")  # fmt: skip
        lowest = min(parts["by_degree"][b][m] for b in buckets for m in MODELS)
        row[0].set_ylim(max(0.0, lowest - 0.15), 1.0)
        panels = [(row[1], "test_noise", "noise at test time")]
        if trained:
            panels.append((row[2], "train_and_test_noise", "noise in training and test"))
        for ax, part, title in panels:
            for kind, style in (("drop", "-"), ("add", "--")):
                for model in MODELS:
                    points = [(0.0, parts["clean"][model])] + [
                        (level, parts[part][f"{kind} {level:.0%}"][model])
                        for level in LEVELS
                        if f"{kind} {level:.0%}" in parts[part]
                    ]
                    ax.plot(*zip(*points, strict=True), style, marker="o", ms=3,
                            color=colours[model], label=f"{model.upper()}, {kind}")  # fmt: skip
            ax.set(xlabel="share of edges dropped / added", ylabel="test accuracy",
                   title=f"{dataset}: {title}")  # fmt: skip
        row[0].legend(fontsize=7)
        row[-1].legend(fontsize=7)
    fig.tight_layout()
    img.mkdir(parents=True, exist_ok=True)
    name = "claim-gat-vs-gcn.png"
    fig.savefig(img / name, dpi=120)
    plt.close(fig)
    return [name]


def cmd_collect(args) -> None:
    table = {d: t for d in args.datasets if (t := collect_dataset(args, d))}
    if not table:
        sys.exit("no pair of clean runs has finished yet: run `python scripts/gat_vs_gcn.py run`")
    images = plot(table, args.img)
    missing = [
        run_dir(args.runs, *cell).name
        for cell in cells(args)
        if not done(run_dir(args.runs, *cell))
    ]
    sentence = verdict(table)
    trained_noisy = any(found["train_and_test_noise"] for found in table.values())
    body = {
        "summary": sentence,
        "reference": "the articles: GAT handles varying graph structure better than GCN; the "
        f"gcn-* and gat-* recipes on Cora and CiteSeer over seeds 0-{args.seeds - 1}, test "
        f"accuracy by degree quartile and with {'/'.join(f'{v:.0%}' for v in LEVELS)} of the "
        "edges dropped or added ("
        + (
            "at test time; in training and test"
            if trained_noisy
            else "at test time only: the trainings on noisy graphs have not run"
        )
        + "); paired Wilcoxon signed-rank test; robustness: each model's accuracy change "
        "from its clean figure, paired over seeds",
        "verdict": sentence,
        "results": table,
        "missing": missing,
        "images": [f"docs/img/{name}" for name in images],
    }
    write_claim(args.out, "claim-gat-vs-gcn", script_command("gat_vs_gcn.py", args.argv), body)
    print(f"wrote {args.out} and {', '.join(images)}")
    print(sentence)
    if missing:
        print(f"{len(missing)} runs not done, e.g. {', '.join(missing[:3])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("plan", cmd_plan), ("run", cmd_run), ("collect", cmd_collect)):
        p = sub.add_parser(name, help=fn.__doc__)
        p.set_defaults(func=fn)
        p.add_argument("--datasets", nargs="*", choices=DATASETS, default=list(DATASETS))
        p.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="an override for every run (for a smaller budget)",
        )
        p.add_argument("--clean-only", action="store_true", help="no training on noisy graphs")
        p.add_argument("--runs", type=Path, default=RUNS, help="where the runs go")
        p.add_argument("--max-seconds", type=float, default=math.inf)
        p.add_argument("--out", type=Path, default=OUT)
        p.add_argument("--img", type=Path, default=IMG)
    args = parse_script_args(parser, argv)
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 for a paired test")
    args.func(args)


if __name__ == "__main__":
    main()
