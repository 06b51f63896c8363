"""The long-range claim: test error against sequence length, and training tokens/s, per model.

The articles claim the Transformer captures long-range dependencies better than recurrent
networks and trains faster because it is not sequential.  Here LSTM, GRU, TCN and the
causal Transformer (``seq_transformer``) train at one parameter budget per task, with the
same optimiser and the same number of steps, on the TCN paper's adding problem and copy
memory at several lengths T; each cell (task, T, model) is one ``archlab train`` of the
task's recipe (``tcn-adding``, ``tcn-copy``) with ``--set`` overrides, in its own run
directory, so the sweep resumes where it stopped and each chunk holds the CPU briefly.

    python scripts/long_range.py plan                     # the cells and their overrides
    python scripts/long_range.py probe --T 1000           # steps/s per model, to set a budget
    python scripts/long_range.py run [--max-seconds 480]  # train the cells not yet run
    python scripts/long_range.py collect                  # results/claim-long-range.json, plots

The budget: ``probe --T 1000`` measured, on 1 thread of the 2-core machine beside
another training, a step of batch 32 at T = 1000 at 0.45 s (LSTM), 0.70 s (GRU),
0.40 s (TCN), 1.85 s (Transformer) on the adding problem's 70K parameters and 0.19,
0.32, 0.18, 2.27 s on copy memory's 16K; summed over every cell (the RNNs and TCN
scale with T, attention faster), one step of the whole sweep costs about 12 s, so
200 steps per cell keep it near 40 minutes.

``run`` starts no new cell after ``--max-seconds``; a loop around it, each call under
the machine's CPU lock, lets other jobs in between.  ``collect`` writes the verdicts:
per rival model, whether the Transformer's error is lower at long T (holds / does not
hold / not supported at this budget, when neither learns the task) and how its tokens/s
compare.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # this checkout's archlab, wherever it is installed

import torch  # noqa: E402

import archlab  # noqa: E402
from archlab.claims import (  # noqa: E402
    done,
    parse_script_args,
    script_command,
    train_missing,
    write_claim,
)

OUT = ROOT / "results" / "claim-long-range.json"
IMG = ROOT / "docs" / "img"
RUNS = ROOT / "runs" / "long-range"

MODELS = {"lstm": "seq_lstm", "gru": "seq_gru", "tcn": "tcn", "transformer": "seq_transformer"}
TASKS = {
    # recipe, lengths, (in_dim, out_dim), parameter budget, metric, the trivial score at T
    "adding": {
        "recipe": "tcn-adding",
        "lengths": (100, 200, 400, 600, 1000),
        "dims": (2, 1),
        "budget": 70_000,
        "metric": "mse",
        "trivial": lambda T: 1 / 6,  # predicting 1: Var(u_a + u_b) = 2/12
        "steps": 200,
    },
    "copy": {
        "recipe": "tcn-copy",
        "lengths": (100, 300, 500, 1000),
        "dims": (1, 10),
        "budget": 16_000,
        "metric": "loss",
        "trivial": lambda T: 10 * math.log(8) / (T + 20),  # blanks, then a uniform digit
        "steps": 200,
    },
}
BATCH = 32
LEARNED = 0.1  # a model has learned a cell when its error is below 10 % of the trivial one


def parameters(model: torch.nn.Module) -> int:
    """Trainable parameters, less a learned position table (it grows with T, not capacity)."""
    n = sum(p.numel() for p in model.parameters())
    wpe = getattr(model, "wpe", None)
    return n - (sum(p.numel() for p in wpe.parameters()) if wpe is not None else 0)


@functools.cache
def size_values(model: str, task: str) -> dict:
    """The model's size keys that come nearest the task's parameter budget."""
    in_dim, out_dim = TASKS[task]["dims"]
    budget = TASKS[task]["budget"]

    def values(width: int) -> dict:
        if model in ("lstm", "gru"):
            return {"hidden_size": width, "n_layer": 1}
        if model == "tcn":
            return {"channels": [width] * 8, "kernel_size": 8}
        return {"n_embd": 4 * width, "n_head": 4, "n_layer": 2}

    def count(width: int) -> int:
        kw = dict(values(width), in_dim=in_dim, out_dim=out_dim)
        if model == "transformer":
            kw["max_len"] = 1
        return parameters(archlab.create_model(MODELS[model], **kw))

    low, high = 1, 512  # count grows with width: the first width at or over the budget
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if count(mid) < budget else (low, mid)
    best = min((low - 1, low), key=lambda w: abs(count(w) - budget) if w else math.inf)
    return values(best)


def overrides(task: str, T: int, model: str, steps: int) -> list[str]:
    """The ``--set`` overrides of the task's recipe for one cell."""
    n_train = min(steps * BATCH, 20_000)
    sets = {
        "data.T": T,
        "data.n_train": n_train,
        "data.n_val": 250,
        "data.n_test": 1000,
        "model.name": MODELS[model],
        "trainer.max_steps": steps,
        "trainer.eval_every": steps,
        "trainer.checkpoint_every": steps,
        "trainer.batch_size": BATCH,
        "trainer.log_every": 25,
    }
    for key, value in size_values(model, task).items():
        compact = json.dumps(value, separators=(",", ":"))
        sets[f"model.{key}"] = compact if isinstance(value, list) else value
    if model == "transformer":
        sets["model.max_len"] = T + 20 if task == "copy" else T
    return [f"{k}={v}" for k, v in sets.items()]


