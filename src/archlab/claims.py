"""The articles' six claims: what measures each, at which budget, and its recorded verdict.

``archlab claims`` lists them with the verdict recorded in ``results/`` (or "not
measured yet"); ``archlab claims NAME|all [--budget small|full]`` runs each claim's
steps in turn -- trainings, the claim's script in ``scripts/`` (``run``, then
``collect``, which writes ``results/claim-*.json``), and for claims judged from recipe
figures, recording the runs and rebuilding the results book -- and stops at the first
step that fails.  ``--dry-run`` prints the steps.  A second call continues an
interrupted one: the claim scripts skip the runs they find done, and so do the training
steps (``continued``: an interrupted run begun with the step's settings resumes, a
``--seeds`` one keeping its finished seeds); removing ``runs/claims/`` measures afresh.

A claim script writes its verdict into its results file; the claims judged from recipe
figures (fusion, SAGAN) are judged here (``judge_fusion``, ``judge_sagan``), and the
results book renders the fusion figures from the same ``fusion_figures``.  Each verdict
has a short form (at most SHORT characters), the README's line for the claim.

Budgets: ``small`` finishes all six in about 2 h 15 min on 2 cores (the minutes below
are each claim's time measured on this machine: docs/results.md#claims); ``full``
is each experiment as the results book describes it.  The claim scripts live in the
source checkout (``scripts/``): ``archlab claims`` runs from a clone, not from an
installed wheel.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

from archlab.bench import machine
from archlab.errors import ArchlabError, CheckpointError, ConfigError
from archlab.io import to_json
from archlab.registry import unknown_name_message

ROOT = Path(__file__).resolve().parents[2]  # the source checkout
BUDGETS = ("small", "full")
RUNS = "runs/claims"
SMALL_PRETRAIN = (  # claim 6 at the small budget: 750 pretraining steps, runs of their own
    "--set-pretrain trainer.max_steps=750 --runs runs/claims/bert-vs-gpt-small"
)
FULL_BERT_VS_GPT = "results/claim-bert-vs-gpt-full.json"  # claim 6 at the recipes' budget
# claim 3's reference, as its paired.py steps record it
SABOUR_AFFNIST = (
    "Sabour et al. (2017) on affNIST, trained on 40x40 shifted MNIST: CapsNet 79 %, CNN 66 %"
)
SEEN_28 = "; here 28x28 models trained 3 epochs see the affine set through a centre-of-mass crop"
SEEN_40 = (
    "; here the same 40x40 setting (digits placed anywhere on the canvas, data.canvas=40, "
    "data.shift=6), tested on the affine set at 40x40, 15 epochs each"
)


@dataclass(frozen=True)
class Claim:
    number: int
    statement: str
    results: tuple[str, ...]  # the results files that hold its verdict
    steps: dict[str, tuple[str, ...]]  # budget -> shell-like command lines
    minutes: dict[str, int]  # budget -> estimated minutes here
    section: str = ""  # the anchor of the results book's section that holds it
    # for claims judged from recipe figures: (results dir, short) -> (verdict, files read)
    judge: Callable[[Path, bool], tuple[str, list[Path]]] | None = field(default=None)
    short_last: bool = False  # its files are one experiment ever closer to the paper's
    # setting and budget: the short verdict gives the last one found


def _train_and_record(
    name: str, recipe: str = "", variant: str = "", sets: str = ""
) -> tuple[str, str]:
    """The steps that train ``name`` with 3 seeds into ``RUNS/name`` and record it in
    results/: as the recipe's own figures, or, given the ``recipe`` it changes, as a
    variant saying what differs."""
    command = f"archlab train {recipe or name} --seeds 3{sets}"
    step = f"script results.py record {RUNS}/{name} --name {name} --command '{command}'"
    record = f"{step} --recipe {recipe} --variant '{variant}'" if recipe else step
    return f"{command} --out {RUNS}/{name}", record


# ----- claims judged from recipe figures: the numbers (the results book renders them too)

ALPHA = 0.05  # the significance level of every claim's test

AVDIGITS = ("image-avdigits", "audio-avdigits", "early-avdigits", "late-avdigits",
            "gmu-avdigits", "xattn-avdigits", "central-avdigits")  # fmt: skip
FUSION_GOAL = 5.0  # points of clean test accuracy over the best single modality
ROBUST_WITHIN = 2.0  # points below the other modality's own model, one modality missing
GANS = ("dcgan-mnist", "sagan-mnist", "sagan-noattn-mnist")
# the GANs' budgets, shortest first: (results files' suffix, in words)
GAN_BUDGETS = (("-1500steps", "1,500 steps"), ("", "the recipes' 3,000 steps"),
               ("-9000steps", "9,000 steps"))  # fmt: skip
GAN_STEPS = {"small": 1500, "full": 9000}  # half and 3x the recipes' 3,000 steps
GAN_RUNS = (  # GANS as trained: (name, the recipe it changes, what differs, --set options)
    ("dcgan-mnist", "", "", ""),
    ("sagan-mnist", "", "", ""),
    ("sagan-noattn-mnist", "sagan-mnist", "without its two attention blocks (ablation)",
     " --set model.attention=false"),
)  # fmt: skip


def _gan_steps(name: str, recipe: str, variant: str, sets: str, steps: int) -> tuple[str, str]:
    """Train one of GANS with 3 seeds for ``steps`` into RUNS, and record it as a variant
    (``NAME-{steps}steps``, one of GAN_BUDGETS)."""
    name, recipe = f"{name}-{steps}steps", recipe or name
    variant = ", ".join(filter(None, (variant, f"{steps:,} steps")))
    return _train_and_record(name, recipe, variant, f"{sets} --set trainer.max_steps={steps}")


def seeds(test: dict, metric: str) -> int:
    """How many runs a test figure is the mean of."""
    return len(test.get(f"{metric}_runs", [None]))


def pct(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


def runs_text(n: int) -> str:
    return "1 run" if n == 1 else f"mean of {n} seeds"


@dataclass(frozen=True)
class Fusion:
    """The fusion claim measured: accuracies as fractions, gains and gaps in points."""

    singles: dict[str, dict]  # "image", "audio" -> the test figures of its own model
    fusions: dict[str, dict]  # fusion recipe -> its test figures
    best_single: str  # "image" or "audio"
    best: str  # the fusion with the best clean test accuracy
    gain: float  # its points over the best single modality
    seeded: str | None  # when ``best`` is one run: the best fusion measured over seeds
    seeded_gain: float | None
    # fusion -> (image missing vs audio-avdigits, audio missing vs image-avdigits)
    gaps: dict[str, tuple[float, float]]

    @property
    def single(self) -> float:
        return self.singles[self.best_single]["accuracy"]

    @property
    def met(self) -> bool:  # judged on the points as written (+5.00 meets 5)
        return round(self.gain, 2) >= FUSION_GOAL

    @property
    def seeded_met(self) -> bool:
        return self.seeded_gain is not None and round(self.seeded_gain, 2) >= FUSION_GOAL

    def robust(self, name: str) -> bool:
        return round(min(self.gaps[name]), 2) >= -ROBUST_WITHIN


def fusion_figures(tests: dict[str, dict]) -> Fusion | None:
    """The fusion claim from the av-digits recipes' test figures (name -> results.json's
    test split), or None without both single-modality models and a fusion."""
    singles = {m: tests.get(f"{m}-avdigits") for m in ("image", "audio")}
    fusions = {n: t for n, t in tests.items() if n.split("-")[0] not in singles}
    if None in singles.values() or not fusions:
        return None
    best_single = max(singles, key=lambda m: singles[m]["accuracy"])
    single = singles[best_single]["accuracy"]
    best = max(fusions, key=lambda n: fusions[n]["accuracy"])
    seeded = {n: t for n, t in fusions.items() if seeds(t, "accuracy") > 1}
    other = max(seeded, key=lambda n: seeded[n]["accuracy"]) if seeded else None
    if best in seeded:
        other = None  # the verdict already rests on seeds
    gaps = {
        n: (
            100 * (t["accuracy_image_missing"] - singles["audio"]["accuracy"]),
            100 * (t["accuracy_audio_missing"] - singles["image"]["accuracy"]),
        )
        for n, t in fusions.items()
    }
    return Fusion(
        singles, fusions, best_single, best, 100 * (fusions[best]["accuracy"] - single),
        other, None if other is None else 100 * (fusions[other]["accuracy"] - single), gaps,
    )  # fmt: skip


def _recipe_tests(results: Path, names: Iterable[str]) -> tuple[dict[str, dict], list[Path]]:
    """The test figures of the results files ``NAME.json`` that exist, in order."""
    tests, paths = {}, []
    for name in names:
        path = results / f"{name}.json"
        if path.is_file():
            tests[name] = json.loads(path.read_text("utf-8"))["results"]["test"]
            paths.append(path)
    return tests, paths


def judge_fusion(results: Path, short: bool = False) -> tuple[str, list[Path]]:
    tests, paths = _recipe_tests(results, AVDIGITS)
    f = fusion_figures(tests)
    if f is None:
        return "", paths
    robust = [n for n in f.fusions if f.robust(n)]
    n = seeds(f.fusions[f.best], "accuracy")
    if short:
        names = ", ".join(r.removesuffix("-avdigits") for r in robust) or "none"
        runs = "1 run" if n == 1 else f"{n} seeds"
        return (
            f"goal {'met' if f.met else 'not met'}: {f.best} ({runs}) "
            f"{f.gain:+.2f} points over {f.best_single}-avdigits (≥ {FUSION_GOAL:g} asked); "
            f"within {ROBUST_WITHIN:g} points with a modality missing: {names}",
            paths,
        )
    text = (
        f"the goal of ≥ {FUSION_GOAL:g} points over the best single modality is "
        f"{'met' if f.met else 'not met'}: the best fusion, {f.best}, reaches "
        f"{pct(f.fusions[f.best]['accuracy'])} ({runs_text(n)}) against {pct(f.single)} for "
        f"{f.best_single}-avdigits ({runs_text(seeds(f.singles[f.best_single], 'accuracy'))}): "
        f"{f.gain:+.2f} points"
    )
    if f.seeded is not None:
        text += (
            f" (one run; the best over seeds, {f.seeded}, {f.seeded_gain:+.2f} points, "
            f"{'also meets it' if f.seeded_met else 'does not'})"
        )
    text += (
        f"; with one modality missing, {len(robust)} of {len(f.fusions)} fusions stay within "
        f"{ROBUST_WITHIN:g} points of the other modality's own model"
        + (f" ({', '.join(robust)})" if robust else "")
    )
    return text, paths


def _fid(test: dict) -> str:
    std = f" ± {test['fid_std']:.1f}" if "fid_std" in test else ""
    return f"{test['fid']:.1f}{std}"


def p_text(p: float) -> str:
    """A p-value as the verdicts print it: three decimals, or below what they show."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _p(p: float | None) -> str:
    return "1 run, no test" if p is None else p_text(p)


