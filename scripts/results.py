"""Results as data: record a finished run into results/, and build the README table and the book.

    python scripts/results.py record RUN_DIR --name gat-cora-pyg --command "archlab train ..." \
        --reference "83.0 ± 0.7 % (Veličković et al. 2018)" [--recipe gat-cora] [--variant "..."]
    python scripts/results.py record TUNE_DIR --name minilm-mr-lr --recipe minilm-mr \
        --variant "lr on folds 0-1"          # an `archlab tune` directory (its tune.json)
    python scripts/results.py build          # README's table, docs/results.md and docs/img/*.png
    python scripts/results.py build --check  # fail if either text is stale (no plots drawn)

Each file in results/ is one recorded figure with its command, date and machine, and says
what it is: ``kind`` is ``recipe`` (the file named like its recipe: the README's row),
``variant`` (the same recipe with something changed: ``variant`` says what), ``tune`` (an
``archlab tune`` of the recipe: its tune.json under ``tune``, shown as a table of the
settings' validation figures in the recipe's section), ``benchmark`` or ``claim``;
``recipe`` names the recipe it belongs to.  A recipe's own file also holds its
``headline``: the task, the metric of the README's row and the published figure.

The README gets one row per recipe (between its results markers) and one line per claim
(its generated:claim-verdicts block: the short verdict of `archlab claims`, linked to the
book's section that holds the claim); docs/results.md gets
everything, grouped by recipe, between its generated markers, so the prose around them
survives a rebuild.  ``table`` is the old name of ``build``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
RECIPES = ROOT / "src" / "archlab" / "recipes"
README = ROOT / "README.md"
BOOK = ROOT / "docs" / "results.md"
IMG = ROOT / "docs" / "img"
START, END = "<!-- results:start -->", "<!-- results:end -->"
BLOCK = re.compile(r"<!-- generated:(?P<name>[a-z-]+) -->\n.*?<!-- generated:end -->", re.S)
KINDS = ("recipe", "variant", "tune", "benchmark", "claim")

KGE = ("transe", "distmult", "complex", "rotate")
KGE_BUDGET_MINUTES = 60  # issue 16: rotate-wn18rr and rotate-fb15k237 within an hour here,
KGE_GOALS = {"wn18rr": 0.45, "fb15k237": 0.30}  # reaching these test MRRs
# The README's and the book's order: families of recipes, each with the plot drawn for it.
FAMILIES = (
    ("Text generation and translation", ("gpt-shakespeare-char", "gpt-shakespeare-char-small",
                                         "transformer-multi30k"), None),
    ("Sentence classification (MR)", ("cnn-mr", "lstm-mr", "transformer-mr", "bert-mr",
                                      "minilm-mr", "gpt-mr", "bert-mlm-mr", "gpt-clm-mr"), "mr"),
    ("Node classification", ("gcn-cora", "gcn-citeseer", "gcn-pubmed", "gat-cora",
                             "gat-citeseer", "gat-pubmed", "gcn-karate"), "gat-seeds"),
    ("Molecule property regression", ("gnn-esol", "gnn-freesolv", "gnn-lipo"), "molecules"),
    ("Image classification (MNIST)", ("cnn-mnist", "capsnet-mnist"), None),
    ("Image generation (MNIST)", ("dcgan-mnist", "cgan-mnist", "sagan-mnist"), "gans"),
    ("Sequences in time", ("tcn-adding", "lstm-adding", "gru-adding", "tcn-copy"), None),
    ("Forecasting", ("tcn-sunspots", "lstm-sunspots", "transformer-sunspots", "tcn-co2",
                     "lstm-co2", "transformer-co2"), None),
    ("Spoken digits (FSDD)", ("tcn-fsdd", "lstm-fsdd", "cnn-fsdd"), None),
    ("Polyphonic music", ("tcn-jsb", "lstm-jsb", "gru-jsb", "tcn-nottingham"), None),
    ("Knowledge-graph link prediction", tuple(
        f"{m}-{d}" for d in ("nations", "umls", "kinship") for m in KGE)
        + ("transe-wn18rr", "rotate-wn18rr", "rotate-wn18rr-paper", "transe-fb15k237",
           "rotate-fb15k237", "rotate-fb15k237-paper"), "kge-curves"),
    ("Audio-visual digits (fusion)", ("image-avdigits", "audio-avdigits", "early-avdigits",
                                      "late-avdigits", "gmu-avdigits", "xattn-avdigits",
                                      "central-avdigits"), "avdigits"),
)  # fmt: skip

# Recipes that have no recorded run yet, and why.
NOT_RUN = {
    "gpt-mr": {
        "task": "MR sentence polarity, 10-fold CV",
        "metric": "test accuracy",
        "reference": "76.1 % — Kim (2014), CNN-rand",
        "why": "not recorded alone; claim 6 ran its 10 folds (gpt-scratch)",
    },
    "tcn-adding": {
        "task": "adding problem, T = 600",
        "metric": "test MSE",
        "reference": "5.8e-5 — Bai et al. (2018), table 1",
        "why": "not run: 10 epochs take ~45-70 min here; probes stayed at the trivial 0.17",
    },
    "lstm-adding": {
        "task": "adding problem, T = 600",
        "metric": "test MSE",
        "reference": "0.164 — Bai et al. (2018), table 1 (LSTM)",
        "why": "not recorded yet",
    },
    "gru-adding": {
        "task": "adding problem, T = 600",
        "metric": "test MSE",
        "reference": "5.3e-5 — Bai et al. (2018), table 1 (GRU)",
        "why": "not recorded yet",
    },
    "tcn-copy": {
        "task": "copy memory, T = 1000 (loss: cross-entropy)",
        "metric": "test loss",
        "reference": "3.5e-5 — Bai et al. (2018), table 1",
        "why": "not recorded yet",
    },
    "gpt-shakespeare-char-small": {
        "task": "character LM, tiny Shakespeare",
        "metric": "val loss",
        "reference": "1.47 — nanoGPT's GPU config (config/train_shakespeare_char.py)",
        "why": "not run yet: 82 M training tokens (bf16 speed here: 3,000 tok/s)",
    },
    "gcn-pubmed": {
        "task": "PubMed, Planetoid public split",
        "metric": "test accuracy",
        "reference": "79.0 % — Kipf & Welling (2017), table 2",
        "why": "not run yet: ind.pubmed.allx is missing from the data root here",
    },
    "gat-pubmed": {
        "task": "PubMed, Planetoid public split",
        "metric": "test accuracy",
        "reference": "79.0 ± 0.3 % — Veličković et al. (2018), table 2",
        "why": "not run yet: ind.pubmed.allx is missing from the data root here",
    },
}

# knowledge-graph recipes not run here yet: the PyKEEN figure measured with the same protocol
_PYKEEN = {
    ("transe", "umls"): ".726", ("distmult", "umls"): ".664", ("complex", "umls"): ".897",
    ("rotate", "umls"): ".879",
}  # fmt: skip
_NAMES = {"transe": "TransE", "distmult": "DistMult", "complex": "ComplEx", "rotate": "RotatE"}


def measured_pykeen(dataset: str, model: str) -> str | None:
    """PyKEEN's test MRR as `archlab bench kge-reference` measured it with issue 16's
    protocol (results/bench-kge-reference-DATASET.json), over the seeds it has run, or None
    without that file or run."""
    path = RESULTS / f"bench-kge-reference-{dataset}.json"
    if not path.exists():
        return None
    entry = json.loads(path.read_text(encoding="utf-8"))
    bench = entry["benchmarks"]["kge-reference"]
    protocol = bench["protocol"]
    if (bench["dataset"], protocol["epochs"], protocol["num_negs_per_pos"]) != (dataset, 300, 64):
        sys.exit(f"results/{path.name}: not issue 16's protocol on {dataset} "
                 f"(300 epochs, 64 negatives): {entry['command']}")  # fmt: skip
    seeds, ran = len(protocol["seeds"]), len(bench["models"].get(model, {}).get("seeds", []))
    if not ran:  # not (yet) run
        return None
    runs = f"{ran} of {seeds} seeds" if ran < seeds else f"{ran} seed{'s' if ran > 1 else ''}"
    mrr = f"{bench['models'][model]['mrr']:.3f}".removeprefix("0")
    return f"{mrr} — PyKEEN {bench['pykeen']}, same protocol ({runs}, {entry['date']})"


for _m in KGE:
    for _d, _task in (("umls", "UMLS"), ("kinship", "Kinship")):
        _figure = _PYKEEN.get((_m, _d))
        NOT_RUN[f"{_m}-{_d}"] = {
            "task": f"{_task}, link prediction (filtered, both sides)",
            "metric": "test MRR",
            "reference": f"{_figure} — PyKEEN, same protocol (issue 16)"
            if _figure
            else measured_pykeen(_d, _m) or "no published figure for this protocol",
            "why": "not run yet: 5 seeds x 300 epochs take 15-60 min here",
        }
for _name, _task, _ref, _why in (
    ("transe-wn18rr", "WN18RR", ".226 — Sun et al. (2019), table 5 (TransE)", "not run yet"),
    ("rotate-wn18rr", "WN18RR", ".476 — Sun et al. (2019), table 5", "not run yet"),
    ("transe-fb15k237", "FB15k-237", ".294 — Sun et al. (2019), table 5 (TransE)", "not run yet"),
    ("rotate-fb15k237", "FB15k-237", ".338 — Sun et al. (2019), table 5", "not run yet"),
    ("rotate-wn18rr-paper", "WN18RR", ".476 — Sun et al. (2019), table 5",
     "not run: the paper's 80k steps of 512 x 1024 negatives need a GPU"),
    ("rotate-fb15k237-paper", "FB15k-237", ".338 — Sun et al. (2019), table 5",
     "not run: the paper's 100k steps of 1024 x 256 negatives need a GPU"),
):  # fmt: skip
    NOT_RUN[_name] = {
        "task": f"{_task}, link prediction (filtered, both sides)",
        "metric": "test MRR",
        "reference": _ref,
        "why": _why,
    }

# How each metric reads: scale, decimals, unit, and which way is better.
METRICS = {
    "accuracy": (100.0, 2, " %", "higher"),
    "bleu": (1.0, 2, "", "higher"),
    "rmse": (1.0, 3, "", "lower"),
    "mae": (1.0, 3, "", "lower"),
    "fid": (1.0, 1, "", "lower"),
    "mrr": (1.0, 3, "", "higher"),
    "perplexity": (1.0, 1, "", "lower"),
    "pseudo_perplexity": (1.0, 1, "", "lower"),
}
DEFAULT_METRIC = (1.0, 3, "", "lower")
REPEATS = {"trainer.seed": "seeds", "data.fold": "folds", "data.split_seed": "splits"}


# ---------------------------------------------------------------- the results files


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def recipe_summary(name: str) -> str:
    """The recipe's first comment line (what `archlab list recipes` prints)."""
    for line in (RECIPES / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _owner(name: str, recipes: list[str]) -> str | None:
    """The longest recipe name that ``name`` starts with."""
    matches = [r for r in recipes if name == r or name.startswith(r + "-")]
    return max(matches, key=len) if matches else None


def load_entries() -> list[dict]:
    """Every results file, with ``name``, ``kind`` and ``recipe`` filled in where missing."""
    recipes = recipe_names()
    entries = []
    for path in sorted(RESULTS.glob("*.json")):
        entry = json.loads(path.read_text(encoding="utf-8"))
        entry.setdefault("name", path.stem)
        if "kind" not in entry:
            if "results" in entry:
                owner = _owner(entry["name"], recipes)
                entry.setdefault("recipe", owner)
                entry["kind"] = "recipe" if owner == entry["name"] else "variant"
            else:
                entry["kind"] = "claim" if entry["name"].startswith("claim") else "benchmark"
        if entry["kind"] not in KINDS:
            sys.exit(f"results/{path.name}: kind must be one of {', '.join(KINDS)}")
        if entry["kind"] in ("recipe", "variant", "tune") and entry.get("recipe") not in recipes:
            sys.exit(f"results/{path.name}: 'recipe' must name a recipe, not {entry.get('recipe')}")
        if entry["kind"] == "recipe" and entry["name"] != entry["recipe"]:
            sys.exit(f"results/{path.name}: a recipe's own result is named like the recipe")
        entries.append(entry)
    return entries


def ordered_recipes() -> list[tuple[str, list[str], str | None]]:
    """FAMILIES, restricted to the recipes that exist, plus any others at the end."""
    existing = set(recipe_names())
    families, listed = [], set()
    for title, names, plot in FAMILIES:
        names = [n for n in names if n in existing]
        listed.update(names)
        if names:
            families.append((title, names, plot))
    rest = sorted(existing - listed)
    if rest:
        families.append(("Other recipes", rest, None))
    return families


# ---------------------------------------------------------------- numbers as text


def _fmt(value: float, like: float | None = None) -> str:
    """A figure of the 'All metrics' line: four decimals (two from 10 on), or three
    significant digits when those would round it to (nearly) nothing -- an MSE of 1.6e-5
    is not '0.0000'.  A spread is written ``like`` its mean: FID 91.34 ± 1.36.  A count
    (an int in the file: 14,041 pieces) is written whole."""
    if isinstance(value, int) and like is None:
        return f"{value:,}"
    like = value if like is None else like
    if like and abs(like) < 0.001:
        return f"{value:.3g}"
    return f"{value:.4f}" if abs(like) < 10 else f"{value:,.2f}"


def _metrics(results: dict) -> str:
    """Every metric of a results.json, e.g. 'val loss 1.1115 ± 0.1270, ...'."""
    parts = []
    for split in ("val", "test", "affine"):
        metrics = results.get(split, {})
        for key, value in metrics.items():
            if key.endswith(("_std", "_runs")) or not isinstance(value, int | float):
                continue
            spread = f" ± {_fmt(metrics[key + '_std'], value)}" if key + "_std" in metrics else ""
            parts.append(f"{split} {key} {_fmt(value)}{spread}")
    train = results.get("train", {})
    if "steps" in train:
        evals = f" + {train['eval_seconds']:.0f} s evaluating" if "eval_seconds" in train else ""
        parts.append(f"{train['steps']} steps in {train['seconds']:.0f} s{evals}")
    elif "runs" in train:
        parts.append(f"{train['runs']} runs, {train['seconds']:.0f} s training in all")
    return ", ".join(parts)


def _number(metric: str, value: float, mean: float | None = None) -> str:
    """``value`` at the metric's decimals, or in three significant digits where the figure
    (``mean``, for a std) is too small for them: an MSE of 5.8e-5 is not '0.000', and one
    of 1.03e-4 (above a goal of 1e-4) is not '0.0001'."""
    scale, digits, _, _ = METRICS.get(metric, DEFAULT_METRIC)
    figure = value if mean is None else mean
    if figure and abs(figure * scale) < 10**-digits:
        return f"{value * scale:.3g}"
    return f"{value * scale:.{digits}f}"


def metric_value(results: dict, split: str, metric: str) -> str:
    """'83.68 ± 0.44 %' (or '—' when the run did not measure it)."""
    values = results.get(split, {})
    if metric not in values:
        return "—"
    unit = METRICS.get(metric, DEFAULT_METRIC)[2]
    text = _number(metric, values[metric])
    if metric + "_std" in values:
        text += f" ± {_number(metric, values[metric + '_std'], values[metric])}"
    return text + unit


def runs_label(results: dict) -> str:
    runs = results.get("train", {}).get("runs", 1)
    if runs == 1:
        return "1 run"
    key = results.get("repeats", {}).get("key", "")
    return f"{runs} {REPEATS.get(key, 'runs')}"


def duration(seconds: float) -> str:
    if seconds < 1:
        return "< 1 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def train_time(results: dict) -> str:
    seconds = results.get("train", {}).get("seconds")
    return "—" if seconds is None else duration(seconds)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def where(entry: dict) -> str:
    m = entry["machine"]
    threads = f", {_plural(m['threads'], 'thread')}" if "threads" in m else ""
    python = f", Python {m['python']}" if "python" in m else ""
    return f"{entry['date']}, {m['cpu']} ({m['cores']} cores{threads}), torch {m['torch']}{python}"


def headline_of_todo(todo: dict) -> dict:
    """NOT_RUN's task, metric ('test MRR') and reference ('.726 — PyKEEN, ...') as a
    headline."""
    split, _, metric = todo["metric"].partition(" ")
    value, _, source = todo["reference"].partition(" — ")
    try:
        published = {"value": float(value), "source": source}
        # as written, with its trailing zeros: PyKEEN's .250 is not '0.25'
        published["text"] = f"0{value}" if value.startswith(".") else value
    except ValueError:  # no figure: 'no published figure for this protocol', said as it is
        published = {"source": todo["reference"]}
    return {"task": todo["task"], "split": split, "metric": metric.lower(), "published": published}


def headline(entry: dict) -> dict:
    """The recipe's headline: its own if recorded, else the first main metric it has."""
    if "headline" in entry:
        return entry["headline"]
    todo = NOT_RUN.get(entry.get("recipe", entry.get("name", "")))
    if todo is not None:  # a recipe recorded since: its task, metric and reference as listed
        return headline_of_todo(todo)
    results = entry.get("results", {})
    for split in ("test", "val"):
        for metric in ("accuracy", "bleu", "rmse", "fid", "loss"):
            if metric in results.get(split, {}):
                return {"task": "", "split": split, "metric": metric, "published": {}}
    return {"task": "", "split": "val", "metric": "loss", "published": {}}


def published_text(metric: str, published: dict) -> str:
    if published.get("value") is None:
        return published.get("source", "")
    unit = METRICS.get(metric, DEFAULT_METRIC)[2]
    bound = {">=": "≥ ", "<=": "≤ "}.get(published.get("bound", ""), "")
    std = f" ± {published['std']}" if published.get("std") is not None else ""
    value = published.get("text", published["value"])
    return f"{bound}{value}{std}{unit} — {published.get('source', '')}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


# ---------------------------------------------------------------- the README's table


def render_readme_table(entries: list[dict]) -> str:
    own = {e["recipe"]: e for e in entries if e["kind"] == "recipe"}
    rows = [
        "| recipe | task | metric | archlab | reference | CPU time |",
        "|---|---|---|---|---|---|",
    ]
    for _, names, _ in ordered_recipes():
        for name in names:
            link = f"[{name}](docs/results.md#{name})"
            if name in own:
                entry = own[name]
                head = headline(entry)
                results = entry["results"]
                figure = metric_value(results, head["split"], head["metric"])
                cells = [
                    link,
                    head.get("task", ""),
                    f"{head['split']} {_metric_name(head['metric'])}",
                    f"{figure} ({runs_label(results)})",
                    published_text(head["metric"], head.get("published", {})),
                    train_time(results),
                ]
            else:
                todo = NOT_RUN.get(name, {})
                cells = [
                    link,
                    todo.get("task", recipe_summary(name)),
                    todo.get("metric", "—"),
                    todo.get("why", "not recorded yet"),
                    todo.get("reference", ""),
                    "—",
                ]
            rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


# ---------------------------------------------------------------- the book


def _metric_name(metric: str) -> str:
    upper = ("bleu", "fid", "rmse", "mae", "mase", "mse", "nll", "mrr")
    return metric.upper() if metric in upper else metric


def _entry_details(entry: dict) -> list[str]:
    lines = [f"- **{entry['name']}** — `{entry['command']}`  "]
    lines.append(f"  {where(entry)}.  ")
    if "results" in entry:
        lines.append(f"  All metrics: {_metrics(entry['results'])}.  ")
        repeats = entry["results"].get("repeats")
        if repeats:
            values = repeats["values"]
            span = (
                f"{values[0]}-{values[-1]}"
                if values == list(range(values[0], values[0] + len(values)))
                else ", ".join(map(str, values))
            )
            lines.append(f"  Runs over {repeats['key']} {span}.  ")
    if "wall_seconds" in entry:
        lines.append(f"  Wall time of the whole command: {entry['wall_seconds']:.0f} s.  ")
    if entry.get("reference"):
        lines.append(f"  Reference and notes: {entry['reference']}.  ")
    if entry.get("note"):
        lines.append(f"  Note: {entry['note']}.  ")
    lines[-1] = lines[-1].rstrip()
    return lines


def render_recipe_section(name: str, entries: list[dict]) -> list[str]:
    mine = [e for e in entries if e.get("recipe") == name and e["kind"] in ("recipe", "variant")]
    mine.sort(key=lambda e: (e["kind"] != "recipe", "scaffold" in e["name"], e["name"]))
    out = [f"### {name}", ""]
    summary = recipe_summary(name)
    out.append(
        f"{summary}{'' if summary.endswith('.') else '.'} Settings and how they were chosen: "
        f"[recipes.md](recipes.md#{name}); the file: "
        f"[{name}.yaml](../src/archlab/recipes/{name}.yaml)."
    )
    out.append("")
    related = [
        e for e in entries if e.get("recipe") == name and e["kind"] in ("benchmark", "claim")
    ]
    for e in related:
        for bench in e.get("benchmarks", {}):
            label = bench if e["kind"] == "claim" else f"bench {bench}"
            anchor = label.replace(" ", "-")
            out += [f"Measured with this recipe: [{label}](#{anchor}).", ""]
    tunes = render_tunes(name, entries)
    if not mine:
        out.append(f"*{NOT_RUN.get(name, {}).get('why', 'not recorded yet')}.*")
        out.append("")
        return out + tunes
    head = headline(next((e for e in mine if e["kind"] == "recipe"), mine[0]))
    metric = head["metric"]
    splits = [s for s in ("test", "val") if any(metric in e["results"].get(s, {}) for e in mine)]
    header = ["result", "what differs"]
    header += [f"{s} {_metric_name(metric)}" for s in splits] + ["runs", "time"]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "---|" * len(header))
    for e in mine:
        label = f"**{e['name']}**" if e["kind"] == "recipe" else e["name"]
        differs = "the recipe" if e["kind"] == "recipe" else e.get("variant", "")
        cells = [label, differs]
        cells += [metric_value(e["results"], s, metric) for s in splits]
        cells += [runs_label(e["results"]), train_time(e["results"])]
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    published = head.get("published", {})
    if published.get("source"):
        out += ["", f"Reference: {published_text(metric, published)}."]
    out.append("")
    for e in mine:
        out += _entry_details(e)
    out.append("")
    return out + tunes