def cells(tasks=None, lengths=None, models=None) -> list[tuple[str, int, str]]:
    """(task, T, model) to run, shortest T first, so that a partial sweep covers every model."""
    return sorted(
        (
            (task, T, model)
            for task, spec in TASKS.items()
            if not tasks or task in tasks
            for T in lengths or spec["lengths"]
            for model in MODELS
            if not models or model in models
        ),
        key=lambda cell: (cell[1], list(TASKS).index(cell[0]), list(MODELS).index(cell[2])),
    )


def run_dir(task: str, T: int, model: str, runs: Path) -> Path:
    return runs / f"{task}-T{T}-{model}"


def cmd_plan(args) -> None:
    for task, T, model in cells(args.tasks, args.T, args.models):
        sets = overrides(task, T, model, args.steps or TASKS[task]["steps"])
        state = "done" if done(run_dir(task, T, model, args.runs)) else "to run"
        print(f"{state:<7} archlab train {TASKS[task]['recipe']} --set " + " --set ".join(sets))


def cmd_probe(args) -> None:
    """Training steps/s of each model at each task's budget, batch 32, at the given T."""
    import torch.nn.functional as F

    for task in args.tasks or TASKS:
        in_dim, out_dim = TASKS[task]["dims"]
        for T in args.T or [1000]:
            length = T + 20 if task == "copy" else T
            x = torch.randn(BATCH, length, in_dim)
            for model in args.models or MODELS:
                kw = dict(size_values(model, task), in_dim=in_dim, out_dim=out_dim)
                if model == "transformer":
                    kw["max_len"] = length
                net = archlab.create_model(MODELS[model], **kw)
                opt = torch.optim.Adam(net.parameters(), lr=1e-3)
                seconds = []
                for _ in range(3):
                    start = time.perf_counter()
                    loss = F.mse_loss(net(x), torch.zeros(BATCH, length, out_dim))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    seconds.append(time.perf_counter() - start)
                rate = 1 / min(seconds[1:])
                print(
                    f"{task:<7} T={T:<5} {model:<12} {parameters(net):>7,} params  "
                    f"{rate:6.2f} steps/s  {rate * BATCH * length:>9,.0f} tokens/s",
                    flush=True,
                )


def cmd_run(args) -> None:
    steps = args.steps

    def label(task: str, T: int, model: str) -> str:
        return f"{task} T={T} {model}: {steps or TASKS[task]['steps']} steps"

    train_missing(
        (
            (
                label(task, T, model),
                TASKS[task]["recipe"],
                overrides(task, T, model, steps or TASKS[task]["steps"]),
                run_dir(task, T, model, args.runs),
            )
            for task, T, model in cells(args.tasks, args.T, args.models)
        ),  # fmt: skip
        args.max_seconds,
    )


def cmd_missing(args) -> None:
    """Exit 1 while some cell has no result, 0 when all have."""
    left = [c for c in cells(args.tasks, args.T, args.models) if not done(run_dir(*c, args.runs))]
    print(f"{len(left)} cells left")
    sys.exit(1 if left else 0)


def read_cell(task: str, T: int, model: str, runs: Path) -> dict | None:
    path = run_dir(task, T, model, runs)
    if not done(path):
        return None
    results = json.loads((path / "results.json").read_text("utf-8"))
    loaded = archlab.load(path)
    train = results["train"]
    length = T + 20 if task == "copy" else T
    cell = {
        "error": results["test"][TASKS[task]["metric"]],
        "trivial": TASKS[task]["trivial"](T),
        "steps": train["steps"],
        "train_seconds": train["seconds"],
        "tokens_per_s": train["steps"] * BATCH * length / train["seconds"],
        "parameters": parameters(loaded.model),
        "parameters_all": sum(p.numel() for p in loaded.model.parameters()),
    }
    if "accuracy" in results["test"]:
        cell["accuracy"] = results["test"]["accuracy"]
    return cell


def learned(cell: dict) -> bool:
    return cell["error"] < LEARNED * cell["trivial"]


def verdict(rival: str, table: dict) -> str:
    """One sentence: does the Transformer beat ``rival`` at long range, and train faster?"""
    parts, outcomes = [], []
    for task, by_model in table.items():
        ours, theirs = by_model.get("transformer", {}), by_model.get(rival, {})
        lengths = sorted(set(ours) & set(theirs), key=int)
        if not lengths:
            continue
        longest = lengths[-1]
        a, b = ours[longest], theirs[longest]
        n_a = sum(learned(ours[T]) for T in lengths)
        n_b = sum(learned(theirs[T]) for T in lengths)
        if n_a == n_b == 0:
            outcome = "not supported at this budget"
        elif n_a > n_b or (n_a == n_b and a["error"] < b["error"]):
            outcome = "holds"
        else:
            outcome = "does not hold"
        outcomes.append(outcome)
        speed = a["tokens_per_s"] / b["tokens_per_s"]
        parts.append(
            f"{task}: {outcome} (T = {longest}: Transformer {a['error']:.3g} vs {rival} "
            f"{b['error']:.3g}, trivial {a['trivial']:.3g}; learned at {n_a} vs {n_b} of "
            f"{len(lengths)} lengths; {speed:.2f}x its tokens/s)"
        )
    if not parts:
        return f"{rival}: no cells recorded"
    return f"Transformer vs {rival} -- " + "; ".join(parts)