def _fid_outcome(a: dict, b: dict) -> tuple[str, float | None]:
    """Whether ``a``'s test FID is lower ("better"), higher ("worse") or not told apart
    ("unclear") from ``b``'s: Welch's t-test on their seeds' FIDs, p < ALPHA."""
    p = welch_p(a.get("fid_runs", []), b.get("fid_runs", []))
    if p is None or p >= ALPHA:
        return "unclear", p
    return ("better" if a["fid"] < b["fid"] else "worse"), p


def judge_sagan(results: Path, short: bool = False) -> tuple[str, list[Path]]:
    """Test FID (lower is better) of sagan-mnist against sagan-noattn-mnist (attention inside
    SAGAN) and against dcgan-mnist, at each budget recorded, each difference by Welch's
    t-test over the seeds; the short verdict: the longest budget."""
    sentences, paths = [], []
    for suffix, budget in GAN_BUDGETS:
        tests, found = _recipe_tests(results, (g + suffix for g in GANS))
        paths += found
        fid = {name.removesuffix(suffix): t for name, t in tests.items()}
        sagan, noattn = fid.get("sagan-mnist"), fid.get("sagan-noattn-mnist")
        dcgan = fid.get("dcgan-mnist")
        if sagan is None or (noattn is None and dcgan is None):
            continue
        outcomes, parts = [], []
        if noattn is not None:
            outcome, p = _fid_outcome(sagan, noattn)
            outcomes.append(outcome)
            a, b = (f"{sagan['fid']:.1f}", f"{noattn['fid']:.1f}") if short else (
                _fid(sagan), _fid(noattn))  # fmt: skip
            parts.append({
                "better": f"attention helps ({a} with it, {b} without; {_p(p)})",
                "worse": f"attention hurts ({a} with it, {b} without; {_p(p)})",
                "unclear": f"with attention {a}, without {b} ({_p(p)})",
            }[outcome])  # fmt: skip
        if dcgan is not None:
            outcome, p = _fid_outcome(sagan, dcgan)
            outcomes.append(outcome)
            g, d = ("SAGAN", f"{dcgan['fid']:.1f}") if short else (
                f"SAGAN ({_fid(sagan)})", _fid(dcgan))  # fmt: skip
            verb = {"better": "beats", "worse": "trails", "unclear": "against"}[outcome]
            parts.append(f"{g} {verb} DCGAN ({d}; {_p(p)})")
        if all(o == "better" for o in outcomes):
            word = "supported"
        elif "better" in outcomes:
            word = "partly supported"
        elif "worse" in outcomes:
            word = "not supported"
        else:
            word = "inconclusive at this budget"
        counts = sorted({seeds(t, "fid") for t in fid.values()})
        runs = "/".join(map(str, counts)) + (" seeds" if counts[-1] > 1 else " run")
        if short:
            steps = budget.removeprefix("the recipes' ")
            sentences.append(f"{word}: {', '.join(parts)}; FID, {runs}, {steps}")
        else:
            sentences.append(f"at {budget}, {word}: {', '.join(parts)} ({runs} each)")
    if not sentences:
        return "", paths
    if short:
        return sentences[-1], paths
    return (
        "test FID, lower is better, differences by Welch's t-test over the seeds "
        f"(p < {ALPHA:g}); " + "; ".join(sentences),
        paths,
    )


