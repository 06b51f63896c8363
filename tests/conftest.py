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
