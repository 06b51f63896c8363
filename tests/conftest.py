"""Shared test fixtures: deterministic seeds, and the real data root when it is there."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def data_root() -> Path | None:
    root = os.environ.get("ARCHLAB_DATA")
    return Path(root) if root else None


def require_data(relative: str) -> Path:
    """The data root, if it holds ``relative``; otherwise the test is skipped, saying why."""
    root = data_root()
    if root is None or not (root / relative).is_file():
        pytest.skip(f"real data: set ARCHLAB_DATA to a folder with {relative}")
    return root


@pytest.fixture
def shakespeare() -> Path:
    return require_data("shakespeare/input.txt")


# a GPT small enough to train a few steps in a second or two; its precision is given, as
# tests compare fresh runs and must not depend on the precision probe (tests/test_precision.py)
TINY_GPT = [
    "trainer.precision=fp32",
    "data.block_size=32",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "trainer.batch_size=8",
    "trainer.warmup_steps=2",
    "trainer.log_every=1",
]


@pytest.fixture
def multi30k() -> Path:
    return require_data("multi30k/train.de.gz")


# a Transformer and data slice small enough to train a few steps quickly
TINY_TRANSLATION = [
    "data.max_sentences=3000",
    "data.max_eval_sentences=100",
    "data.vocab_size=1000",
    "data.beam=2",
    "model.d_model=32",
    "model.n_head=2",
    "model.n_encoder_layers=1",
    "model.n_decoder_layers=1",
    "model.d_ff=64",
    "trainer.batch_size=32",
    "trainer.eval_batch_size=256",
    "trainer.warmup_steps=5",
    "trainer.lr=3e-3",
    "trainer.log_every=5",
]


@pytest.fixture
def mr() -> Path:
    return require_data("mr/rt-polarity.pos")


@pytest.fixture
def planetoid() -> Path:
    return require_data("planetoid/ind.cora.graph")


def cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m archlab ARGS`` in a fresh process, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "archlab", *args], capture_output=True, text=True, check=False
    )


# ----- the server's tests: tiny runs of every kind, trained once per session -----


@pytest.fixture(scope="session")
def serve_root(tmp_path_factory) -> Path:
    """Where the tiny runs go: $ARCHLAB_TEST_RUNS keeps them from one session to the next
    (each is trained when missing), else a fresh temporary folder."""
    kept = os.environ.get("ARCHLAB_TEST_RUNS")
    if kept:
        Path(kept).mkdir(parents=True, exist_ok=True)
        return Path(kept)
    return tmp_path_factory.mktemp("serve-runs")


@pytest.fixture(scope="session")
def serve_run(serve_root):
    """``serve_run("gpt")``: the tiny run of that kind (tests/serve_runs.py), trained once."""
    from tests.serve_runs import tiny_run

    return lambda name: tiny_run(name, serve_root)