CLAIMS = {
    "long-range": Claim(
        1,
        "Transformers capture long-range dependencies that RNNs cannot, and train faster "
        "because they are parallel",
        ("claim-long-range.json", "claim-char-lm.json"),
        {
            "small": (
                # in runs of their own: the runs' folders do not name steps or minutes, and
                # the full budget must not collect these
                f"script long_range.py run --steps 100 --runs {RUNS}/long-range-small",
                f"script long_range.py collect --runs {RUNS}/long-range-small",
                f"script char_lm.py run --minutes 3 --runs {RUNS}/char-lm-small",
                f"script char_lm.py collect --runs {RUNS}/char-lm-small",
            ),
            "full": (
                "script long_range.py run",
                "script long_range.py collect",
                "script char_lm.py run --minutes 15",
                "script char_lm.py collect",
            ),
        },  # fmt: skip
        # small: 27.8 min via `archlab claims long-range` from a fresh clone on 2 cores
        # (2026-12-04; 3 of its minutes beside a test run)
        {"small": 28, "full": 90},
        section="claim-long-range",
    ),
    "gat-vs-gcn": Claim(
        2,
        "GAT handles graphs of varying structure better than GCN",
        ("claim-gat-vs-gcn.json",),
        {
            "small": (
                "script gat_vs_gcn.py run --clean-only",
                "script gat_vs_gcn.py collect --clean-only",
            ),
            "full": ("script gat_vs_gcn.py run", "script gat_vs_gcn.py collect"),
        },
        # small: 7.7 min via `archlab claims gat-vs-gcn --budget small` on 2 idle cores,
        # full: 59 min on one core, 1 thread (both 2026-12-04)
        {"small": 8, "full": 60},
        section="claim-gat-vs-gcn",
    ),
    "capsnet-vs-cnn": Claim(
        3,
        "CapsNets understand spatial relationships better than CNNs (affine-transformed test)",
        (
            "claim-capsnet-vs-cnn-3epochs.json",
            "claim-capsnet-vs-cnn.json",  # 15 epochs
            # the paper's 40 x 40 setting for 1 epoch, the most a 3-hour session holds
            # (commands: the results book's claim-capsnet-vs-cnn section)
            "claim-capsnet-vs-cnn-canvas40-1epoch.json",
            "claim-capsnet-vs-cnn-canvas40.json",
        ),  # fmt: skip
        {
            "small": (
                f"archlab train cnn-mnist --set trainer.max_epochs=3 --out {RUNS}/cnn-3",
                f"archlab train capsnet-mnist --set trainer.max_epochs=3 --out {RUNS}/caps-3",
                f"script paired.py {RUNS}/cnn-3 {RUNS}/caps-3 --split affine "
                f"--reference {shlex.quote(SABOUR_AFFNIST + SEEN_28)} "
                "--out results/claim-capsnet-vs-cnn-3epochs.json",
            ),
            "full": (
                f"archlab train cnn-mnist --set data.canvas=40 --set data.shift=6 "
                f"--out {RUNS}/cnn-40",
                f"archlab train capsnet-mnist --set data.canvas=40 --set data.shift=6 "
                f"--out {RUNS}/caps-40",
                f"script paired.py {RUNS}/cnn-40 {RUNS}/caps-40 --split affine "
                f"--reference {shlex.quote(SABOUR_AFFNIST + SEEN_40)} "
                "--out results/claim-capsnet-vs-cnn-canvas40.json",
            ),
        },
        # full: 40 x 40 on 2 threads, mostly on idle cores (2026-12-04 to 12-05): the CNN
        # trained in 14 min, the CapsNet in 5 h 33 min (3.1 s a step) plus 14 min of
        # evaluation, paired.py about 8 min
        # small: 26.3 min via `archlab claims capsnet-vs-cnn` on 2 idle cores (2026-12-04)
        {"small": 26, "full": 370},
        section="claim-capsnet-vs-cnn",
        short_last=True,
    ),
    "fusion": Claim(
        4,
        "Cross-modal fusion generalises better than one modality",
        tuple(f"{name}.json" for name in AVDIGITS),
        {
            budget: tuple(
                step
                for recipe in (
                    "image-avdigits",
                    "audio-avdigits",
                    "gmu-avdigits",
                    "central-avdigits",
                )  # fmt: skip
                for step in _train_and_record(recipe)
            )
            + ("script results.py build",)
            for budget in BUDGETS
        },
        # 10.6 min via `archlab claims fusion` from a fresh clone on 2 idle cores (2026-12-04)
        {"small": 11, "full": 11},
        section="audio-visual-digits-fusion",
        judge=judge_fusion,
    ),
    "sagan": Claim(
        5,
        "Self-attention inside a GAN improves the generated images (SAGAN)",
        tuple(f"{name}{suffix}.json" for suffix, _ in GAN_BUDGETS for name in GANS),
        {
            # small: the ablation that is the claim (attention inside SAGAN, on and off) at
            # 1,500 steps; full: DCGAN too, all three at 9,000 steps; the recipes' own 3,000
            # steps are their results files (`archlab train NAME --seeds 3`)
            "small": tuple(
                step for run in GAN_RUNS[1:] for step in _gan_steps(*run, GAN_STEPS["small"])
            )
            + ("script results.py build",),
            "full": tuple(step for run in GAN_RUNS for step in _gan_steps(*run, GAN_STEPS["full"]))
            + ("script results.py build",),
        },
        # `archlab claims sagan --budget small` from a fresh clone on 2 cores (2026-12-04):
        # 30.3 min at 1,500 steps, plus 6 min once per machine to train the FID's classifier
        # (at the recipes' 3,000 steps it took 53 min); at 9,000 steps on 1 thread
        # (2026-12-04): 129, 63 and 59 min with DCGAN, 1.7x the 2-thread time
        {"small": 36, "full": 165},
        section="image-generation-mnist",
        judge=judge_sagan,
    ),
    "bert-vs-gpt": Claim(
        6,
        "Bidirectional context (BERT) beats left-to-right context (GPT) on classification; "
        "left-to-right is what generation needs",
        # each budget's own file: the folds it holds pool with the ones run again
        # (collect --keep-recorded), so a budget is built a few folds at a sitting
        ("claim-bert-vs-gpt.json", "claim-bert-vs-gpt-full.json"),
        {
            # fold 0 again at a quarter of the pretraining (the recipes' 3,000 MLM steps took
            # 28 min on one core, 2026-12-03), in runs of its own so the full budget never
            # reuses them, beside the other folds the small budget's file holds
            "small": (
                f"script bert_vs_gpt.py run --folds 0 {SMALL_PRETRAIN}",
                f"script bert_vs_gpt.py collect {SMALL_PRETRAIN} --keep-recorded "
                "--out results/claim-bert-vs-gpt.json",
            ),
            "full": (
                "script bert_vs_gpt.py run",
                f"script bert_vs_gpt.py collect --out {FULL_BERT_VS_GPT} --keep-recorded",
            ),
        },
        # small: 22.9 min via `archlab claims bert-vs-gpt` from a fresh clone on 2 idle cores
        # (2026-12-04); full: a fold's six runs took 77 core-minutes on one thread each,
        # 43 min a fold with the BERT arms on one core and the GPT arms on the other
        # (`bert_vs_gpt.py plan`, 2026-12-04): about 52 min a fold at 2 threads a run
        # (estimated: 2 threads gave the other claims 1.5-2x)
        {"small": 23, "full": 520},
        section="claim-bert-vs-gpt",
        short_last=True,
    ),
}


