"""Tiny trained runs of every kind the server serves, for tests/test_serve*.py.

Each trains in a few seconds (a few steps: the server's tests need runs of each kind,
not good ones) and is skipped, with the reason, when its data is not in the data root.
The conftest fixtures train each at most once per test session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from archlab.run import train
from tests.conftest import TINY_GPT, TINY_TRANSLATION, require_data

TINY_MNIST = ["data.train_size=500", "data.val_size=200", "trainer.eval_batch_size=1000"]

RUNS: dict[str, tuple[str, list[str], tuple[str, ...]]] = {
    # name: (recipe, overrides, data files it needs)
    "gpt": (
        "gpt-shakespeare-char",
        [*TINY_GPT, "trainer.max_steps=3", "data.val_fraction=0.01"],
        ("shakespeare/input.txt",),
    ),
    "translation": (
        "transformer-multi30k",
        [*TINY_TRANSLATION, "data.max_sentences=500", "data.max_eval_sentences=8",
         "data.vocab_size=400", "trainer.max_steps=3", "trainer.eval_every=3"],
        ("multi30k/train.de.gz",),
    ),
    "cnn": (
        "cnn-mnist",
        [*TINY_MNIST, "model.channels=[4,8]", "model.hidden=[16]", "trainer.max_steps=30",
         "trainer.batch_size=32", "trainer.lr=3e-3", "trainer.eval_every=30"],
        ("mnist/train-images-idx3-ubyte.gz",),
    ),
    "capsnet": (
        "capsnet-mnist",
        [*TINY_MNIST, "model.conv1_channels=16", "model.primary_caps=4", "model.decoder=[16]",
         "trainer.max_steps=3", "trainer.batch_size=16", "trainer.eval_every=3",
         "data.affine=false"],
        ("mnist/train-images-idx3-ubyte.gz",),
    ),
    "esol": (
        "gnn-esol",
        ["model.dropout=0", "model.hidden=16", "model.ffn_hidden=16", "model.depth=1",
         "trainer.max_epochs=1", "trainer.batch_size=50", "trainer.warmup_steps=2"],
        ("molecules/delaney-processed.csv",),
    ),
    "fsdd": (
        "cnn-fsdd",
        ["model.channels=[4,8]", "model.hidden=[16]", "trainer.max_steps=3",
         "trainer.eval_every=3", "trainer.checkpoint_every=3"],
        ("fsdd/recordings/0_george_0.wav",),
    ),
    "gmu": (
        "gmu-avdigits",
        ["data.train_size=300", "data.val_size=50", "data.test_size=50",
         "model.image={channels: [4, 8], hidden: [16], dropout: 0.0}",
         "model.audio={channels: [4, 8], hidden: [16], dropout: 0.0}",
         "model.hidden=16", "trainer.max_steps=3", "trainer.eval_every=3",
         "trainer.checkpoint_every=3"],
        ("mnist/t10k-images-idx3-ubyte.gz", "fsdd/recordings/0_george_0.wav"),
    ),
    "kg": (
        "transe-nations",
        ["model.dim=8", "trainer.max_epochs=1", "trainer.eval_every_epochs=1"],
        ("kg/nations.tar.gz",),
    ),
    "bert": (
        "bert-mr",
        ["model.hidden_size=32", "model.n_layer=1", "model.n_head=2", "model.d_ff=64",
         "trainer.max_steps=3", "trainer.eval_every=3"],
        ("mr/rt-polarity.pos",),
    ),
    "mr": (
        "cnn-mr",
        ["model.embed_dim=16", "model.n_filters=8", "trainer.max_steps=3",
         "trainer.eval_every=3", "trainer.batch_size=50"],
        ("mr/rt-polarity.pos",),
    ),
}  # fmt: skip

GAN = (
    "dcgan-mnist",
    ["data.train_size=500", "data.fid_samples=100", "data.val_fid_samples=100",
     "model.z_dim=8", "model.ngf=8", "model.ndf=8", "trainer.max_steps=2",
     "trainer.batch_size=16", "trainer.eval_batch_size=500", "trainer.eval_every=2"],
)  # fmt: skip


def tiny_run(name: str, root: Path) -> Path:
    """The tiny run ``name`` (a key of RUNS, or "gan") trained into ``root / name``."""
    if name == "gan":
        classifier = tiny_run("cnn", root)
        recipe, overrides = GAN
        overrides = [*overrides, f"data.fid_classifier={classifier}"]
    else:
        recipe, overrides, needs = RUNS[name]
        for relative in needs:
            require_data(relative)
        if name in ("esol",):
            pytest.importorskip("rdkit")
        if name in ("fsdd", "gmu"):
            pytest.importorskip("librosa")
    overrides = [*overrides, "trainer.precision=fp32"]  # no precision probe
    out = root / name
    if not (out / "model.safetensors").is_file():
        train(recipe, overrides, out=str(out), progress=False)
    return out