def render_tunes(name: str, entries: list[dict]) -> list[str]:
    """The recipe's recorded tunes: each setting's validation figure, and the choice."""
    out = []
    for e in (e for e in entries if e["kind"] == "tune" and e.get("recipe") == name):
        tune = e["tune"]
        metric, repeats = tune["metric"], tune["repeats"]
        label = REPEATS.get(repeats["key"], repeats["key"])
        runs = f"{label} {', '.join(map(str, repeats['values']))}"
        if len(repeats["values"]) == 1:
            runs = f"{label.removesuffix('s')} {repeats['values'][0]}"
        what = f" ({e['variant']})" if e.get("variant") else ""
        out += [
            f"**{e['name']}**, settings compared on validation{what}: `{e['command']}`  ",
            f"{where(e)}; wall time of the whole tune: {duration(tune['wall_seconds'])}.",
            "",
            f"| setting | val {_metric_name(metric)} ({runs}) | per run | time |",
            "|---|---|---|---|",
        ]
        chosen = (tune.get("choice") or {}).get("name")
        for s in tune["settings"]:
            setting = f"**{s['name']}** (chosen)" if s["name"] == chosen else s["name"]
            if s["status"] != "done":
                cells = [setting, f"stopped: {s['error']}", "—", "—"]
            else:
                per_run = s["val"].get(f"{metric}_runs", [s["val"].get(metric)])
                cells = [
                    setting,
                    metric_value({"val": s["val"]}, "val", metric),
                    ", ".join("—" if v is None else _number(metric, v) for v in per_run),
                    "—" if s.get("train_seconds") is None else duration(s["train_seconds"]),
                ]
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        better = tune["better"]
        out += [
            "",
            f"Chosen: {chosen or 'none'} (the best mean; {better} validation "
            f"{_metric_name(metric)} is better; the settings' test figures take no part).",
            "",
        ]
    return out


