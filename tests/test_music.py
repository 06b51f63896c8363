"""Polyphonic music: the piano-roll loader, the NLL per frame as the TCN paper's code computes
it, batching that does not change it, and learning on JSB Chorales."""

import pytest
import torch
import torch.nn.functional as F

import archlab
from archlab.cli import main
from archlab.data.music import load_rolls
from archlab.run import train
from archlab.tasks.music import MusicData, PolyphonicMusicTask
from tests.conftest import require_data

# a TCN small enough to train a few hundred steps in seconds
TINY_TCN = [
    "model.channels=[32,32]",
    "model.dropout=0.0",
    "trainer.batch_size=4",
    "trainer.lr=1e-2",
    "trainer.log_every=20",
]


@pytest.fixture(scope="module")
def jsb() -> PolyphonicMusicTask:
    require_data("music/JSB_Chorales.mat")
    task = PolyphonicMusicTask(MusicData(dataset="jsb"))
    task.setup()
    return task


@pytest.mark.parametrize(
    ("name", "file", "counts"),
    [("jsb", "JSB_Chorales.mat", (229, 76, 77)), ("nottingham", "Nottingham.mat", (694, 173, 170))],
)
def test_the_loader_reads_every_split_as_binary_88_key_rolls(name, file, counts) -> None:
    require_data(f"music/{file}")
    rolls = load_rolls(name)
    assert tuple(len(rolls[s]) for s in ("train", "val", "test")) == counts
    for split in rolls.values():
        for roll in split:
            assert roll.dtype == torch.float32 and roll.dim() == 2 and roll.shape[1] == 88
            assert ((roll == 0) | (roll == 1)).all()
    notes = torch.cat(rolls["train"]).sum(1)
    assert 3.0 < notes.mean() < 5.0  # chords of about four notes


def authors_nll(model: torch.nn.Module, rolls: list[torch.Tensor]) -> float:
    """The NLL per frame written out as locuslab/TCN's poly_music evaluate() computes it:
    one sequence at a time, p = sigmoid(output) in float64,
    loss = -trace(y log(p)^T + (1 - y) log(1 - p)^T), summed, over the sum of T - 1."""
    total, count = 0.0, 0
    for roll in rolls:
        x, y = roll[:-1], roll[1:].double()
        p = torch.sigmoid(model(x.unsqueeze(0)).squeeze(0).double())
        loss = -torch.trace(y @ torch.log(p).t() + (1 - y) @ torch.log(1 - p).t())
        total += float(loss)
        count += p.shape[0]
    return total / count


MODELS = {
    "tcn": dict(channels=[16, 16], kernel_size=3),
    "seq_lstm": dict(hidden_size=16),
    "seq_gru": dict(hidden_size=16, n_layer=2),
    "seq_transformer": dict(n_layer=1, n_head=2, n_embd=16, max_len=200),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_nll_per_frame_is_the_authors_formula_whatever_the_batching(jsb, name) -> None:
    model = archlab.create_model(name, in_dim=88, out_dim=88, **MODELS[name]).eval()
    rolls = jsb.rolls["val"]
    with torch.no_grad():
        expected = authors_nll(model, rolls)
        one_at_a_time = jsb.evaluate(model, "val", batch_size=1)["nll"]
        batched = jsb.evaluate(model, "val", batch_size=32)["nll"]
        # the same with torch's BCE on the probabilities, every frame of every sequence
        p = torch.cat([torch.sigmoid(model(r[:-1].unsqueeze(0))[0].double()) for r in rolls])
        y = torch.cat([r[1:] for r in rolls]).double()
        bce = float(F.binary_cross_entropy(p, y, reduction="sum")) / len(y)
    assert 40 < expected < 80  # an untrained model: about 88 ln 2 = 61
    assert one_at_a_time == pytest.approx(expected, rel=1e-9)
    assert batched == pytest.approx(expected, rel=1e-6)
    assert bce == pytest.approx(expected, rel=1e-9)


def test_the_training_loss_is_the_per_frame_nll_of_the_batch(jsb) -> None:
    model = archlab.create_model("tcn", in_dim=88, out_dim=88, channels=[8], kernel_size=2)
    batch = jsb.train_batch(0, 5, seed=0)
    x, _, lengths = batch
    assert x.shape[0] == 5 and int(lengths.max()) == x.shape[1]
    rows = jsb.batches.indices(0, 5, 0)
    with torch.no_grad():
        loss = float(jsb.loss(model.eval(), batch))
        summed = authors_nll(model, [jsb.rolls["train"][i] for i in rows]) * int(lengths.sum())
    assert loss == pytest.approx(summed / (5 * jsb.frames_per_sequence), rel=1e-5)


def test_a_short_training_beats_the_key_frequencies_on_jsb(jsb, tmp_path) -> None:
    train_frames = torch.cat([r[1:] for r in jsb.rolls["train"]]).double()
    p = train_frames.mean(0).clamp(1e-6, 1 - 1e-6)  # each key's frequency in training
    test = torch.cat([r[1:] for r in jsb.rolls["test"]]).double()
    frequency = float(-(test * p.log() + (1 - test) * (1 - p).log()).sum(1).mean())
    assert 10.5 < frequency < 11.5
    sets = [*TINY_TCN, "trainer.max_epochs=8", "trainer.eval_every_epochs=4"]
    _, results = train("tcn-jsb", sets, out=str(tmp_path / "run"), progress=False)
    assert results["test"]["nll"] < frequency - 1.0  # untrained: about 61; here about 9.4


def test_a_corpus_that_does_not_exist_is_one_sentence(capsys, tmp_path) -> None:
    assert main(["train", "tcn-jsb", "--set", "data.dataset=bach", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "data.dataset must be one of 'jsb', 'nottingham', 'muse', 'piano', got 'bach'" in err