NOT_MEASURED = "not measured yet"
SHORT = 150  # characters of a short verdict (the README's), its sources aside


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 4].rsplit(" ", 1)[0] + " ..."


def _short_claim(body: dict) -> str:
    """A claim script's verdict in at most SHORT characters."""
    if "p_value" in body:  # scripts/paired.py: run b is the one the claim favours
        split, a, b = re.match(r"(\w+) set: (\S+) \S+, (\S+) ", body["summary"]).groups()
        better = body["accuracy_b"] > body["accuracy_a"]
        p = body["p_value"]
        word = ("supported" if p < ALPHA else "the claim's direction, not significant") if better \
            else "not supported"  # fmt: skip
        return _clip(
            f"{word}: {b} {pct(body['accuracy_b'])} vs {a} {pct(body['accuracy_a'])} on the "
            f"{split} set (McNemar {p_text(p)})",
            SHORT,
        )
    if "verdicts" in body:  # scripts/long_range.py: the Transformer against each rival
        found: dict[str, list[str]] = {}
        for rival, sentence in body["verdicts"].items():
            for task, outcome in re.findall(OUTCOME, sentence):
                found.setdefault(outcome, []).append(f"{task} vs {rival}")
        speeds = [float(x) for x in re.findall(r"([\d.]+)x its tokens/s", str(body["verdicts"]))]
        parts = []
        for outcome, where in found.items():
            tasks = list(dict.fromkeys(w.split(" vs ")[0] for w in where))
            rivals = list(dict.fromkeys(w.split(" vs ")[1] for w in where))
            if len(where) == len(tasks) * len(rivals):  # every task against every rival
                where = [f"{', '.join(tasks)} vs {', '.join(rivals)}"]
            parts.append(f"{outcome} ({', '.join(where)})")
        text = "; ".join(parts)
        if speeds:
            text += f"; Transformer {min(speeds):.2f}-{max(speeds):.2f}x their tokens/s"
        return _clip(text, SHORT)
    results = body.get("results")
    if isinstance(results, dict) and all("val_loss" in r for r in results.values()):
        ranked = sorted(results, key=lambda m: results[m]["val_loss"])  # scripts/char_lm.py
        return "char LM val loss: " + ", ".join(f"{m} {results[m]['val_loss']:.3f}" for m in ranked)
    if "verdict" in body:
        first = body["verdict"].split("; ", 1)[0]
        return first if len(first) <= SHORT else _clip(body["verdict"].split(": ", 1)[0], SHORT)
    return _clip(body["summary"], SHORT)