def render_overview(entries: list[dict]) -> str:
    n = {k: sum(e["kind"] == k for e in entries) for k in KINDS}
    tunes = f"{_plural(n['tune'], 'tune')}, " if n["tune"] else ""
    return "\n".join(
        [
            f"{_plural(n['recipe'], 'recipe')} recorded, {_plural(n['variant'], 'variant')}, "
            f"{tunes}"
            f"{_plural(n['benchmark'], 'benchmark')}, {_plural(n['claim'], 'claim')} "
            f"(`results/*.json`, {len(entries)} files).",
            "",
            "![archlab's figure against the published one, recipe by recipe](img/recipes.png)",
            "",
            "Each panel: archlab's mean ± std over its runs (dots: the runs) against the "
            "published figure ± its std (a dashed line where the reference is a target); "
            "↑: higher is better, ↓: lower is better.",
        ]
    )


AV_CONDITIONS = (
    ("accuracy", "clean"),
    ("accuracy_image_degraded", "image degraded further"),
    ("accuracy_audio_degraded", "audio degraded further"),
    ("accuracy_image_missing", "image missing"),
    ("accuracy_audio_missing", "audio missing"),
)


def avdigits_rows(entries: list[dict], names) -> list[tuple[str, dict]]:
    """The recorded av-digits recipes, in the family's order: (name, test metrics)."""
    own = {e["name"]: e for e in entries if e["kind"] == "recipe"}
    return [(n, own[n]["results"]["test"]) for n in names if n in own]


