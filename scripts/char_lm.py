"""The character LM on tiny Shakespeare: LSTM, TCN and GPT at one parameter count and one
wall-clock budget, validation loss side by side.

Each model trains with the recipe ``gpt-shakespeare-char``'s data and trainer settings
(windows of 64 characters, batch 12, AdamW at 3e-3 with warm-up and cosine decay to
1e-4, weight decay 0.1, clipping 1.0); only the model differs: the recipe's GPT
(4 layers of 128), a two-layer LSTM (``seq_lstm``) and a TCN of 4 levels with kernel 3
(receptive field 61 characters), both embedding characters into 64 features, their
widths chosen to come nearest the GPT's parameter count (about 810K).

Equal wall-clock: ``run`` first finds the precision ``auto`` picks for each model here
(a 2-step run), then times each model's training step in that precision, the three
taken in turn in one process (so that whatever else the machine runs weighs on all
alike), and gives each the number of steps that fill ``--minutes`` at its rate.  Each
run is so an ordinary ``archlab train`` (deterministic, resumable); the record gives
the training seconds each actually took and its validation loss along the way.

    python scripts/char_lm.py plan                 # the models, their sizes and commands
    python scripts/char_lm.py run [--minutes 4]    # time, then train the models not yet run
    python scripts/char_lm.py collect              # results/claim-char-lm.json, the plot
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # this checkout's archlab, wherever it is installed

import archlab  # noqa: E402
from archlab.claims import done, start_over, write_claim  # noqa: E402
from archlab.config import read_recipe  # noqa: E402

RECIPE = "gpt-shakespeare-char"
OUT = ROOT / "results" / "claim-char-lm.json"
IMG = ROOT / "docs" / "img"
RUNS = ROOT / "runs" / "char-lm"
MODELS = {"lstm": "seq_lstm", "tcn": "tcn", "gpt": "gpt"}
EMBED = 64  # the LSTM's and the TCN's character embedding
VOCAB = 65  # tiny Shakespeare's characters
TIMING_STEPS, TIMING_ROUNDS = 10, 5  # each model's timed steps per round, and the rounds
EVALS = 12  # validation points along each run


def recipe_gpt() -> dict:
    """The recipe's GPT size keys (tests shrink them, and every model's budget with them)."""
    model = read_recipe(RECIPE)["model"]
    return {k: model[k] for k in ("n_layer", "n_head", "n_embd")}


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


@functools.cache
def budget(gpt: tuple) -> int:
    """The GPT's parameter count (its table of 64 positions included)."""
    return parameters(archlab.create_model("gpt", **dict(gpt), vocab_size=VOCAB, block_size=64))


def size_values(model: str, gpt: dict) -> dict:
    """The model's size keys that bring its parameter count nearest the GPT's."""
    if model == "gpt":
        return dict(gpt)
    target = budget(tuple(sorted(gpt.items())))

    def values(width: int) -> dict:
        if model == "lstm":
            return {"in_dim": EMBED, "hidden_size": width, "n_layer": 2}
        return {"in_dim": EMBED, "channels": [width] * 4, "kernel_size": 3}

    def count(width: int) -> int:
        net = archlab.create_model(MODELS[model], **values(width), vocab_size=VOCAB, out_dim=VOCAB)
        return parameters(net)

    low, high = 1, 2048  # the first width at or over the budget
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if count(mid) < target else (low, mid)
    best = min((low - 1, low), key=lambda w: abs(count(w) - target) if w else math.inf)
    return values(best)


def model_sets(model: str, gpt: dict) -> list[str]:
    sets = {} if model == "gpt" else {"model.name": MODELS[model]}
    for key, value in size_values(model, gpt).items():
        sets[f"model.{key}"] = json.dumps(value, separators=(",", ":"))
    return [f"{k}={v}" for k, v in sets.items()]


