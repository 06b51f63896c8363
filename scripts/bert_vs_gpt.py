"""Claim 6: bidirectional (BERT) against left-to-right (GPT) context, pretrained alike.

The articles claim that BERT's bidirectional context gives better sentence
representations than GPT's left-to-right context.  Here a BERT and a GPT of the same
size (4 layers, 256 wide) are pretrained on the same unlabelled English with the same
steps and batch -- ``bert-mlm-mr`` (masked LM) and ``gpt-clm-mr`` (causal LM): the
English of Multi30k's training split and the fold's MR training sentences, no labels,
no test sentences -- and then fine-tuned on that MR fold with the same head (a linear
layer: on BERT's mean-pooled states, on GPT's last token) and the same schedule
(``bert-mr`` / ``gpt-mr``).  Beside them: both architectures from scratch on the same
folds, and all-MiniLM-L6-v2 fine-tuned (``minilm-mr``, from its results file).

Per fold the two pretrained classifiers are paired; Wilcoxon's signed-rank test over
the folds gives the p-value.  The generation half: GPT's perplexity and BERT's
pseudo-perplexity (Salazar et al. 2020) of the same held-out text (Multi30k's English
validation sentences), from the pretraining runs' results.json.

    python scripts/bert_vs_gpt.py plan [--folds 0 1 2]
    python scripts/bert_vs_gpt.py run [--folds 0 1 2] [--max-seconds 480]
    python scripts/bert_vs_gpt.py collect [--folds 0 1 2] [--keep-recorded] [--out FILE]

``collect`` reads a fold's runs only if each was trained as these settings train it (its
recipe with its overrides; a fine-tuned run from the weights its pretraining run holds,
by their SHA-256), and otherwise stops with one sentence naming the run: another
budget's runs do not pool under this one's verdict.  ``collect --keep-recorded`` keeps
the folds the results file already holds (collected with the same settings, all among
--folds) beside the ones the runs on disk give, so a budget too long for one sitting is
built a few folds at a time.  Each budget has a file of its own (``archlab claims``: the
small budget's 750 pretraining steps in results/claim-bert-vs-gpt.json, the recipes'
3,000 in claim-bert-vs-gpt-full.json); the file's name names its claim entry and its
plot.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # this checkout's archlab, wherever it is installed

import numpy as np  # noqa: E402

from archlab.claims import (  # noqa: E402
    ALPHA,
    begun_with,
    done,
    p_text,
    parse_script_args,
    script_command,
    train_missing,
    wilcoxon_p,
    write_claim,
)

OUT = ROOT / "results" / "claim-bert-vs-gpt.json"
IMG = ROOT / "docs" / "img"
RUNS = ROOT / "runs" / "bert-vs-gpt"
MINILM = ROOT / "results" / "minilm-mr.json"
# arm -> (recipe, the pretraining arm it starts from or None, overrides)
HEAD = {"bert": ["model.pooling=mean", "model.pooler=false"], "gpt": []}
ARMS = {
    "bert-pretrain": ("bert-mlm-mr", None, []),
    "gpt-pretrain": ("gpt-clm-mr", None, []),
    "bert-mlm": ("bert-mr", "bert-pretrain", HEAD["bert"]),
    "gpt-clm": ("gpt-mr", "gpt-pretrain", HEAD["gpt"]),
    "bert-scratch": ("bert-mr", None, HEAD["bert"]),
    "gpt-scratch": ("gpt-mr", None, HEAD["gpt"]),
}
CLASSIFIERS = ("bert-mlm", "gpt-clm", "bert-scratch", "gpt-scratch")
# pretrained model -> (its objective, the held-out figure its pretraining run reports)
OBJECTIVES = {"bert": ("masked LM", "pseudo_perplexity"), "gpt": ("causal LM", "perplexity")}


def run_dir(runs: Path, fold: int, arm: str) -> Path:
    return runs / f"fold{fold}-{arm}"


def overrides(args, fold: int, arm: str) -> list[str]:
    """The arm's settings, then --set, --set-bert or --set-gpt (by its architecture) and
    --set-pretrain (pretraining runs)."""
    _, source, sets = ARMS[arm]
    own = args.set_bert if arm.startswith("bert") else args.set_gpt
    sets = [f"data.fold={fold}", *sets, *args.set, *own]
    if arm.endswith("-pretrain"):
        sets += args.set_pretrain
    if source is not None:
        sets.append(f"model.init_from={run_dir(args.runs, fold, source).resolve()}")
    return sets


def cells(args) -> list[tuple[int, str]]:
    return [(fold, arm) for fold in args.folds for arm in ARMS]


def cmd_plan(args) -> None:
    for fold, arm in cells(args):
        path = run_dir(args.runs, fold, arm)
        sets = " --set ".join(overrides(args, fold, arm))
        state = "done" if done(path) else "to run"
        print(f"{state:<7} archlab train {ARMS[arm][0]} --set {sets} --out {path}")


def cmd_run(args) -> None:
    """Train the runs not yet done, pretraining before fine-tuning; none after --max-seconds."""
    train_missing(
        (
            (
                f"fold {fold}: {arm}",
                ARMS[arm][0],
                overrides(args, fold, arm),
                run_dir(args.runs, fold, arm),
            )
            for fold, arm in cells(args)
        ),  # fmt: skip
        args.max_seconds,
    )


def results_of(path: Path) -> dict:
    return json.loads((path / "results.json").read_text("utf-8"))


def tokens_per_s(path: Path) -> float:
    """The median training throughput the run logged."""
    rates = [
        r["tok_per_s"]
        for line in (path / "metrics.jsonl").read_text("utf-8").splitlines()
        if "tok_per_s" in (r := json.loads(line))
    ]
    return statistics.median(rates)


def parameters(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118


def summary(values: list[float]) -> dict:
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "folds": len(values),
        "runs": values,
    }


def pretraining_steps(sets: dict) -> str:
    """The pretraining steps the settings give each model, in words: its recipe's
    trainer.max_steps, or the last override of it (in the order ``overrides`` applies
    them)."""
    from archlab.config import parse_override, read_recipe

    steps = {}
    for model in OBJECTIVES:
        value = read_recipe(ARMS[f"{model}-pretrain"][0])["trainer"]["max_steps"]
        for text in (*sets["set"], *sets[f"set_{model}"], *sets["set_pretrain"]):
            section, key, given = parse_override(text)
            if (section, key) == ("trainer", "max_steps"):
                value = given
        steps[model] = f"{int(value):,}" if str(value).isdigit() else str(value)
    if steps["bert"] == steps["gpt"]:
        return f"{steps['bert']} pretraining steps"
    return f"pretraining steps: BERT {steps['bert']}, GPT {steps['gpt']}"


def settings(args) -> dict:
    """The overrides that make a budget: folds collected under other ones do not pool."""
    return {k: getattr(args, k) for k in ("set", "set_bert", "set_gpt", "set_pretrain")}


def fold_rows(args) -> dict[int, dict]:
    """Per fold whose six runs are all in --runs (each trained with these settings:
    ``check_run``): the classifiers' MR test accuracy, the pretraining runs' figures, and
    the day its last run finished (the results.json files' modification time: runs record
    no date of their own)."""
    rows = {}
    for fold in args.folds:
        paths = {arm: run_dir(args.runs, fold, arm) for arm in ARMS}
        if not all(done(p) for p in paths.values()):
            continue
        for arm, path in paths.items():
            check_run(args, fold, arm, path)
        pretraining = {}
        for model, (_, held_out) in OBJECTIVES.items():
            path = paths[f"{model}-pretrain"]
            val = results_of(path)["val"]
            pretraining[model] = {"tokens_per_s": tokens_per_s(path), "loss": val["loss"],
                                  held_out: val[held_out],
                                  "parameters": parameters(path)}  # fmt: skip
        finished = max((p / "results.json").stat().st_mtime for p in paths.values())
        rows[fold] = {
            "accuracy": {arm: results_of(paths[arm])["test"]["accuracy"] for arm in CLASSIFIERS},
            "pretraining": pretraining,
            "date": datetime.fromtimestamp(finished, UTC).strftime("%Y-%m-%d"),
        }
    return rows


def check_run(args, fold: int, arm: str, path: Path) -> None:
    """Exit, in one sentence, unless ``path`` was trained as these settings train ``arm``
    (another budget's runs do not pool with these): its recipe with its overrides, and a
    fine-tuned run from the weights its pretraining run holds now (their SHA-256, so the
    runs may move)."""
    from archlab.data.pretrained import weights_sha256
    from archlab.run import read_run_config

    recipe, source, _ = ARMS[arm]
    sets = overrides(args, fold, arm)
    start = ("model.init_from", "model.init_sha256") if source else ()  # by weights: below
    why = ""
    if not begun_with(path, recipe, sets, ignore=start):
        given = " ".join(s for s in sets if not s.startswith("model.init_from="))
        why = f"other settings than {recipe} with {given}"
    elif source is not None:
        pretrained = run_dir(args.runs, fold, source)
        if read_run_config(path)["model"].get("init_sha256") != weights_sha256(pretrained):
            why = f"other weights than those {pretrained} holds"
    if why:
        sys.exit(f"{path} was trained with {why} (another budget's run?): collect with its "
                 "settings, or leave its fold out with --folds, or give other --runs")  # fmt: skip


def recorded(args) -> tuple[dict[int, dict], str]:
    """With --keep-recorded: the folds --out already holds (an earlier collect's, under the
    same settings), so folds run on another day or machine pool with the ones in --runs;
    and the file's note.  Every fold it holds must be among --folds."""
    if not args.keep_recorded:
        return {}, ""
    if not args.out.exists():
        print(f"--keep-recorded: {args.out} does not exist yet, so no fold is recorded")
        return {}, ""
    try:
        (body,) = json.loads(args.out.read_text("utf-8"))["benchmarks"].values()
        results = body["results"]
        if "bert-mlm" not in results["accuracy"]:  # this claim's table, whatever the file's name
            raise KeyError("bert-mlm")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        sys.exit(f"{args.out} is not a results file of this claim ({type(e).__name__}: {e})")
    if "settings" not in results:
        sys.exit(f"{args.out} holds no per-fold figures (an older collect wrote it): "
                 "collect into another --out")  # fmt: skip
    if results["settings"] != settings(args):
        words = " ".join(f"--{k.replace('_', '-')} {v}" for k, vs in results["settings"].items()
                         for v in vs)  # fmt: skip
        sys.exit(f"{args.out} was collected with other settings ({words or 'no overrides'}), "
                 "so its folds do not pool with these: collect into another --out")  # fmt: skip
    rows = {int(f): row for f, row in results["folds"].items()}
    if left_out := sorted(set(rows) - set(args.folds)):
        sys.exit(f"{args.out} holds folds {', '.join(map(str, left_out))}, which --folds "
                 "leaves out: add them, or collect into another --out")  # fmt: skip
    return rows, body.get("note", "")


def aggregate(rows: dict[int, dict]) -> dict:
    """The folds' table: accuracy per classifier over the folds; the pretraining runs'
    figures over the folds that recorded them (tokens/s a median, held-out loss and
    perplexity means, and the parameters, the same in every fold); MiniLM's row from its
    results file; and the folds' own rows."""
    folds = sorted(rows)
    table = {"accuracy": {arm: summary([rows[f]["accuracy"][arm] for f in folds])
                          for arm in CLASSIFIERS}}  # fmt: skip
    table["pretraining"] = {}
    for model, (objective, held_out) in OBJECTIVES.items():
        runs = [rows[f]["pretraining"][model] for f in folds if "pretraining" in rows[f]]
        if runs:
            table["pretraining"][model] = {
                "objective": objective,
                "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                "held_out_loss": float(np.mean([r["loss"] for r in runs])),
                f"held_out_{held_out}": float(np.mean([r[held_out] for r in runs])),
                "parameters": runs[0]["parameters"],
                "folds": len(runs),
            }  # fmt: skip
    if MINILM.exists():
        minilm = json.loads(MINILM.read_text("utf-8"))["results"]["test"]
        table["accuracy"]["minilm"] = {"mean": minilm["accuracy"],
                                       "std": minilm.get("accuracy_std", 0.0),
                                       "folds": len(minilm.get("accuracy_runs", [])) or 1,
                                       "from": "results/minilm-mr.json"}  # fmt: skip
    table["folds"] = {str(f): rows[f] for f in folds}
    return table


def test_words(folds: int, p: float) -> str:
    """The folds and the paired test in words: below 6 pairs a two-sided signed-rank test
    cannot reach p < 0.05 (its smallest p is 2 / 2^n), so it is named as not made."""
    if folds < 6:
        return f"{folds} fold{'s' if folds > 1 else ''}, too few for a paired test"
    return f"{folds} folds, paired Wilcoxon {p_text(p)}"


def verdict(table: dict) -> str:
    """The verdict from the table (aggregate's, with its settings), led by the budget."""
    acc = table["accuracy"]
    bert, gpt = acc["bert-mlm"], acc["gpt-clm"]
    p = wilcoxon_p(bert["runs"], gpt["runs"])
    gap = 100 * (bert["mean"] - gpt["mean"])
    folds = bert["folds"]
    if p < ALPHA:
        word = "supported" if gap > 0 else "not supported"
    else:
        word = "inconclusive at this budget"
    return (
        f"{word} ({pretraining_steps(table['settings'])}, {test_words(folds, p)}): pretrained "
        f"alike, BERT (masked LM) fine-tunes to {100 * bert['mean']:.2f} % on MR and GPT "
        f"(causal LM) to {100 * gpt['mean']:.2f} % ({gap:+.2f} points); from scratch "
        f"{100 * acc['bert-scratch']['mean']:.2f} % and {100 * acc['gpt-scratch']['mean']:.2f} %"
    )


def plot(table: dict, img: Path, stem: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = table["accuracy"]
    names = [
        n for n in ("bert-scratch", "gpt-scratch", "bert-mlm", "gpt-clm", "minilm") if n in acc
    ]
    fig, (ax, gap) = plt.subplots(1, 2, figsize=(8, 3), width_ratios=(3, 1))
    colours = ["tab:blue" if n.startswith(("bert", "minilm")) else "tab:orange" for n in names]
    for i, (name, colour) in enumerate(zip(names, colours, strict=True)):
        ax.errorbar(i, 100 * acc[name]["mean"], yerr=100 * acc[name]["std"], fmt="o",
                    color=colour, capsize=4)  # fmt: skip
        runs = acc[name].get("runs", [])  # one dot per fold
        ax.plot([i + 0.15] * len(runs), [100 * r for r in runs], ".", color="grey", ms=3)
    ax.set(xticks=range(len(names)), xticklabels=names, ylabel="MR test accuracy (%)",
           ylim=(60, 90), title="mean ± std over folds, and each fold")  # fmt: skip
    diffs = [100 * (a - b) for a, b in zip(acc["bert-mlm"]["runs"], acc["gpt-clm"]["runs"],
                                           strict=True)]  # fmt: skip
    gap.axhline(0, color="grey", lw=0.8)
    gap.plot([0] * len(diffs), diffs, "k.", ms=4)
    gap.set(xticks=[0], xticklabels=["per fold"], xlim=(-1, 1),
            ylabel="bert-mlm - gpt-clm (points)", title="paired by fold")  # fmt: skip
    fig.suptitle(f"BERT against GPT on MR, {pretraining_steps(table['settings'])}", fontsize=10)
    fig.tight_layout()
    img.mkdir(parents=True, exist_ok=True)
    name = f"{stem}.png"
    fig.savefig(img / name, dpi=120)
    plt.close(fig)
    return [name]


def cmd_collect(args) -> None:
    kept, note = recorded(args)
    read = fold_rows(args)
    for fold in sorted(set(kept) & set(read)):
        print(f"fold {fold}: read from {args.runs}, in place of the one {args.out} records")
    if note and read:  # prose: it cannot follow the folds by itself
        folds = ", ".join(map(str, sorted(read)))
        print(f"{args.out}'s note is kept as written: edit it if folds {folds} from "
              f"{args.runs} change what it says")  # fmt: skip
    rows = kept | read
    if not rows:
        sys.exit("no fold has all its runs yet: run `python scripts/bert_vs_gpt.py run`")
    folds = sorted(rows)
    table = aggregate(rows) | {"settings": settings(args)}
    if without := [f for f in folds if "pretraining" not in rows[f]]:
        print(f"the pretraining figures leave out folds {', '.join(map(str, without))}, "
              "recorded without them")  # fmt: skip
    name = args.out.stem  # claim-bert-vs-gpt, or the budget's own file
    images = plot(table, args.img, name)
    sentence = verdict(table)
    missing = [run_dir(args.runs, fold, arm).name for fold, arm in cells(args)
               if fold not in rows and not done(run_dir(args.runs, fold, arm))]  # fmt: skip
    body = {
        "summary": sentence,
        "reference": "the articles: BERT's bidirectional context beats GPT's left-to-right "
        "context; a 4-layer, 256-wide BERT and GPT pretrained on the same unlabelled English "
        "(Multi30k En train + the fold's MR training sentences; bert-mlm-mr, gpt-clm-mr), then "
        "fine-tuned on MR with a linear head and the same schedule (bert-mr, gpt-mr); "
        f"folds {', '.join(map(str, folds))}; GPT's perplexity and BERT's pseudo-perplexity "
        "of Multi30k's English validation text (not the same quantity: the chain rule holds "
        "only for GPT's)",
        "verdict": sentence,
        "results": table,
        "missing": missing,
        "images": [f"docs/img/{name}" for name in images],
    } | ({"note": note} if note else {})  # the recorded folds' conditions
    # what would make the file from nothing: every fold's runs, then one collect
    argv = [word for word in args.argv if word != "--keep-recorded"]  # no abbreviations
    write_claim(args.out, name, script_command("bert_vs_gpt.py", argv), body)
    print(f"wrote {args.out} and {', '.join(images)}")
    print(sentence)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("plan", cmd_plan), ("run", cmd_run), ("collect", cmd_collect)):
        p = sub.add_parser(name, help=fn.__doc__, allow_abbrev=False)
        p.set_defaults(func=fn)
        p.add_argument("--folds", nargs="*", type=int, default=list(range(10)))
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="an override for every run (for a smaller budget)")  # fmt: skip
        for family in ("bert", "gpt", "pretrain"):
            p.add_argument(f"--set-{family}", action="append", default=[], metavar="KEY=VALUE",
                           help=f"an override for the {family} runs only")  # fmt: skip
        p.add_argument("--runs", type=Path, default=RUNS, help="where the runs go")
        p.add_argument("--max-seconds", type=float, default=math.inf)
        p.add_argument("--out", type=Path, default=OUT)
        p.add_argument("--img", type=Path, default=IMG)
    sub.choices["collect"].add_argument(
        "--keep-recorded", action="store_true",
        help="keep the folds --out already holds (collected with the same settings; each "
        "must be among --folds) beside those --runs gives",
    )  # fmt: skip
    args = parse_script_args(parser, argv)
    if any(not 0 <= f < 10 for f in args.folds) or not args.folds:
        parser.error("--folds takes fold numbers from 0 to 9")
    args.func(args)


if __name__ == "__main__":
    main()