def render_avdigits_table(entries: list[dict], names) -> list[str]:
    """Test accuracy (mean ± std) of each av-digits model under each condition."""
    rows = avdigits_rows(entries, names)
    if not rows:
        return []
    out = ["| model | " + " | ".join(label for _, label in AV_CONDITIONS) + " |"]
    out.append("|---|" + "---|" * len(AV_CONDITIONS))
    for name, test in rows:
        cells = [metric_value({"test": _as_accuracy(test, key)}, "test", "accuracy")
                 for key, _ in AV_CONDITIONS]  # fmt: skip
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Test accuracy of each model under each condition (clean: the default "
        "degradations the models were trained with).",
        "",
    ]
    return out + _avdigits_claims(dict(rows))


def _avdigits_claims(tests: dict[str, dict]) -> list[str]:
    """The fusion claim and the robustness goal, measured, from the recorded test figures:
    the numbers are archlab.claims.fusion_figures', which `archlab claims` judges from."""
    from archlab.claims import FUSION_GOAL, ROBUST_WITHIN, fusion_figures, pct, runs_text, seeds

    f = fusion_figures(tests)
    if f is None:
        return []

    def runs(test: dict) -> str:
        return runs_text(seeds(test, "accuracy"))

    best, single = f.fusions[f.best], f.singles[f.best_single]
    claim = (
        f"**The claim** (fusing beats any single modality by at least {FUSION_GOAL:g} points on "
        f"the default degraded test set): the best fusion, {f.best}, reaches "
        f"{pct(best['accuracy'])} ({runs(best)}) against {pct(f.single)} for the best "
        f"single modality ({f.best_single}-avdigits, {runs(single)}): "
        f"{f.gain:+.2f} points, so the goal is {'met' if f.met else 'not met'}."
    )
    if f.seeded is not None:  # a one-run verdict, beside the best measured on seeds
        other = f.fusions[f.seeded]
        claim += (
            f" That is one run; the best fusion measured over several seeds, {f.seeded}, "
            f"reaches {pct(other['accuracy'])} ({runs(other)}): {f.seeded_gain:+.2f} points, "
            f"{'also meeting the goal' if f.seeded_met else 'short of the goal'}."
        )
    audio, image = f.singles["audio"]["accuracy"], f.singles["image"]["accuracy"]
    out = [
        claim,
        "",
        "**Robustness** (with one modality missing, a fusion trained with modality dropout "
        f"stays within {ROBUST_WITHIN:g} points of the other modality's own model): the gap to "
        f"audio-avdigits ({pct(audio)}) with the image missing, and to "
        f"image-avdigits ({pct(image)}) with the audio missing:",
        "",
        f"| fusion | image missing | gap | audio missing | gap | within {ROBUST_WITHIN:g} points |",
        "|---|---|---|---|---|---|",
    ]
    for name, test in f.fusions.items():
        gaps = f.gaps[name]
        out.append(
            f"| {name} | {pct(test['accuracy_image_missing'])} | {gaps[0]:+.2f} | "
            f"{pct(test['accuracy_audio_missing'])} | {gaps[1]:+.2f} | "
            f"{'yes' if f.robust(name) else 'no'} |"
        )
    return [*out, ""]


def _as_accuracy(test: dict, key: str) -> dict:
    """The metric ``key`` (and its spread) of a test split renamed ``accuracy``."""
    return {k.replace(key, "accuracy", 1): v for k, v in test.items() if k.startswith(key)
            and k[len(key):] in ("", "_std", "_runs")}  # fmt: skip


def render_recipes(entries: list[dict]) -> str:
    out: list[str] = []
    for title, names, plot in ordered_recipes():
        out += [f"## {title}", ""]
        if plot == "avdigits" and not avdigits_rows(entries, names):
            plot = None  # nothing recorded yet: no chart
        if plot:
            out += [f"![{title}](img/{plot}.png)", ""]
        if plot == "avdigits":
            out += render_avdigits_table(entries, names)
        for name in names:
            out += render_recipe_section(name, entries)
    return "\n".join(out).rstrip()


