"""The demo's training (``make demo``: gpt-shakespeare-char) against its raw step loop.

Runs ``archlab train gpt-shakespeare-char`` in a fresh process and times the whole
command (start-up, data, 2,000 steps, the evaluations, the files), then times the
step loop of :mod:`archlab.bench.gpt` (forward, cross-entropy, backward, fused
AdamW, nothing else) on the same model and batch shape, in the precision the run
trained in (its config.yaml).  The overhead is

    wall / (steps x tokens per step / raw tokens/s + evaluation seconds)

where the evaluation seconds are the run's own (results.json): those during training
and the final ones (none when the kept model's validation metrics are reused).
The target is at most 1.05.  ``--quick`` (a smoke test) trains 20 steps and evaluates
on 1 % of the text.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from archlab.bench.gpt import BATCH, BLOCK, _train_rate
from archlab.errors import ArchlabError
from archlab.train.checkpoint import load_model

RECIPE = "gpt-shakespeare-char"


def _raw_rate(model, batch_size: int, block: int, bf16: bool, steps: int, repeats: int) -> float:
    """Median tokens/s of the raw step loop, ``repeats`` times ``steps`` steps."""
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, vocab, (8, batch_size, block + 1), generator=g)
    batches = [(b[:, :-1].contiguous(), b[:, 1:].contiguous()) for b in data]
    rates = [_train_rate(model, model, batches, steps, bf16=bf16) for _ in range(repeats)]
    return statistics.median(rates) * (batch_size * block) / (BATCH * BLOCK)  # it counts B x T


def run(quick: bool = False) -> dict:
    quick_sets = ["trainer.max_steps=20", "trainer.eval_every=10", "data.val_fraction=0.01"]
    sets = [f"--set={s}" for s in quick_sets] if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        command = [sys.executable, "-m", "archlab", "train", RECIPE, "--out", str(out), *sets]
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise ArchlabError(f"the demo failed: {proc.stderr.strip().splitlines()[-1:]}")
        results = json.loads((out / "results.json").read_text("utf-8"))
        config = yaml.safe_load((out / "config.yaml").read_text("utf-8"))
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        model = load_model(out)
    trainer, train = config["trainer"], results["train"]
    batch_size, block = trainer["batch_size"], config["data"]["block_size"]
    precision = trainer["precision"]
    evaluations = sum(r["split"] == "val" for r in records)
    eval_seconds = train["eval_seconds"] + train["final_eval_seconds"]
    steps, repeats = (5, 1) if quick else (20, 9)
    rate = _raw_rate(model, batch_size, block, precision == "bf16", steps, repeats)
    raw_train = train["steps"] * batch_size * block / rate
    expected = raw_train + eval_seconds
    result = {
        "command": " ".join(["archlab train", RECIPE, *(s.removeprefix("--set=") for s in sets)]),
        "precision": precision,
        "wall_seconds": round(wall, 2),
        "train_seconds": train["seconds"],
        "eval_seconds": round(eval_seconds, 2),
        "evaluations": evaluations,
        "final_eval_seconds": train["final_eval_seconds"],
        "raw_tokens_per_s": round(rate),
        "raw_train_seconds": round(raw_train, 2),
        "step_loop_overhead": round(train["seconds"] / raw_train, 3),
        "overhead": round(wall / expected, 3),
        "target": 1.05,
        "reference": "bench.gpt's raw step loop (forward, loss, backward, fused AdamW), same "
        "model, batch and precision, plus the run's own evaluation time",
        "summary": (
            f"{RECIPE}: {wall:.0f} s wall ({precision}); raw loop {raw_train:.0f} s + "
            f"evaluations {eval_seconds:.0f} s = {expected:.0f} s; overhead "
            f"{wall / expected:.3f}x"
        ),
    }
    threads = torch.get_num_threads()
    print(f"demo  ({RECIPE}, {train['steps']} steps, {precision}; {threads} threads)")
    print(f"  {'wall time of archlab train':<36}{wall:8.1f} s")
    print(f"  {'  in training steps':<36}{train['seconds']:8.1f} s")
    print(f"  {'  in evaluations (with the final)':<36}{eval_seconds:8.1f} s")
    print(f"  {f'raw step loop ({rate:,.0f} tok/s)':<36}{raw_train:8.1f} s")
    print(f"  {'raw loop + evaluations':<36}{expected:8.1f} s")
    print(f"  {'overhead (target <= 1.05)':<36}{wall / expected:8.3f}x")
    return result