def records(run_dir: Path, split: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text("utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def read_config(run_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text("utf-8"))


def precision(model: str, args) -> str:
    """The precision ``auto`` picks for the model in the recipe here (a 2-step run, kept)."""
    from archlab.run import train

    path = args.runs / f"{model}-precision"
    if not done(path):
        start_over(path)
        sets = [*args.set, *model_sets(model, args.gpt), "trainer.max_steps=2"]
        train(RECIPE, [*sets, "trainer.eval_every=2"], out=str(path), progress=False)
    return read_config(path)["trainer"]["precision"]


def step_rates(models: list[str], precisions: dict[str, str], args) -> dict[str, float]:
    """Training steps/s of each model, timed in rounds that take the models in turn.

    Each step is the trainer's: the task's batch and loss, autocast in the model's
    precision, clipping, the recipe's optimizer.  Taking the models in turn, in one
    process, makes whatever else the machine runs weigh on all of them alike.
    """
    import time

    import torch

    from archlab.config import apply_overrides, read_recipe
    from archlab.run import resolve
    from archlab.train.trainer import make_optimizer

    steppers = {}
    for model in models:
        sets = [*args.set, *model_sets(model, args.gpt), f"trainer.precision={precisions[model]}"]
        recipe = resolve(apply_overrides(read_recipe(RECIPE), sets))
        recipe.task.setup()
        torch.manual_seed(0)
        net, _ = recipe.build_model()
        cfg = recipe.trainer
        optimizer = make_optimizer(net, cfg, torch.device("cpu"))
        dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32

        def step(i: int, net=net, task=recipe.task, cfg=cfg, optimizer=optimizer, dtype=dtype):
            with torch.autocast("cpu", dtype, enabled=dtype != torch.float32):
                loss = task.loss(net, task.train_batch(i, cfg.batch_size, cfg.seed))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step(0)  # warm-up
        steppers[model] = step
    seconds: dict[str, list[float]] = {m: [] for m in models}
    for r in range(args.timing_rounds):
        for model in models[:: -1 if r % 2 else 1]:
            started = time.perf_counter()
            for i in range(args.timing_steps):
                steppers[model](i)
            seconds[model].append((time.perf_counter() - started) / args.timing_steps)
    return {m: 1 / statistics.median(seconds[m]) for m in models}


def cmd_plan(args) -> None:
    print(f"each model at the parameter count of {RECIPE}'s GPT, trained for {args.minutes} min")
    for model in MODELS:
        sets = [*args.set, *model_sets(model, args.gpt)]
        state = "done" if done(args.runs / model) else "to run"
        print(f"{state:<7} archlab train {RECIPE} " + " ".join(f"--set {s}" for s in sets))


def cmd_run(args) -> None:
    """Time the models, then train each not yet run for the steps that fill the budget."""
    from archlab.run import train

    todo = [m for m in args.models or MODELS if not done(args.runs / m)]
    if not todo:
        return
    precisions = {m: precision(m, args) for m in MODELS}
    rates = step_rates(list(MODELS), precisions, args)  # all three, for the record
    timing = args.runs / "timing.json"
    args.runs.mkdir(parents=True, exist_ok=True)
    timing.write_text(
        json.dumps(
            {"steps_per_s": rates, "precision": precisions, "minutes": args.minutes}, indent=2
        )
    )
    for model in todo:
        steps = max(1, round(args.minutes * 60 * rates[model]))
        every = max(1, steps // EVALS)
        print(
            f"{model}: {rates[model]:.2f} steps/s in {precisions[model]}, "
            f"{steps} steps for {args.minutes:g} min",
            flush=True,
        )
        path = args.runs / model
        start_over(path)  # an interrupted run starts over: its steps were measured afresh
        sets = [
            *args.set,
            *model_sets(model, args.gpt),
            f"trainer.max_steps={steps}",
            f"trainer.eval_every={every}",
            f"trainer.checkpoint_every={every}",
            f"trainer.precision={precisions[model]}",
        ]
        train(RECIPE, sets, out=str(path), progress=False)


def read_model(model: str, args) -> dict | None:
    path = args.runs / model
    if not done(path):
        return None
    results = json.loads((path / "results.json").read_text("utf-8"))
    seconds, steps = results["train"]["seconds"], results["train"]["steps"]
    config = read_config(path)
    loaded = archlab.load(path)
    return {
        "val_loss": results["val"]["loss"],
        "parameters": parameters(loaded.model),
        "steps": steps,
        "train_seconds": seconds,
        "precision": config["trainer"]["precision"],
        "tokens_per_s": steps
        * config["trainer"]["batch_size"]
        * config["data"]["block_size"]
        / max(seconds, 0.01),  # a tiny run can round to 0 s
        "model": {k: v for k, v in config["model"].items() if k in size_keys(model)},
        # validation loss at each evaluation, against training seconds at the run's mean rate
        "curve": [[round(r["step"] * seconds / steps, 1), r["loss"]] for r in records(path, "val")],
    }


def at_seconds(curve: list[list[float]], seconds: float) -> tuple[float, float | None]:
    """The last evaluation at or before ``seconds`` (one second's grace): (seconds, loss)."""
    points = [(sec, loss) for sec, loss in curve if sec <= seconds + 1]
    return points[-1] if points else (seconds, None)


def size_keys(model: str) -> set[str]:
    return {"name", *size_values(model, recipe_gpt())}


def plot(table: dict, img: Path, minutes: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for model, row in table.items():
        seconds, losses = zip(*row["curve"], strict=True)
        label = f"{model} ({row['parameters'] / 1e6:.2f}M, {row['steps']:,} steps)"
        ax.plot(seconds, losses, "o-", ms=3, label=label)
    ax.set_xlabel("training seconds (2 CPU cores)")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_title(f"tiny Shakespeare: equal parameters, {minutes:g} min each", loc="left")
    ax.grid(color="#dddddd", lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    img.mkdir(parents=True, exist_ok=True)
    name = "char-lm.png"
    fig.savefig(img / name, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return name


def cmd_collect(args) -> None:
    table = {m: row for m in MODELS if (row := read_model(m, args)) is not None}
    if not table:
        sys.exit("no model has run yet")
    ranked = sorted(table, key=lambda m: table[m]["val_loss"])
    parts = [
        f"{m} {table[m]['val_loss']:.3f} ({table[m]['parameters'] / 1e6:.2f}M parameters, "
        f"{table[m]['steps']:,} steps in {table[m]['train_seconds']:.0f} s, "
        f"{table[m]['tokens_per_s']:,.0f} tokens/s, {table[m]['precision']})"
        for m in ranked
    ]
    summary = f"validation loss at equal parameters and wall clock: {'; '.join(parts)}"
    if len(ranked) > 1:
        gap = table[ranked[1]]["val_loss"] - table[ranked[0]]["val_loss"]
        summary += f"; {ranked[0]} is best, by {gap:.3f} nats per character"
        # the runs' seconds differ from the budget as the machine's load changed: compare
        # also at the shortest run's length, each model's last evaluation by then
        shortest = min(row["train_seconds"] for row in table.values())
        at = {m: at_seconds(table[m]["curve"], shortest) for m in ranked}
        summary += f"; by {shortest:.0f} s, the shortest run's time: " + ", ".join(
            f"{m} {loss:.3f} (at {sec:.0f} s)" for m, (sec, loss) in at.items() if loss is not None
        )
    missing = [m for m in MODELS if m not in table]
    timing = args.runs / "timing.json"
    budget = args.minutes
    if timing.exists():  # the rates the step counts were set from, and the budget
        timed = json.loads(timing.read_text("utf-8"))
        budget = timed.get("minutes", budget)
        for model, rate in timed["steps_per_s"].items():
            if model in table:
                table[model]["timed_steps_per_s"] = rate
    run = "python scripts/char_lm.py run" + (f" --minutes {budget:g}" if budget != 4.0 else "")
    image = plot(table, args.img, budget)
    body = {
        "summary": summary,
        "reference": f"the articles: Transformers train faster than recurrent networks; "
        f"{RECIPE}'s data and trainer settings for every model (windows of 64 "
        "characters, batch 12), each model sized to the GPT's parameter count and "
        f"trained for the steps that fill the same time here ({budget:g} min), "
        "in the precision trainer.precision=auto picks for it here; the validation "
        "loss is over the whole validation split, of the best of the run's evaluations",
        "results": table,
        "missing": missing,
        "images": [f"docs/img/{image}"],
    }
    write_claim(args.out, "claim-char-lm", f"{run} && python scripts/char_lm.py collect", body)
    print(f"wrote {args.out} and {image}")
    print(summary)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("plan", cmd_plan), ("run", cmd_run), ("collect", cmd_collect)):
        p = sub.add_parser(name, help=fn.__doc__)
        p.set_defaults(func=fn)
        p.add_argument("--models", nargs="*", choices=list(MODELS))
        p.add_argument("--minutes", type=float, default=4.0, help="training time per model")
        p.add_argument("--timing-steps", type=int, default=TIMING_STEPS)
        p.add_argument("--timing-rounds", type=int, default=TIMING_ROUNDS)
        p.add_argument("--set", action="append", default=[], help="an override for every run")
        p.add_argument("--runs", type=Path, default=RUNS, help="where the runs go")
        p.add_argument("--out", type=Path, default=OUT)
        p.add_argument("--img", type=Path, default=IMG)
    args = parser.parse_args(argv)
    args.gpt = recipe_gpt()
    args.func(args)


if __name__ == "__main__":
    main()