OUTCOME = r"(\w+): (holds|does not hold|not supported at this budget) \("


def judge(claim: Claim, results: Path, short: bool = False) -> list[tuple[str, list[Path]]]:
    """The claim's verdict as (sentence, the results files it rests on) parts; none when
    nothing is recorded.  ``short``: at most SHORT characters in all (the last part with
    ``short_last``, else the first parts that fit: claim 1's two experiments; the
    results book has every part)."""
    if claim.judge is not None:
        text, paths = claim.judge(results, short)
        return [(text, paths)] if text else []
    parts = []
    for name in claim.results:
        path = results / name
        if not path.is_file():
            continue
        entry = json.loads(path.read_text("utf-8"))
        if entry.get("kind") == "claim":
            body = next(iter(entry["benchmarks"].values()))
            text = _short_claim(body) if short else _clip(body["summary"], 400)
            parts.append((text, [path]))
    if not short:
        return parts
    if claim.short_last:
        return parts[-1:]
    fitting = parts[:1]
    for part in parts[1:]:
        if sum(len(text) for text, _ in [*fitting, part]) > SHORT:
            break
        fitting.append(part)
    return fitting


def _sources(paths: list[Path], short: bool = False) -> str:
    """'a.json, b.json, 2026-12-03' (the files by date); short: '7 results files, DATE'."""
    dates: dict[str, list[str]] = {}
    for path in paths:
        date = json.loads(path.read_text("utf-8")).get("date", "undated")
        dates.setdefault(date, []).append(path.name)
    if short and len(paths) > 2:
        span = " to ".join(sorted({min(dates), max(dates)}))
        return f"{len(paths)} results files, {span}"
    return "; ".join(f"{', '.join(names)}, {date}" for date, names in dates.items())


