"""The articles' six claims: what measures each, at which budget, and its recorded verdict.

``archlab claims`` lists them with the verdict recorded in ``results/`` (or "not
measured yet"); ``archlab claims NAME|all [--budget small|full]`` runs each claim's
steps in turn -- trainings, the claim's script in ``scripts/`` (``run``, then
``collect``, which writes ``results/claim-*.json``), and for claims judged from recipe
figures, recording the runs and rebuilding the results book -- and stops at the first
step that fails.  ``--dry-run`` prints the steps.  The claim scripts resume where they
stopped, so a second call continues an interrupted one.

Budgets: ``small`` is meant to finish all six in about two hours on 2 cores (the
minutes below are estimates from the recorded runs' times on this machine); ``full``
is each experiment as the results book describes it.  The claim scripts live in the
source checkout (``scripts/``): ``archlab claims`` runs from a clone, not from an
installed wheel.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from archlab.bench import machine
from archlab.errors import ArchlabError, ConfigError
from archlab.io import to_json
from archlab.registry import unknown_name_message

ROOT = Path(__file__).resolve().parents[2]  # the source checkout
BUDGETS = ("small", "full")
RUNS = "runs/claims"
LONGER = " --set trainer.max_steps=9000"
SMALL_PRETRAIN = (  # claim 6 at the small budget: 750 pretraining steps, runs of their own
    "--set-pretrain trainer.max_steps=750 --runs runs/claims/bert-vs-gpt-small"
)  # the GANs' full budget: 3x the recipes' 3,000 steps


@dataclass(frozen=True)
class Claim:
    number: int
    statement: str
    results: tuple[str, ...]  # the results files that hold its verdict
    steps: dict[str, tuple[str, ...]]  # budget -> shell-like command lines
    minutes: dict[str, int]  # budget -> estimated minutes here


def _record(recipe: str, variant: str = "", sets: str = "") -> str:
    """The step that records ``RUNS/recipe`` (3 seeds) in results/: as the recipe's own
    figures, or as a variant of it named ``recipe-variant``."""
    command = f"archlab train {recipe} --seeds 3{sets}"
    if not variant:
        return f"script results.py record {RUNS}/{recipe} --name {recipe} --command '{command}'"
    return (
        f"script results.py record {RUNS}/{recipe}-{variant} --name {recipe}-{variant} "
        f"--recipe {recipe} --variant '{variant}' --command '{command}'"
    )


CLAIMS = {
    "long-range": Claim(
        1,
        "Transformers capture long-range dependencies that RNNs cannot, and train faster "
        "because they are parallel",
        ("claim-long-range.json", "claim-char-lm.json"),
        {
            "small": (
                "script long_range.py run --steps 100",
                "script long_range.py collect",
                "script char_lm.py run --minutes 3",
                "script char_lm.py collect",
            ),
            "full": (
                "script long_range.py run",
                "script long_range.py collect",
                "script char_lm.py run --minutes 15",
                "script char_lm.py collect",
            ),
        },  # fmt: skip
        {"small": 30, "full": 90},
    ),
    "gat-vs-gcn": Claim(
        2,
        "GAT handles graphs of varying structure better than GCN",
        ("claim-gat-vs-gcn.json",),
        {
            "small": ("script gat_vs_gcn.py run --clean-only", "script gat_vs_gcn.py collect"),
            "full": ("script gat_vs_gcn.py run", "script gat_vs_gcn.py collect"),
        },
        {"small": 6, "full": 35},
    ),
    "capsnet-vs-cnn": Claim(
        3,
        "CapsNets understand spatial relationships better than CNNs (affine-transformed test)",
        (
            "claim-capsnet-vs-cnn.json",
            "claim-capsnet-vs-cnn-3epochs.json",
            "claim-capsnet-vs-cnn-canvas40.json",
        ),  # fmt: skip
        {
            "small": (
                f"archlab train cnn-mnist --set trainer.max_epochs=3 --out {RUNS}/cnn-3",
                f"archlab train capsnet-mnist --set trainer.max_epochs=3 --out {RUNS}/caps-3",
                f"script paired.py {RUNS}/cnn-3 {RUNS}/caps-3 --split affine "
                "--out results/claim-capsnet-vs-cnn-3epochs.json",
            ),
            "full": (
                f"archlab train cnn-mnist --set data.canvas=40 --set data.shift=6 "
                f"--out {RUNS}/cnn-40",
                f"archlab train capsnet-mnist --set data.canvas=40 --set data.shift=6 "
                f"--out {RUNS}/caps-40",
                f"script paired.py {RUNS}/cnn-40 {RUNS}/caps-40 --split affine "
                "--out results/claim-capsnet-vs-cnn-canvas40.json",
            ),
        },
        {"small": 25, "full": 420},
    ),
    "fusion": Claim(
        4,
        "Cross-modal fusion generalises better than one modality",
        (
            "image-avdigits.json",
            "audio-avdigits.json",
            "gmu-avdigits.json",
            "central-avdigits.json",
        ),  # fmt: skip
        {
            budget: tuple(
                step
                for recipe in (
                    "image-avdigits",
                    "audio-avdigits",
                    "gmu-avdigits",
                    "central-avdigits",
                )  # fmt: skip
                for step in (
                    f"archlab train {recipe} --seeds 3 --out {RUNS}/{recipe}",
                    _record(recipe),
                )  # fmt: skip
            )
            + ("script results.py build",)
            for budget in BUDGETS
        },
        {"small": 10, "full": 10},
    ),
    "sagan": Claim(
        5,
        "Self-attention inside a GAN improves the generated images (SAGAN)",
        (
            "dcgan-mnist.json",
            "sagan-mnist.json",
            "dcgan-mnist-9000steps.json",
            "sagan-mnist-9000steps.json",
        ),  # fmt: skip
        {
            "small": tuple(
                step
                for recipe in ("dcgan-mnist", "sagan-mnist")
                for step in (
                    f"archlab train {recipe} --seeds 3 --out {RUNS}/{recipe}",
                    _record(recipe),
                )  # fmt: skip
            )
            + ("script results.py build",),
            "full": tuple(
                step
                for recipe in ("dcgan-mnist", "sagan-mnist")
                for step in (
                    f"archlab train {recipe} --seeds 3{LONGER} --out {RUNS}/{recipe}-9000steps",
                    _record(recipe, "9000steps", LONGER),
                )  # fmt: skip
            )
            + ("script results.py build",),
        },
        {"small": 37, "full": 110},
    ),
    "bert-vs-gpt": Claim(
        6,
        "Bidirectional context (BERT) beats left-to-right context (GPT) on classification; "
        "left-to-right is what generation needs",
        ("claim-bert-vs-gpt.json",),
        {
            # one fold, a quarter of the pretraining (the recipes' 3,000 MLM steps took 28 min
            # on one core, 2026-12-03), in runs of its own so the full budget never reuses them
            "small": (
                f"script bert_vs_gpt.py run --folds 0 {SMALL_PRETRAIN}",
                f"script bert_vs_gpt.py collect --folds 0 {SMALL_PRETRAIN}",
            ),
            "full": ("script bert_vs_gpt.py run", "script bert_vs_gpt.py collect"),
        },
        {"small": 22, "full": 500},
    ),
}


def verdict(claim: Claim, results: Path) -> str:
    """The verdict its results files record, or why there is none."""
    found = [results / name for name in claim.results if (results / name).is_file()]
    if not found:
        return "not measured yet"
    sentences = []
    for path in found:
        entry = json.loads(path.read_text("utf-8"))
        if entry.get("kind") == "claim":
            body = next(iter(entry["benchmarks"].values()))
            sentences.append(f"{body['summary']} ({path.name}, {entry['date']})")
    if not sentences:
        return "judged in the results book from " + ", ".join(p.name for p in found)
    text = "; ".join(sentences)
    return text if len(text) <= 400 else text[:400].rsplit(" ", 1)[0] + " ..."


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


def run_claims(name: str, budget: str, dry_run: bool = False) -> int:
    """Run the steps of ``name`` (or all) at ``budget``; the exit code of the first failure."""
    names = selected(name)
    if not (ROOT / "scripts").is_dir() and not dry_run:
        raise ArchlabError(
            "archlab claims runs the claim scripts of a source checkout (scripts/), which this "
            "installation does not have; clone the repository"
        )
    minutes = sum(CLAIMS[n].minutes[budget] for n in names)
    print(f"{', '.join(names)} at the {budget} budget: about {minutes} minutes here", flush=True)
    for n in names:
        for step in CLAIMS[n].steps[budget]:
            print(f"[{n}] {step}", flush=True)
            if dry_run:
                continue
            code = subprocess.call(command_of(step), cwd=ROOT)
            if code:
                print(f"[{n}] failed (exit {code}): {step}", file=sys.stderr)
                return code
    return 0


# ----- what the claim scripts share


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
    was interrupted starts over.  None starts after ``max_seconds``, so that a loop around
    the call (each under the machine's CPU lock) lets other jobs in between."""
    from archlab.run import train

    started = time.perf_counter()
    for label, recipe, overrides, run_dir in runs:
        if done(run_dir):
            continue
        if time.perf_counter() - started > max_seconds:
            print("time is up for this chunk; run again for the rest", flush=True)
            return
        shutil.rmtree(run_dir, ignore_errors=True)
        print(label, flush=True)
        train(recipe, overrides, out=str(run_dir), progress=False)


def wilcoxon_p(a: list[float], b: list[float]) -> float:
    """Wilcoxon's signed-rank test of paired figures (two-sided; zero differences split
    between the signs): its p, and 1.0 when every pair is equal."""
    from scipy.stats import wilcoxon

    if all(x == y for x, y in zip(a, b, strict=True)):
        return 1.0
    return float(wilcoxon(a, b, zero_method="zsplit").pvalue)