def _serve_table(bench: dict) -> list[str]:
    """archlab bench serve: a row per run and number of concurrent clients, then the soak."""
    out = [
        "| run | clients | requests | failed | tokens/s | latency p50 s | latency p99 s "
        "| first token p50 s | first token p99 s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run, levels in bench["levels"].items():
        for c in levels.values():
            out.append(
                f"| {run} | {c['clients']} | {c['requests']} | {c['failed']} | "
                f"{c['tokens_per_s']:,.0f} | {c['latency_p50_s']:.2f} | {c['latency_p99_s']:.2f} | "
                f"{c['first_token_p50_s']:.2f} | {c['first_token_p99_s']:.2f} |"
            )
    out.append("")
    speedups = ", ".join(f"{run} {v:.2f}x" for run, v in bench["speedup"].items())
    out.append(f"Tokens/s at the most clients over one client: {speedups} (goal: {bench['goal']}).")
    soak = bench.get("soak")
    if soak:
        out += [
            "",
            f"Soak: {soak['seconds']:.0f} s of {soak['clients']} clients, {soak['requests']} "
            f"requests, {soak['failed']} failed; the server's resident memory "
            f"{soak['rss_mb_start']:.0f} MB at the start, {soak['rss_mb_after_10s']:.0f} MB "
            f"after 10 s, {soak['rss_mb_end']:.0f} MB at the end (max "
            f"{soak['rss_mb_max']:.0f} MB): {'flat' if soak['flat'] else 'not flat'} (within "
            "10 % of the reading after 10 s).",
        ]
    return [*out, ""]


def _kge_reference_table(bench: dict) -> list[str]:
    """archlab bench kge-reference: PyKEEN's test figures, a row per model (mean ± std)."""
    out = [
        "| model | settings | MRR | H@1 | H@3 | H@10 | MR | seeds | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, r in bench["models"].items():
        s = r["settings"]
        settings = f"d = {s['embedding_dim']}, {s['loss']}, {s['optimizer']} lr {s['lr']:g}"
        cells = [f"{r[k]:.3f} ± {r[k + '_std']:.3f}" for k in
                 ("mrr", "hits_at_1", "hits_at_3", "hits_at_10")]  # fmt: skip
        out.append(f"| {_NAMES[model]} | {settings} | {' | '.join(cells)} | "
                   f"{r['mr']:.2f} ± {r['mr_std']:.2f} | {len(r['seeds'])} | "
                   f"{r['wall_seconds']:.0f} |")  # fmt: skip
    return [*out, ""]


def _bench_table(bench: dict) -> list[str]:
    if "levels" in bench:
        return _serve_table(bench)
    if "models" in bench and "pykeen" in bench:
        return _kge_reference_table(bench)
    cases = bench.get("cases")
    if not cases:
        return []
    if "epoch_seconds" in next(iter(cases.values())):
        return _kge_table(cases)
    refs = [k for k in next(iter(cases.values()))["ms"] if k != "archlab"]
    ref = refs[0] if refs else "reference"
    out = [
        f"| case | archlab ms | {ref} ms | time ratio | archlab MB | {ref} MB | memory ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, c in cases.items():
        out.append(
            f"| {case} | {c['ms']['archlab']:.1f} | {c['ms'][ref]:.1f} | {c['time_ratio']:.2f} | "
            f"{c['peak_mb']['archlab']:.1f} | {c['peak_mb'][ref]:.1f} | "
            f"{c['memory_ratio']:.2f} |"
        )
    return [*out, ""]


def _kge_table(cases: dict) -> list[str]:
    out = [
        "| case | epoch s | PyKEEN s | ratio | evaluation s | PyKEEN s | ratio | memory ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, c in cases.items():
        e, v = c["epoch_seconds"], c["eval_seconds"]
        out.append(f"| {case} | {e['archlab']:.3f} | {e['pykeen']:.3f} | {c['epoch_ratio']:.2f} | "
                   f"{v['archlab']:.3f} | {v['pykeen']:.3f} | {c['eval_ratio']:.2f} | "
                   f"{c['memory_ratio']:.2f} |")  # fmt: skip
    return [*out, ""]


# ---- one table of every benchmark.  A row: family, operation, unit, archlab's figure, the
# reference's, what the reference is, and archlab's peak memory over the reference's.  Speed
# is how many times faster archlab is: rates (unit "/s") divide as archlab / reference,
# times as reference / archlab.


def _rows_gpt(b: dict) -> list[tuple]:
    t, g = b["train_tokens_per_s"], b["generate_tokens_per_s"]
    ref = "Hugging Face GPT2LMHeadModel"
    return [
        ("GPT", "training step", "tokens/s", t["archlab"], t["hf"], ref, None),
        ("GPT", "generation, KV cache", "tokens/s", g["archlab"], g["hf"], ref, None),
    ]


def _rows_cases(family: str, ref: str, fields: tuple[tuple[str, str, str], ...]):
    """Rows of a benchmark of ``cases``: each (field, what, unit) holds a time per
    implementation, archlab's and the reference's."""

    def rows(b: dict) -> list[tuple]:
        out = []
        for case, c in b["cases"].items():
            for field, what, unit in fields:
                ours = c[field]["archlab"]
                theirs = next(v for k, v in c[field].items() if k != "archlab")
                out.append((family, f"{case}: {what}", unit, ours, theirs, ref,
                            c.get("memory_ratio")))  # fmt: skip
        return out

    return rows


def _rows_seq(b: dict) -> list[tuple]:
    t, i = b["train_steps_per_s"], b["inference_steps_per_s"]
    return [
        ("TCN", "training step", "steps/s", t["tcn"], t["tcn_authors"], "the authors' TCN", None),
        ("LSTM", "training step", "steps/s", t["seq_lstm"], t["torch_lstm"], "torch.nn.LSTM",
         None),
        ("TCN", "step-by-step inference", "steps/s", i["tcn_step"], i["tcn_recompute"],
         "archlab's full recomputation", None),
    ]  # fmt: skip


def _rows_demo(b: dict) -> list[tuple]:
    raw = b["raw_train_seconds"] + b["eval_seconds"] + b.get("final_eval_seconds", 0.0)
    return [("demo", "`make demo`'s training, wall", "s", b["wall_seconds"], raw,
             "the raw step loop plus evaluations", None)]  # fmt: skip


def _rows_serve(b: dict) -> list[tuple]:
    out = []
    for name, levels in b["levels"].items():
        top = max(levels, key=int)
        out.append(("server", f"{name}: {top} clients", "tokens/s", levels[top]["tokens_per_s"],
                    levels["1"]["tokens_per_s"], "the same server, one client", None))  # fmt: skip
    return out


SUMMARY_ROWS = {
    "gpt": _rows_gpt,
    "gnn": _rows_cases("GNN", "PyTorch Geometric", (("ms", "forward + backward", "ms"),)),
    "seq": _rows_seq,
    "kge": _rows_cases(
        "KGE",
        "PyKEEN",
        (("epoch_seconds", "training epoch", "s"), ("eval_seconds", "evaluation", "s")),
    ),  # fmt: skip
    "demo": _rows_demo,
    "serve": _rows_serve,
}


def render_benchmark_summary(entries: list[dict]) -> str:
    out = [
        "| family | operation | unit | archlab | reference | against | speed | memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        if e["kind"] != "benchmark":
            continue
        for name, bench in e["benchmarks"].items():
            rows = SUMMARY_ROWS[name](bench) if name in SUMMARY_ROWS else []
            for family, what, unit, ours, theirs, ref, memory in rows:
                speed = ours / theirs if unit.endswith("/s") else theirs / ours
                mem = f"{memory:.2f}x" if memory is not None else "–"
                out.append(f"| {family} | {what} | {unit} | {_num(ours)} | {_num(theirs)} | "
                           f"{ref} | {speed:.2f}x | {mem} |")  # fmt: skip
    return "\n".join(out)


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _table_gat_vs_gcn(bench: dict) -> list[str]:
    """Claim 2's table: each setting's mean test accuracy (robustness: the mean change
    from the clean figure), GAT - GCN in points, and the paired test's p."""
    out = ["| dataset | setting | GCN | GAT | GAT - GCN | p |", "|---|---|---|---|---|---|"]
    parts = (("clean", None), ("by_degree", "degree {}"), ("test_noise", "test-time {}"),
             ("train_and_test_noise", "trained and tested with {}"),
             ("robustness", "change, {}"))  # fmt: skip
    for dataset, found in bench["results"].items():
        for part, label in parts:
            rows = {"clean graph": found[part]} if label is None else found[part]
            for setting, r in rows.items():
                name = setting if label is None else label.format(setting)
                out.append(f"| {dataset} | {name} | {100 * r['gcn']:.1f} | {100 * r['gat']:.1f} | "
                           f"{100 * r['difference']:+.1f} | {r['p']:.3f} |")  # fmt: skip
    return [*out, ""]


def _table_bert_vs_gpt(bench: dict) -> list[str]:
    """Claim 6's tables: MR test accuracy by pretraining objective, and the pretraining
    runs themselves (throughput, held-out loss and the perplexity each objective has)."""
    acc, pre = bench["results"]["accuracy"], bench["results"]["pretraining"]
    rows = (("bert-mlm", "BERT", "masked LM (bert-mlm-mr)"),
            ("gpt-clm", "GPT", "causal LM (gpt-clm-mr)"),
            ("bert-scratch", "BERT", "none"), ("gpt-scratch", "GPT", "none"),
            ("minilm", "all-MiniLM-L6-v2", "distilled, tuned on sentence pairs"))  # fmt: skip
    out = ["| classifier | model | pretraining | MR test accuracy | folds |",
           "|---|---|---|---|---|"]  # fmt: skip
    for arm, model, objective in rows:
        if arm in acc:
            a = acc[arm]
            out.append(f"| {arm} | {model} | {objective} | {100 * a['mean']:.2f} ± "
                       f"{100 * a['std']:.2f} % | {a['folds']} |")  # fmt: skip
    if not pre:  # its folds were recorded without their pretraining runs' figures
        return out + [""]
    out += ["", "| pretraining | objective | parameters | tokens/s | held-out loss | "
            "held-out perplexity | folds |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for model, r in pre.items():
        ppl = r.get("held_out_perplexity", r.get("held_out_pseudo_perplexity"))
        kind = "pseudo-perplexity" if "held_out_pseudo_perplexity" in r else "perplexity"
        out.append(f"| {model.upper()} | {r['objective']} | {r['parameters'] / 1e6:.2f}M | "
                   f"{r['tokens_per_s']:,.0f} | {r['held_out_loss']:.3f} | "
                   f"{ppl:.1f} ({kind}) | {r['folds']} |")  # fmt: skip
    out += ["", "GPT's perplexity is exp of the mean next-token loss: by the chain rule, the "
            "held-out text's probability under the model, per token. BERT's pseudo-perplexity "
            "(Salazar et al. 2020) masks one token at a time and scores it from both sides; it "
            "is not a probability of the text, and is not comparable with GPT's figure as a "
            "measure of how well each generates: only GPT's factorisation lets it sample text "
            "left to right. Tokens/s are the pretraining runs' median training throughput; "
            "BERT's loss is over the 15 % of pieces it chose to mask, GPT's over every next "
            "piece.", ""]  # fmt: skip
    return out


# a claim's tables, by the start of its entry's name (a budget's own file adds to it)
CLAIM_TABLES = {"claim-gat-vs-gcn": _table_gat_vs_gcn, "claim-bert-vs-gpt": _table_bert_vs_gpt}


def _benchmark_items(entries: list[dict], kind: str) -> str:
    out: list[str] = []
    for e in entries:
        if e["kind"] != kind:
            continue
        for name, bench in e.get("benchmarks", {}).items():
            label = name if name.startswith("claim") or kind == "claim" else f"bench {name}"
            if "dataset" in bench:  # one file per dataset (bench kge-reference)
                label += f" {bench['dataset']}"
            out += [f"### {label}", ""]
            out += [f"{bench['summary']}.", ""]
            for image in bench.get("images", []):  # paths from the repository's root
                out += [f"![{label}]({Path(image).relative_to('docs').as_posix()})", ""]
            out += _bench_table(bench)
            table = next((CLAIM_TABLES[c] for c in CLAIM_TABLES if name.startswith(c)), None)
            out += table(bench) if table else []  # claim-bert-vs-gpt-full too
            if bench.get("reference"):
                out += [f"- Reference: {bench['reference']}.  "]
            if bench.get("note"):  # the conditions it was measured in
                out += [f"- Note: {bench['note'].rstrip('.')}.  "]
            if e.get("recipe"):
                out += [f"- Recipe: [{e['recipe']}](#{e['recipe']}).  "]
            out += [f"- Command: `{e['command']}`  ", f"- {where(e)}.", ""]
    return "\n".join(out).rstrip()


def render_book_blocks(entries: list[dict]) -> dict[str, str]:
    return {
        "overview": render_overview(entries),
        "recipes": render_recipes(entries),
        "claims": _benchmark_items(entries, "claim"),
        "benchmarks": _benchmark_items(entries, "benchmark"),
        "benchmark-summary": render_benchmark_summary(entries),
    }


def fill(text: str, blocks: dict[str, str], where: str) -> str:
    found = set()

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in blocks:
            sys.exit(f"{where}: unknown generated block {name!r}")
        found.add(name)
        return f"<!-- generated:{name} -->\n{blocks[name]}\n<!-- generated:end -->"

    new = BLOCK.sub(replace, text)
    missing = set(blocks) - found
    if missing:
        sys.exit(f"{where} lacks the generated blocks {', '.join(sorted(missing))}")
    return new


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 8,
            "axes.titlesize": 8,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "svg.hashsalt": "archlab",
        }
    )
    return plt


def _save(fig, name: str) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / f"{name}.png", dpi=100, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)


def _runs(results: dict, split: str, metric: str) -> list[float]:
    values = results.get(split, {})
    if metric + "_runs" in values:
        return list(values[metric + "_runs"])
    return [values[metric]] if metric in values else []


def _row(label: str, results: dict, split: str, metric: str) -> tuple:
    """A strip-chart row: the runs, and the mean and std as recorded."""
    values = results.get(split, {})
    return label, _runs(results, split, metric), values.get(metric), values.get(metric + "_std")


def _strip(ax, rows, metric, published=None, jitter_seed=0):
    """Horizontal strip chart: per row, the runs as dots and the mean ± std as a bar."""
    import numpy as np

    scale = METRICS.get(metric, DEFAULT_METRIC)[0]
    rng = np.random.default_rng(jitter_seed)
    for i, (_, runs, mean, std) in enumerate(rows):
        y = len(rows) - 1 - i
        x = np.asarray(runs, dtype=float) * scale
        if len(x) > 1:
            ax.scatter(x, y + rng.uniform(-0.18, 0.18, len(x)), s=6, color="#7a9cc6", lw=0)
        if mean is not None:
            ax.errorbar(mean * scale, y, xerr=(std or 0) * scale, fmt="o", color="#1f4e8c",
                        ms=4, capsize=3)  # fmt: skip
    ax.set_yticks(range(len(rows)), [row[0] for row in reversed(rows)])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    if published and published.get("value") is not None:
        v, s = published["value"], published.get("std")
        if s:
            ax.axvspan(v - s, v + s, color="#f2c57c", alpha=0.35, lw=0)
        ax.axvline(v, color="#c0392b", lw=1, ls="--" if published.get("bound") else "-")
        for other in published.get("also", []):
            ax.axvline(other["value"], color="#6c3483", lw=1, ls=":")
    ax.grid(axis="x", color="#dddddd", lw=0.5)
    ax.set_axisbelow(True)


def plot_recipes(plt, entries):
    order = [n for _, names, _ in ordered_recipes() for n in names]
    own = [e for e in entries if e["kind"] == "recipe"]
    own.sort(key=lambda e: order.index(e["name"]))
    own = [e for e in own if headline(e).get("published", {}).get("value") is not None]
    ncols = 4
    nrows = math.ceil(len(own) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(10, 1.75 * nrows + 0.2), squeeze=False)
    for ax, e in zip(axes.flat, own, strict=False):
        head = headline(e)
        metric, published = head["metric"], head["published"]
        _, _, unit, better = METRICS.get(metric, DEFAULT_METRIC)
        _strip(ax, [_row("archlab", e["results"], head["split"], metric)], metric)
        labels = ["archlab"]
        if published.get("bound"):
            ax.axvline(published["value"], color="#c0392b", lw=1, ls="--")
            ax.text(published["value"], 0.35, " target", color="#c0392b", fontsize=7)
        else:
            labels.append("published")
            ax.errorbar(published["value"], -1, xerr=published.get("std") or 0, fmt="D",
                        color="#c0392b", ms=4, capsize=3)  # fmt: skip
        for other in published.get("also", []):
            labels.append(other["label"])
            ax.errorbar(other["value"], 1 - len(labels), xerr=other.get("std") or 0, fmt="s",
                        color="#6c3483", ms=3, capsize=3)  # fmt: skip
        ax.set_yticks([-i for i in range(len(labels))], labels)
        ax.set_ylim(0.5 - len(labels), 0.6)
        arrow = "↑" if better == "higher" else "↓"
        ax.set_title(f"{e['name']}\n{head['split']} {_metric_name(metric)}{unit} ({arrow} better)")
        ax.margins(x=0.25)
    for ax in list(axes.flat)[len(own) :]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, "recipes")


def plot_mr(plt, entries):
    names = ("cnn-mr", "lstm-mr", "transformer-mr", "bert-mr", "minilm-mr",
             "minilm-mr-frozen-logreg")  # fmt: skip
    own = {e["name"]: e for e in entries if e["kind"] in ("recipe", "variant")}
    rows = [_row(n, own[n]["results"], "test", "accuracy") for n in names if n in own]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 0.9))
    published = {**headline(own["cnn-mr"]).get("published", {}), "also": [{"value": 81.5}]}
    _strip(ax, rows, "accuracy", published)
    ax.set_xlabel("test accuracy (%) per fold; red: Kim (2014) CNN-rand, 76.1 %; "
                  "purple: his CNN with word2vec, 81.5 %")  # fmt: skip
    fig.tight_layout()
    _save(fig, "mr")