def verdict(claim: Claim, results: Path, short: bool = False) -> str:
    """The verdict its results files record, with the files and their dates, or why there
    is none."""
    parts = judge(claim, results, short)
    if not parts:
        found = [name for name in claim.results if (results / name).is_file()]
        return NOT_MEASURED + (f" (only {', '.join(found)} recorded)" if found else "")
    return "; ".join(f"{text} ({_sources(paths, short)})" for text, paths in parts)


def command_of(step: str) -> list[str]:
    """A step as an argv: ``archlab ...`` and ``script NAME.py ...`` run with this Python."""
    words = shlex.split(step)
    if words[0] == "archlab":
        return [sys.executable, "-m", "archlab", *words[1:]]
    return [sys.executable, str(ROOT / "scripts" / words[1]), *words[2:]]


def selected(name: str) -> list[str]:
    if name == "all":
        return list(CLAIMS)
    if name not in CLAIMS:
        raise ConfigError(unknown_name_message("claim", name, [*CLAIMS, "all"]))
    return [name]


def list_claims(results: Path = ROOT / "results") -> None:
    for name, claim in CLAIMS.items():
        print(f"{claim.number}. {name}: {claim.statement}.")
        print(f"   {verdict(claim, results)}")


def rewrites(claim: Claim, budget: str) -> list[str]:
    """The claim's results files that its steps at ``budget`` write: those the steps name
    (``--out results/FILE``, or recorded as ``--name sagan-mnist-1500steps``), or, when
    they name none (a script writing its own file), all of them."""
    text = " ".join(claim.steps[budget]) + " "
    named = [
        f for f in claim.results if f"/{f} " in text or f"--name {f.removesuffix('.json')} " in text
    ]
    return named or list(claim.results)


