"""The GANs' FID classifier: archlab's own when none is given, trained once and cached."""

import dataclasses
import threading
import time
from pathlib import Path

import pytest
import yaml

from archlab.cached import build_once
from archlab.errors import ConfigError
from archlab.run import load, train
from archlab.tasks import gan
from archlab.train.trainer import Trainer
from tests.conftest import require_data

# a cnn-mnist small enough to train in seconds (the real one takes about 10 minutes)
TINY_CNN = (
    "data.train_size=2000",
    "data.affine=false",
    "model.channels=[4,8]",
    "model.hidden=[32]",
    "trainer.max_steps=30",
    "trainer.batch_size=64",
    "trainer.eval_batch_size=1000",
    "trainer.lr=3e-3",
)
TINY_GAN = [
    "data.train_size=512",
    "data.fid_samples=200",
    "data.val_fid_samples=200",
    "model.z_dim=16",
    "model.ngf=8",
    "model.ndf=8",
    "trainer.max_steps=2",
    "trainer.batch_size=32",
    "trainer.eval_batch_size=200",
]


@pytest.fixture
def fits(monkeypatch, tmp_path) -> list[str]:
    """A private cache, the tiny cnn-mnist, and the task name of every Trainer.fit call."""
    require_data("mnist/train-images-idx3-ubyte.gz")
    monkeypatch.setenv("ARCHLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gan, "FID_RECIPE_OVERRIDES", TINY_CNN)
    calls: list[str] = []
    fit = Trainer.fit

    def counted(self):
        calls.append(self.task.name)
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", counted)
    # the final FID over all 10,000 test images is what costs here; the 200 of evaluate do
    monkeypatch.setattr(gan.ImageGenerationTask, "final_metrics", gan.ImageGenerationTask.evaluate)
    return calls


def test_a_gan_without_classifier_trains_archlabs_own_once_and_reuses_it(
    fits, tmp_path, capsys
) -> None:
    first, _ = train("dcgan-mnist", TINY_GAN, out=str(tmp_path / "dcgan"), progress=False)
    assert fits == ["image_classification", "image_generation"]
    assert "training it once with the cnn-mnist recipe (about 10 minutes" in capsys.readouterr().err
    config = yaml.safe_load((first / "config.yaml").read_text())
    cached = Path(config["data"]["fid_classifier"])
    key = gan.fid_classifier_key(TINY_CNN)
    assert cached == tmp_path / "cache" / "fid-classifier" / f"cnn-mnist-{key[:16]}"
    assert (cached / "model.safetensors").is_file() and (cached / "results.json").is_file()
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name, cached.name + ".lock"]

    second, _ = train("cgan-mnist", TINY_GAN, out=str(tmp_path / "cgan"), progress=False)
    assert fits == ["image_classification", "image_generation", "image_generation"]
    assert "trained before" in capsys.readouterr().err
    again = yaml.safe_load((second / "config.yaml").read_text())["data"]["fid_classifier"]
    assert Path(again) == cached
    metrics = load(first).evaluate("val")  # evaluation reads the recorded classifier
    assert metrics["fid"] > 0

    (cached / "model.safetensors").unlink()  # damaged by hand: say what to do
    with pytest.raises(ConfigError, match="cached FID classifier, is incomplete; delete it"):
        train("dcgan-mnist", TINY_GAN, out=str(tmp_path / "third"), progress=False)


def test_archlabs_own_classifier_trains_in_fp32_on_every_machine() -> None:
    """The FID's features must not depend on the precision a machine measures fastest."""
    from archlab.config import apply_overrides, read_recipe
    from archlab.run import resolve

    recipe = apply_overrides(read_recipe(gan.FID_RECIPE), list(gan.FID_RECIPE_OVERRIDES))
    assert resolve(recipe).trainer.precision == "fp32"


def test_the_cache_key_follows_the_data_and_the_recipe(monkeypatch) -> None:
    key = gan.fid_classifier_key(TINY_CNN)
    assert key == gan.fid_classifier_key(list(TINY_CNN)) and len(key) == 64
    assert key != gan.fid_classifier_key((*TINY_CNN, "trainer.lr=1e-3"))
    assert key != gan.fid_classifier_key(())
    first, *rest = gan.MNIST.files  # another digest for one file: another key
    files = (dataclasses.replace(first, sha256=first.sha256[::-1]), *rest)
    monkeypatch.setattr(gan, "MNIST", dataclasses.replace(gan.MNIST, files=files))
    assert gan.fid_classifier_key(TINY_CNN) != key


def _racing_builds(target: Path, n: int = 4) -> tuple[list[Path], list[tuple[Path, bool]]]:
    builds: list[Path] = []

    def build(path: Path) -> None:
        builds.append(path)
        path.mkdir()
        time.sleep(0.3)
        (path / "weights").write_text(f"built by {threading.get_ident()}")

    results: list[tuple[Path, bool]] = []
    threads = [
        threading.Thread(target=lambda: results.append(build_once(target, build))) for _ in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return builds, results


def test_racing_builders_build_once_and_share_the_result(tmp_path) -> None:
    target = tmp_path / "entry"
    builds, results = _racing_builds(target)
    assert len(builds) == 1 and builds[0].parent.parent == tmp_path
    assert sorted(built for _, built in results) == [False, False, False, True]
    assert all(path == target for path, _ in results)
    assert (target / "weights").read_text().startswith("built by")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry", "entry.lock"]


def test_without_locks_the_first_rename_wins_and_the_entry_stays_whole(
    tmp_path, monkeypatch
) -> None:
    import archlab.cached

    monkeypatch.setattr(archlab.cached, "fcntl", None)
    target = tmp_path / "entry"
    builds, results = _racing_builds(target)
    assert len(builds) == 4 and sum(built for _, built in results) == 1
    assert (target / "weights").is_file() and sorted(p.name for p in tmp_path.iterdir()) == [
        "entry"
    ]


def test_a_build_stopped_halfway_leaves_nothing_and_the_next_one_builds(tmp_path) -> None:
    target = tmp_path / "entry"

    def stopped(path: Path) -> None:
        path.mkdir()
        (path / "half").write_text("")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_once(target, stopped)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.lock"]
    path, built = build_once(target, lambda p: p.mkdir())
    assert built and path.is_dir()