def plot_gat_seeds(plt, entries):
    fig, axes = plt.subplots(1, 2, figsize=(10, 2.4), width_ratios=(1, 1))
    for ax, recipe in zip(axes, ("gat-cora", "gat-citeseer"), strict=True):
        chosen = [
            e
            for e in entries
            if e.get("recipe") == recipe
            and "results" in e
            and e["results"]["train"].get("runs", 1) >= 100
        ]
        chosen.sort(key=lambda e: (not e["variant"].startswith("the recipe"), e["name"]))
        rows = [
            _row(e["variant"].split(", 100 seeds")[0], e["results"], "test", "accuracy")
            for e in chosen
        ]
        own = next(e for e in entries if e["name"] == recipe)
        _strip(ax, rows, "accuracy", headline(own).get("published"))
        ax.set_title(f"{recipe}: test accuracy (%) of 100 seeds, one dot each", loc="left")
        ax.set_xlabel("red line and band: the paper's mean ± std over 100 runs")
    fig.tight_layout()
    _save(fig, "gat-seeds")


def plot_molecules(plt, entries):
    recipes = ("gnn-esol", "gnn-freesolv", "gnn-lipo")
    groups = []
    for recipe in recipes:
        mine = [e for e in entries if e.get("recipe") == recipe and "results" in e]
        mine.sort(key=lambda e: (e["kind"] != "recipe", "scaffold" in e["name"], e["name"]))
        groups.append((recipe, mine))
    heights = [len(m) + 1 for _, m in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 0.28 * sum(heights) + 0.8),
                             height_ratios=heights)  # fmt: skip
    for ax, (recipe, mine) in zip(axes, groups, strict=True):
        rows = [_row(e["name"], e["results"], "test", "rmse") for e in mine]
        own = next(e for e in mine if e["kind"] == "recipe")
        _strip(ax, rows, "rmse", headline(own).get("published"))
        ax.set_title(f"{recipe}: test RMSE per run (lower is better)", loc="left")
    axes[-1].set_xlabel(
        "red line and band: MoleculeNet's mean ± std; purple dotted: chemprop's D-MPNN mean"
    )
    fig.tight_layout()
    _save(fig, "molecules")