def _call(argv: list[str]) -> int:
    """Run a step; on Ctrl-C (which reaches the step too) wait while it saves and stops,
    then stop here as well (a second Ctrl-C kills it)."""
    child = subprocess.Popen(argv, cwd=ROOT)
    try:
        return child.wait()
    except KeyboardInterrupt:
        try:
            child.wait()
        except KeyboardInterrupt:
            child.kill()
            child.wait()
        raise


def start_over(run_dir: Path, clear: bool = True) -> None:
    """Remove an unfinished run's directory (when ``clear``), unless a process still
    trains in it: then one sentence, as ``archlab train`` refuses a run in use."""
    from archlab.train.rundir import in_use

    if why := in_use(run_dir):
        raise ArchlabError(why)
    if clear:
        shutil.rmtree(run_dir, ignore_errors=True)


def continued(step: str, clear: bool = True) -> tuple[str | None, str]:
    """A training step as a second call runs it (None: not at all), and why: done (its
    --out holds results.json), resumed (begun as the step would begin it, ``begun_with``:
    ``--resume``, bit-identical, a repeated run keeping its finished seeds), or started
    over (an interrupted run that cannot resume, or one begun otherwise: ``start_over``);
    any other step as it is, with ""."""
    from archlab.cli import build_parser, repeat_counts, repeat_plan, train_overrides

    words = shlex.split(step)
    if words[:2] != ["archlab", "train"]:
        return step, ""
    args = build_parser().parse_args(words[1:])
    if not args.out:
        return step, ""
    out = args.out
    if done(ROOT / out):
        return None, f"done: {out}/results.json"
    if not (ROOT / out).exists():
        return step, ""
    overrides, repeats = train_overrides(args), None
    if repeat_counts(args):
        key, _, values, overrides = repeat_plan(args, overrides)
        repeats = key, values
    if begun_with(ROOT / out, args.recipe, overrides, repeats):
        return shlex.join(["archlab", "train", args.recipe, "--resume", out]), f"resumes {out}"
    start_over(ROOT / out, clear)
    return step, f"{out} did not finish or began otherwise: starts over"


def duration(minutes: int) -> str:
    """``minutes`` as a person reads it: "26 minutes", "6 h 10 min"."""
    hours, rest = divmod(minutes, 60)
    return f"{minutes} minutes" if not hours else f"{hours} h {rest} min" if rest else f"{hours} h"


def run_claims(name: str, budget: str, dry_run: bool = False) -> int:
    """Run the steps of ``name`` (or all) at ``budget``; the exit code of the first failure."""
    names = selected(name)
    if not (ROOT / "scripts").is_dir() and not dry_run:
        raise ArchlabError(
            "archlab claims runs the claim scripts of a source checkout (scripts/), which this "
            "installation does not have; clone the repository"
        )
    took = duration(sum(CLAIMS[n].minutes[budget] for n in names))
    print(f"{', '.join(names)} at the {budget} budget: about {took} here", flush=True)
    recorded = [f for n in names for f in rewrites(CLAIMS[n], budget)
                if (ROOT / "results" / f).exists()]  # fmt: skip
    if recorded:  # the repository's own figures, perhaps from a larger budget
        print(f"it may rewrite the repository's results files {', '.join(recorded)} with its "
              "own measurements; `git checkout -- results/FILE` restores one",
              flush=True)  # fmt: skip
    for n in names:
        for step in CLAIMS[n].steps[budget]:
            todo, state = continued(step, clear=not dry_run)
            print(f"[{n}] {todo or step}" + (f"  ({state})" if state else ""), flush=True)
            if dry_run or todo is None:
                continue
            code = _call(command_of(todo))
            if code:
                print(f"[{n}] failed (exit {code}): {todo}", file=sys.stderr)
                return code
    return 0


# ----- what the claim scripts share


def parse_script_args(parser, argv: list[str] | None = None):
    """A claim script's options, with the words they were given as ``argv`` (for
    script_command)."""
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def script_command(script: str, argv: list[str], run_only: Iterable[str] = ()) -> str:
    """The command lines that made a claim script's results file: ``run`` and ``collect``
    with the options ``collect`` was given (``argv``, its verb first), which the two verbs
    share, and ``run`` with ``run_only`` too (what collect read from the runs)."""
    options = argv[1:]
    return " && ".join(
        f"python scripts/{script} {shlex.join(opts)}".strip()
        for opts in (["run", *options, *run_only], ["collect", *options])
    )


