"""torchrun with 2 CPU processes (gloo) computes what 1 process computes."""

import json
import os
import subprocess
import sys

import pytest

from archlab.errors import ConfigError
from archlab.run import train
from tests.conftest import TINY_GPT


def train_losses(run_dir) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["split"] == "train"]


def run_logged(command: list[str], log_path) -> int:
    """Run with output to a file: torchrun's helpers can hold a pipe open after it exits."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.run(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=300,
            check=False,
        )
    return proc.returncode


def assert_two_processes_match_one(recipe: str, sets: list[str], tmp_path, steps: int) -> None:
    """Train ``recipe`` in 1 process and in 2 (same global batch); the train losses agree."""
    args = ["-m", "archlab", "train", recipe, *[f"--set={s}" for s in sets]]
    one = [sys.executable, *args, "--out", str(tmp_path / "one")]
    assert run_logged(one, tmp_path / "one.log") == 0, (tmp_path / "one.log").read_text()
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = [*launcher, *args, "--out", str(tmp_path / "two")]
    assert run_logged(two, tmp_path / "two.log") == 0, (tmp_path / "two.log").read_text()[-3000:]
    printed = (tmp_path / "two.log").read_text().splitlines()
    assert sum(line.startswith('{"val"') for line in printed) == 1  # rank 0 speaks for both
    single, parallel = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert len(single) == len(parallel) == steps
    for a, b in zip(single, parallel, strict=True):
        assert abs(a - b) < 1e-5, (single, parallel)


def test_two_processes_match_one_with_the_same_global_batch(shakespeare, tmp_path) -> None:
    sets = [*TINY_GPT, "trainer.max_steps=4", "trainer.eval_every=4", "trainer.precision=fp32"]
    assert_two_processes_match_one("gpt-shakespeare-char", sets, tmp_path, steps=4)


def test_bert_classifier_trains_data_parallel(mr, tmp_path) -> None:
    """The classifier's forward gives the logits, so DDP averages every gradient.

    Dropout is off: each process draws dropout masks for its own rows only.
    """
    sets = [
        "model.hidden_size=32",
        "model.n_layer=1",
        "model.n_head=2",
        "model.d_ff=64",
        "model.dropout=0",
        "model.attn_dropout=0",
        "trainer.max_steps=4",
        "trainer.eval_every=4",
        "trainer.log_every=1",
        "trainer.batch_size=16",
        "trainer.precision=fp32",
    ]
    assert_two_processes_match_one("bert-mr", sets, tmp_path, steps=4)


def test_a_graph_task_refuses_torchrun(tmp_path, monkeypatch) -> None:
    """One graph per batch cannot be split by rows: one clear error before any process group."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="node_classification task trains in one process"):
        train("gcn-karate", ["trainer.max_steps=2"], out=str(tmp_path / "run"), progress=False)