def plot_gans(plt, entries):
    """One panel per budget of the SAGAN claim (archlab.claims.GAN_BUDGETS), with cgan-mnist
    beside: the budgets' FIDs read different classifiers and do not share a scale."""
    from archlab.claims import GAN_BUDGETS, GANS

    by_name = {e["name"]: e for e in entries}
    panels = [
        (budget, [_row(n, by_name[n + suffix]["results"], "test", "fid")
                  for n in ("cgan-mnist", *GANS) if n + suffix in by_name])
        for suffix, budget in GAN_BUDGETS
    ]  # fmt: skip
    panels = [(budget, rows) for budget, rows in panels if rows]
    heights = [len(rows) + 1 for _, rows in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 0.32 * sum(heights) + 0.9),
                             height_ratios=heights, squeeze=False)  # fmt: skip
    for ax, (budget, rows) in zip(axes[:, 0], panels, strict=True):
        _strip(ax, rows, "fid")
        ax.set_title(budget, loc="left", fontsize=9)
    axes[-1, 0].set_xlabel("test FID per seed, mean ± std (lower is better; compare within a "
                           "panel only)")  # fmt: skip
    fig.tight_layout()
    _save(fig, "gans")


def plot_benchmarks(plt, entries):
    speed, memory = [], []
    for e in entries:
        for bench in e.get("benchmarks", {}).values():
            for case, c in bench.get("cases", {}).items():
                if "time_ratio" in c:
                    speed.append((f"{case} (vs PyG)", 1 / c["time_ratio"]))
                    memory.append((f"{case} (vs PyG)", c["memory_ratio"]))
                elif "memory_ratio" in c:
                    memory.append((f"{case} (vs PyKEEN)", c["memory_ratio"]))
            if "train_ratio" in bench:
                speed.append(("gpt training (vs HF)", bench["train_ratio"]))
                speed.append(("gpt training, bf16 (vs HF)", bench["train_ratio_bf16"]))
                speed.append(("gpt generation (vs HF)", bench["generate_ratio"]))
            for case, c in bench.get("cases", {}).items():
                if "epoch_ratio" in c:
                    speed.append((f"{case} training (vs PyKEEN)", 1 / c["epoch_ratio"]))
                    speed.append((f"{case} evaluation (vs PyKEEN)", 1 / c["eval_ratio"]))
            for run, ratio in bench["speedup"].items() if "levels" in bench else ():  # serve
                top = list(bench["levels"][run])[-1]
                speed.append((f"serve {run}, {top} clients (vs 1 client)", ratio))
            if "tcn_train" in bench.get("ratios", {}):
                r = bench["ratios"]
                speed.append(("tcn training (vs the authors' form)", r["tcn_train"]))
                speed.append(("seq_lstm training (vs torch.nn.LSTM)", r["lstm_train"]))
                speed.append(("tcn step (vs recomputation, T = 1000)", r["tcn_step_vs_recompute"]))
    if not speed:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.3 * len(speed) + 0.9))
    for ax, rows, title in (
        (axes[0], speed, "speed: reference time / archlab time (log scale; > 1: archlab faster)"),
        (axes[1], memory, "peak memory: archlab / reference (< 1: archlab smaller)"),
    ):
        labels = [label for label, _ in rows][::-1]
        values = [v for _, v in rows][::-1]
        ax.barh(range(len(rows)), values, color="#7a9cc6")
        ax.set_yticks(range(len(rows)), labels)
        ax.axvline(1, color="#c0392b", lw=1)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f}x", va="center", fontsize=7)
        ax.set_title(title, loc="left")
        ax.margins(x=0.15)
    axes[0].set_xscale("log")
    axes[0].set_xticks([0.5, 1, 2, 5, 10, 20], ["0.5", "1", "2", "5", "10", "20"])
    axes[0].set_xticks([], minor=True)
    fig.tight_layout()
    _save(fig, "benchmarks")


def plot_kge_curves(plt, entries):
    """Validation MRR against training minutes of the knowledge-graph runs that kept a curve."""
    curves = [
        e for e in entries if "curve" in e and e.get("recipe", "").endswith(("wn18rr", "fb15k237"))
    ]
    if not curves:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.1), sharey=False)
    for ax, dataset in zip(axes, ("wn18rr", "fb15k237"), strict=True):
        for e in curves:
            if dataset in e["recipe"]:
                c = e["curve"]
                ax.plot(c["minutes"], c["values"], "o-", ms=2, lw=1, label=e["name"])
                published = headline(e).get("published", {}).get("value")
                if published is not None:
                    ax.axhline(published, color="#c0392b", lw=0.8, ls="--")
        if ax.lines:  # the budget and goal for these recipes
            ax.axvline(KGE_BUDGET_MINUTES, color="0.5", lw=0.8, ls=":")
            ax.axhline(KGE_GOALS[dataset], color="0.5", lw=0.8, ls=":")
        ax.set_title(f"{dataset}: validation MRR (first 500 triples) against training minutes",
                     loc="left")  # fmt: skip
        ax.set_xlabel("minutes of training (each run's note says on what)")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.text(0.01, 0.01, "dashed: the paper's test MRR; dotted: the 60-min budget and the "
             "goal", fontsize=8)  # fmt: skip
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _save(fig, "kge-curves")