def plot(table: dict, img: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for task, by_model in table.items():
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3))
        for model, by_T in by_model.items():
            Ts = sorted(by_T, key=int)
            ax.plot([int(T) for T in Ts], [by_T[T]["error"] for T in Ts], "o-", label=model)
            bx.plot([int(T) for T in Ts], [by_T[T]["tokens_per_s"] for T in Ts], "o-", label=model)
        lengths = TASKS[task]["lengths"]
        trivial = [TASKS[task]["trivial"](T) for T in lengths]
        ax.plot(lengths, trivial, "k--", lw=1, label="trivial")
        ax.set_yscale("log")
        ax.set_xlabel("T")
        ax.set_ylabel(f"test {'MSE' if task == 'adding' else 'cross-entropy'}")
        ax.set_title(f"{task}: test error vs T (same parameters, same steps)", loc="left")
        ax.legend(fontsize=7)
        bx.set_xlabel("T")
        bx.set_ylabel("training tokens/s")
        bx.set_title("training throughput", loc="left")
        for a in (ax, bx):
            a.grid(color="#dddddd", lw=0.5)
        fig.tight_layout()
        img.mkdir(parents=True, exist_ok=True)
        name = f"long-range-{task}.png"
        fig.savefig(img / name, dpi=100, metadata={"Software": None})
        plt.close(fig)
        names.append(name)
    return names


def cmd_collect(args) -> None:
    table: dict = {}
    for task, T, model in cells(args.tasks, args.T, args.models):
        cell = read_cell(task, T, model, args.runs)
        if cell is not None:
            table.setdefault(task, {}).setdefault(model, {})[str(T)] = cell
    if not table:
        sys.exit("no cell has run yet")
    images = plot(table, args.img)
    verdicts = {m: verdict(m, table) for m in MODELS if m != "transformer"}
    steps = sorted({c["steps"] for t in table.values() for m in t.values() for c in m.values()})
    missing = [
        f"{t}-T{T}-{m}"
        for t, T, m in cells(args.tasks, args.T, args.models)
        if str(T) not in table.get(t, {}).get(m, {})
    ]
    budget = {t: TASKS[t]["budget"] for t in table}
    body = {
        "summary": "; ".join(verdicts.values()),
        "reference": "the articles: the Transformer captures long-range dependencies "
        "better than recurrent networks and trains faster (not sequential); the TCN "
        "paper's adding problem and copy memory, each model at one parameter budget "
        f"per task ({', '.join(f'{t} {b:,}' for t, b in budget.items())}; the "
        "Transformer's position table not counted), "
        f"{' / '.join(map(str, steps))} steps of batch {BATCH}, the recipe's optimiser "
        f"for every model; 'learned' means error below {LEARNED:.0%} of the trivial one",
        "verdicts": verdicts,
        "results": table,
        "missing": missing,
        "images": [f"docs/img/{name}" for name in images],
    }
    run_only = []  # the runs' steps, where they were not the tasks' and collect was not told
    if not args.steps and len(steps) == 1 and any(TASKS[t]["steps"] != steps[0] for t in table):
        run_only = ["--steps", str(steps[0])]
    command = script_command("long_range.py", args.argv, run_only)
    write_claim(args.out, "claim-long-range", command, body)
    print(f"wrote {args.out} and {', '.join(images)}")
    for sentence in verdicts.values():
        print(sentence)
    if missing:
        print(f"{len(missing)} cells not run: {', '.join(missing)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (
        ("plan", cmd_plan),
        ("probe", cmd_probe),
        ("run", cmd_run),
        ("missing", cmd_missing),
        ("collect", cmd_collect),
    ):
        p = sub.add_parser(name, help=fn.__doc__)
        p.set_defaults(func=fn)
        p.add_argument("--tasks", nargs="*", choices=list(TASKS))
        p.add_argument("--T", nargs="*", type=int, help="lengths (default: the task's)")
        p.add_argument("--models", nargs="*", choices=list(MODELS))
        p.add_argument("--steps", type=int, help="training steps per cell (default: the task's)")
        p.add_argument("--runs", type=Path, default=RUNS, help="where the cells' runs go")
        p.add_argument("--max-seconds", type=float, default=math.inf)
        p.add_argument("--out", type=Path, default=OUT)
        p.add_argument("--img", type=Path, default=IMG)
    args = parse_script_args(parser, argv)
    args.func(args)


if __name__ == "__main__":
    main()