def write_claim(path: str | Path, name: str, command: str, body: dict) -> None:
    """Write a measured claim as a results file (``results/claim-*.json``): ``body`` holds
    its ``summary``, the ``reference`` it is set against, and its figures."""
    entry = {
        "name": name,
        "command": command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "benchmarks": {name: body},
        "kind": "claim",
    }
    Path(path).write_text(to_json(entry, indent=2) + "\n", encoding="utf-8")


def done(run_dir: Path) -> bool:
    """A run of a claim's experiment is done once it has written its results.json."""
    return (Path(run_dir) / "results.json").exists()


def train_missing(
    runs: Iterable[tuple[str, str, list[str], Path]], max_seconds: float = math.inf
) -> None:
    """Train each (label, recipe, overrides, run_dir) not done yet, in order; a run that
    was interrupted resumes (bit-identical) if it began with these overrides
    (``begun_with``), else starts over (``start_over``).  None starts after
    ``max_seconds``, so that a loop around the call (each under the machine's CPU lock)
    lets other jobs in between."""
    from archlab.run import train

    started = time.perf_counter()
    for label, recipe, overrides, run_dir in runs:
        if done(run_dir):
            continue
        if time.perf_counter() - started > max_seconds:
            print("time is up for this chunk; run again for the rest", flush=True)
            return
        if begun_with(Path(run_dir), recipe, overrides):
            print(f"{label} (resumes {run_dir})", flush=True)
            train(None, [], resume=str(run_dir), progress=False)
            continue
        start_over(Path(run_dir))
        print(label, flush=True)
        train(recipe, overrides, out=str(run_dir), progress=False)


def begun_with(
    run_dir: Path,
    recipe: str,
    overrides: list[str],
    repeats: tuple[str, list[int]] | None = None,
    ignore: Iterable[str] = (),
) -> bool:
    """Whether ``run_dir`` holds a run begun as ``archlab train RECIPE`` with these
    overrides begins one: every key of the recipe with its overrides (the last of a key's
    wins) has that value in the run's config.yaml (a single run, ``repeats`` None; a recipe
    key the run dropped, such as a swapped-in model's foreign keys, is not asked for), or,
    ``repeats`` giving what varies and its values, in the recipe a repeated training began
    from (repeats.json, recipe.yaml), which has no other keys either.  The keys in
    ``ignore`` (section.key) are not compared.  A run begun otherwise (another --steps, an
    edited recipe) is not resumed as this one; a repeats.json that cannot be read is its
    one sentence (CheckpointError), not a reason to start over."""
    from archlab.config import apply_overrides, is_override, read_recipe
    from archlab.run import is_repeated, read_repeats, read_run_config

    wanted = apply_overrides(read_recipe(recipe), overrides)
    if repeats is None:
        try:
            pairs = [(wanted, read_run_config(run_dir))]
        except (CheckpointError, ConfigError):
            return False
    else:
        if not is_repeated(run_dir):
            return False
        began = read_repeats(run_dir)
        if (began.key, began.values) != repeats:
            return False
        config = began.recipe()
        pairs = [(wanted, config), (config, wanted)]
    skip = set(ignore)
    return all(
        _agrees(have[section][key], value)
        if key in have.get(section, {})
        else repeats is None and not is_override(value)
        for want, have in pairs
        for section, values in want.items()
        for key, value in values.items()
        if f"{section}.{key}" not in skip
    )


def _agrees(have: object, given: object) -> bool:
    """Whether two values of a key agree: equal, or equal once text (an override's, or a
    recipe's such as 1e-3) is read as the other's type (1e-2 gives 0.01, false False)."""
    if have == given:
        return True
    for text, value in ((given, have), (have, given)):
        if isinstance(text, str) and not isinstance(value, str):
            if isinstance(value, int | float) and not isinstance(value, bool):
                try:
                    return float(text) == value
                except ValueError:
                    return False
            try:
                return yaml.safe_load(text) == value
            except yaml.YAMLError:
                return False
    return False


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Welch's t-test of two independent samples (two-sided): its p; None with fewer than
    two figures on a side, and 1.0 when neither side varies (nothing to tell apart by)."""
    from scipy.stats import ttest_ind

    if min(len(a), len(b)) < 2:
        return None
    if len(set(a)) == 1 and len(set(b)) == 1:
        return 1.0
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def wilcoxon_p(a: list[float], b: list[float]) -> float:
    """Wilcoxon's signed-rank test of paired figures (two-sided; zero differences split
    between the signs): its p, and 1.0 when every pair is equal."""
    from scipy.stats import wilcoxon

    if all(x == y for x, y in zip(a, b, strict=True)):
        return 1.0
    return float(wilcoxon(a, b, zero_method="zsplit").pvalue)