def plot_avdigits(plt, entries):
    import numpy as np

    names = next(names for title, names, plot in FAMILIES if plot == "avdigits")
    rows = avdigits_rows(entries, names)
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(10, 3.2))
    width = 0.8 / len(AV_CONDITIONS)
    colours = ("#1f4e8c", "#7a9cc6", "#f2c57c", "#c0392b", "#6c3483")
    for j, ((key, label), colour) in enumerate(zip(AV_CONDITIONS, colours, strict=True)):
        x = np.arange(len(rows)) + (j - (len(AV_CONDITIONS) - 1) / 2) * width
        means = [100 * test.get(key, np.nan) for _, test in rows]
        stds = [100 * test.get(key + "_std", 0.0) for _, test in rows]
        ax.bar(x, means, width, yerr=stds, label=label, color=colour, capsize=2)
    ax.set_xticks(range(len(rows)), [name.removesuffix("-avdigits") for name, _ in rows])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(ncols=5, loc="upper center", bbox_to_anchor=(0.5, 1.15), frameon=False)
    ax.grid(axis="y", color="#dddddd", lw=0.5)
    ax.set_axisbelow(True)
    fig.tight_layout()
    _save(fig, "avdigits")


def draw_plots(entries: list[dict]) -> None:
    plt = _pyplot()
    plots = (plot_recipes, plot_mr, plot_gat_seeds, plot_molecules, plot_gans, plot_benchmarks,
             plot_kge_curves, plot_avdigits)  # fmt: skip
    for plot in plots:
        plot(plt, entries)


# ---------------------------------------------------------------- commands


# the set-up's `make demo` line gives the demo's time as `archlab bench demo` measured it
DEMO_TIME = re.compile(r"(trains GPT on tiny Shakespeare \()[^)]*(\))")


def _demo_time(readme: str, entries: list[dict]) -> str:
    demo = [e for e in entries if "demo" in e.get("benchmarks", {})]
    if not demo or not DEMO_TIME.search(readme):
        sys.exit("README.md's `make demo` line and results/bench-demo.json must both exist")
    bench, cores = demo[0]["benchmarks"]["demo"], demo[0]["machine"]["cores"]
    measured = f"{bench['wall_seconds']:.0f} s on {cores} CPU cores by `archlab bench demo`"
    return DEMO_TIME.sub(lambda m: f"{m[1]}{measured}{m[2]}", readme, count=1)


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown text's headings."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def render_claims_block(book: str) -> str:
    """One line per claim for the README: its name, linked to the book's section that holds
    it, and the short verdict `archlab claims` gives (archlab.claims.verdict)."""
    from archlab.claims import CLAIMS, NOT_MEASURED, verdict

    known = anchors(book)
    lines = []
    for name, claim in CLAIMS.items():
        text = verdict(claim, RESULTS, short=True)
        anchor = claim.section
        if anchor not in known:
            if not text.startswith(NOT_MEASURED):
                sys.exit(f"docs/results.md has no section #{anchor} for the claim {name}")
            anchor = "claims"  # its section comes with its results
        lines.append(f"{claim.number}. [{name}](docs/results.md#{anchor}): *{claim.statement}* — "
                     f"{text}.")  # fmt: skip
    return "\n".join(lines)


def build_texts(entries: list[dict]) -> dict[Path, str]:
    """The README and the book as they should read, from the results files."""
    text = README.read_text(encoding="utf-8")
    if START not in text or END not in text:
        sys.exit(f"README.md lacks the markers {START} and {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme = f"{head}{START}\n{render_readme_table(entries)}\n{END}{tail}"
    readme = _demo_time(readme, entries)
    book = fill(BOOK.read_text(encoding="utf-8"), render_book_blocks(entries), "docs/results.md")
    readme = fill(readme, {"claim-verdicts": render_claims_block(book)}, "README.md")
    return {README: readme, BOOK: book}


def build(args: argparse.Namespace) -> None:
    entries = load_entries()
    texts = build_texts(entries)
    if args.check:
        stale = [p.relative_to(ROOT) for p, t in texts.items() if p.read_text("utf-8") != t]
        if stale:
            names = " and ".join(str(p) for p in stale)
            sys.exit(f"{names} disagree with results/: run `python scripts/results.py build`")
        return
    for path, text in texts.items():
        path.write_text(text, encoding="utf-8")
    if not args.no_plots:
        draw_plots(entries)


def read_curve(run_dir: Path, metric: str) -> dict:
    """The validation ``metric`` against training minutes, from a run's metrics.jsonl."""
    points = []
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r.get("split") == "val" and metric in r and "train_seconds" in r:
            points.append((round(r["train_seconds"] / 60, 2), r[metric]))
    if not points:
        sys.exit(f"{run_dir}/metrics.jsonl has no validation {metric} with train_seconds")
    return {"split": "val", "metric": metric, "minutes": [m for m, _ in points],
            "values": [v for _, v in points]}  # fmt: skip


def record(args: argparse.Namespace) -> None:
    from archlab.bench import machine
    from archlab.io import to_json

    run_dir = Path(args.run_dir)
    tune = _finished_tune(run_dir)
    if tune is None and not args.command:
        sys.exit("record: give the command that made the run with --command")
    entry = {
        "name": args.name,
        "command": args.command or tune["command"],
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "reference": args.reference,
    }
    if tune is None:
        entry["results"] = json.loads((run_dir / "results.json").read_text())
    else:
        entry["kind"] = "tune"
        entry["tune"] = tune
        if tune["recipe"] in recipe_names():
            entry["recipe"] = tune["recipe"]
    path = RESULTS / f"{args.name}.json"
    if tune is not None and args.name in recipe_names():
        sys.exit(f"record: {args.name} is a recipe's name, for its own figure, not a tune's; "
                 f"name the tune after what it tunes, e.g. --name {args.name}-lr")  # fmt: skip
    if path.exists():  # a re-recorded figure keeps what the file says it is
        old = json.loads(path.read_text())
        if (old.get("kind") == "tune") != (tune is not None):
            held, given = ("a tune", "a run") if tune is None else ("a run", "a tune")
            sys.exit(f"record: results/{args.name}.json holds {held}, and {run_dir} is "
                     f"{given}; give another --name")  # fmt: skip
        for key in ("recipe", "kind", "variant", "headline"):
            if key in old:
                entry[key] = old[key]
        if not args.reference:
            entry["reference"] = old.get("reference", "")
    recipe = args.recipe or entry.get("recipe") or _owner(args.name, recipe_names())
    if recipe:
        entry["recipe"] = recipe
        entry.setdefault("kind", "recipe" if recipe == args.name else "variant")
    if tune is not None:
        entry["kind"] = "tune"
        if not recipe:
            sys.exit("record: name the recipe the tune belongs to with --recipe")
    if args.variant:
        entry["variant"] = args.variant
    if args.curve:
        entry["curve"] = read_curve(run_dir, args.curve)
    RESULTS.mkdir(exist_ok=True)
    path.write_text(to_json(entry, indent=2) + "\n")
    print(f"wrote results/{args.name}.json; now run `python scripts/results.py build`")


def _finished_tune(run_dir: Path) -> dict | None:
    """The tune.json of an `archlab tune` directory (None for a run); an unfinished tune
    is refused."""
    path = run_dir / "tune.json"
    if not path.is_file():
        return None
    tune = json.loads(path.read_text(encoding="utf-8"))
    if not tune.get("finished"):
        sys.exit(f"{run_dir}: the tune has not finished; run its command again to finish it")
    return tune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("record", help="write a finished run's results.json into results/")
    p.add_argument("run_dir")
    p.add_argument("--name", required=True)
    p.add_argument("--command", help="the command that made it (a tune: tune.json's)")
    p.add_argument("--reference", default="")
    p.add_argument("--recipe", help="the recipe it belongs to (default: from --name)")
    p.add_argument("--variant", help="what differs from the recipe (a tune: what it tunes)")
    p.add_argument("--curve", metavar="METRIC", help="also keep the validation METRIC's curve")
    p.set_defaults(func=record)
    for name in ("build", "table"):
        p = sub.add_parser(name, help="rewrite the README's table, docs/results.md and plots")
        p.add_argument("--check", action="store_true", help="fail if a text is out of date")
        p.add_argument("--no-plots", action="store_true", help="rewrite the texts only")
        p.set_defaults(func=build)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
