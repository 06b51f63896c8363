"""The adding problem and copy memory: the data as the TCN paper defines it, and learning."""

import math

import pytest
import torch

from archlab.cli import main
from archlab.errors import ConfigError
from archlab.run import train
from archlab.tasks.synthetic import adding_problem, copy_memory


def test_adding_problem_marks_two_steps_and_sums_their_values() -> None:
    x, y = adding_problem(500, 50, torch.Generator().manual_seed(0))
    assert x.shape == (500, 50, 2) and y.shape == (500,)
    assert (x[:, :, 1].sum(dim=1) == 2).all()  # two distinct marked steps
    torch.testing.assert_close((x[:, :, 0] * x[:, :, 1]).sum(dim=1), y)
    assert 0.14 < y.var().item() < 0.19  # var of the sum of two U(0, 1): 1/6


def test_copy_memory_is_digits_blanks_markers_then_recall() -> None:
    x, y = copy_memory(4, 30, torch.Generator().manual_seed(0))
    assert x.shape == (4, 50, 1) and y.shape == (4, 50)
    digits = x[:, :10, 0].long()
    assert ((digits >= 1) & (digits <= 8)).all()
    assert (x[:, 10:39, 0] == 0).all() and (x[:, 39:, 0] == 9).all()
    assert (y[:, :40] == 0).all() and torch.equal(y[:, 40:], digits)


def test_copy_memory_learns_at_a_short_blank(tmp_path) -> None:
    sets = [
        "data.T=8", "data.n_train=1000", "data.n_val=200", "data.n_test=200",
        "model.channels=[16,16,16]", "model.kernel_size=3", "trainer.lr=5e-3",
        "trainer.max_steps=150", "trainer.eval_every=150", "trainer.log_every=10",
    ]  # fmt: skip
    run_dir, results = train("tcn-copy", sets, out=str(tmp_path / "run"), progress=False)
    baseline = 10 * math.log(8) / (8 + 20)  # blanks, then a uniform guess among 8 digits
    assert results["test"]["loss"] < 0.8 * baseline
    assert results["test"]["accuracy"] > 0.3  # chance is 1/8


def test_adding_problem_beats_predicting_the_mean(tmp_path) -> None:
    sets = [
        "data.T=20", "data.n_train=2000", "data.n_val=200", "data.n_test=500",
        "model.name=seq_gru", "model.hidden_size=32", "trainer.lr=1e-2",
        "trainer.max_steps=200", "trainer.eval_every=200",
        "trainer.schedule=constant",  # the recipe's cosine decay would end 200 steps at lr 0
    ]  # fmt: skip
    _, results = train("tcn-adding", sets, out=str(tmp_path / "run"), progress=False)
    assert results["test"]["mse"] < 0.5 * 1 / 6  # predicting 1 scores 1/6


def test_a_too_short_sequence_is_one_sentence(capsys, tmp_path) -> None:
    assert main(["train", "tcn-copy", "--set", "data.T=0", "--out", str(tmp_path / "r")]) == 2
    assert "data.T must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="data.T must be at least 2 for adding"):
        train("tcn-adding", ["data.T=1"], out=str(tmp_path / "a"), progress=False)
