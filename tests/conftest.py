"""Shared test fixtures: deterministic seeds, and the real data root when it is there."""

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def data_root() -> Path | None:
    root = os.environ.get("ARCHLAB_DATA")
    return Path(root) if root else None


@pytest.fixture
def shakespeare() -> Path:
    """The data root, if it holds tiny Shakespeare; otherwise the test is skipped."""
    root = data_root()
    if root is None or not (root / "shakespeare/input.txt").is_file():
        pytest.skip("real data: set ARCHLAB_DATA to a folder with shakespeare/input.txt")
    return root


# a GPT small enough to train a few steps in a second or two
TINY_GPT = [
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
    """The data root, if it holds Multi30k; otherwise the test is skipped."""
    root = data_root()
    if root is None or not (root / "multi30k/train.de.gz").is_file():
        pytest.skip("real data: set ARCHLAB_DATA to a folder with multi30k/")
    return root


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
    """The data root, if it holds MR; otherwise the test is skipped."""
    root = data_root()
    if root is None or not (root / "mr/rt-polarity.pos").is_file():
        pytest.skip("real data: set ARCHLAB_DATA to a folder with mr/")
    return root
