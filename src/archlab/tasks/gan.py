"""Image generation: a GAN trained on MNIST, measured by the Frechet inception distance.

Data: the 55,000 MNIST training images left after carving ``val_size`` (5,000)
validation images with a fixed data seed, as :mod:`archlab.tasks.image_classification`
does, scaled to [-1, 1] (the generator's tanh range); the class labels go along for
class-conditional models.

Training on the Trainer's one-loss-per-step engine.  A GAN has two players with two
losses; here one step is one *simultaneous* update: the model's forward returns the
discriminator's scores (:class:`archlab.nn.gan.GANScores`), and the loss is
L_D + L_G, where L_D sees the generated images detached and L_G runs through the
discriminator with its parameters detached, so one backward leaves in D's
parameters exactly grad L_D and in G's exactly grad L_G -- what the textbook's two
backward passes compute -- and one optimizer step moves both. (The alternating form
of Goodfellow et al.'s Algorithm 1 would let G see the already updated D;
simultaneous updates are the other standard form, e.g. Mescheder et al. 2017, and
cost the same three D passes.) The noise z is drawn in :meth:`loss` from the global
generator, like dropout masks, whose state the checkpoints keep, so a resumed run
goes on exactly. Because every score comes from the model's forward, data-parallel
training averages both players' gradients.
Two time-scale learning rates (TTUR, Heusel et al. 2017, used by SAGAN: lr_D = 4 lr_G)
are the trainer's ``lr_scales: {discriminator: 4.0}``, as are Adam's betas, the
learning rate of G and its schedule.

Metric (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to
a local Nash equilibrium"), the Frechet distance between Gaussians fitted to the
features of real and generated images:

    FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2})

with Tr (S_r S_g)^{1/2} = sum_i sqrt(lambda_i), lambda_i the eigenvalues of the
symmetric S_r^{1/2} S_g S_r^{1/2} (similar to S_r S_g), computed in float64.  The
features are not Inception-v3's, which know nothing of digits, but the penultimate
layer of an MNIST CNN trained by archlab (``cnn-mnist``), named by
``data.fid_classifier`` (its run directory), so the numbers are comparable between
archlab's GANs, not with FIDs in papers.  Left unset (null), it is archlab's own:
the ``cnn-mnist`` recipe trained once (about 10 minutes on 2 CPU cores) into
``$ARCHLAB_CACHE/fid-classifier/cnn-mnist-KEY``, KEY a SHA-256 of the MNIST files'
digests and the recipe's settings, so a changed recipe trains a new one; later runs
reuse it, and config.yaml records the path.  Validation during training uses
``val_fid_samples`` generated and real validation images (cheap, for picking the
best checkpoint); the final figures use ``fid_samples`` (10,000) generated images
against the whole split -- the 10,000 test images for ``test``.  Generated images
for evaluation come from fixed noise, and a class-conditional model gets the real
images' labels, so both sets have the same class frequencies.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from torch import Tensor, nn

from archlab.cached import build_once
from archlab.config import AtLeast, apply_overrides, read_recipe
from archlab.console import note
from archlab.data.batching import TrainBatches
from archlab.data.files import cache_root
from archlab.data.mnist import IMAGE_SIZE, MNIST, MNISTSplitData
from archlab.errors import ArchlabError, ConfigError
from archlab.models import roles
from archlab.nn.gan import gan_losses
from archlab.tasks import Task, register_task, unwrap
from archlab.train.checkpoint import load_model

MAX_SAMPLES = 2500  # images in one sample grid: 50 x 50 digits, about 2 MB of PNG
EVAL_NOISE_SEED = 1234  # fixed noise for the evaluation images, so evaluations compare
# archlab's own FID classifier: this recipe with these overrides (tests shrink it)
# fp32, not the trainer's "auto": that picks bf16 where it measures faster, and the
# yardstick of every FID must be the same network on every machine
FID_RECIPE, FID_RECIPE_OVERRIDES = "cnn-mnist", ("trainer.precision=fp32",)
FID_RECIPE_TIME = "about 10 minutes on 2 CPU cores"  # results/cnn-mnist.json: 597 s + 36 s


@dataclass
class ImageGenerationData(MNISTSplitData):
    # run directory of a trained MNIST `cnn`; None: archlab's own (cnn-mnist, trained once)
    fid_classifier: str | None = None
    # generated images for the final FID, against the whole split
    fid_samples: Annotated[int, AtLeast(2)] = 10000
    # generated and real images for the FID during training
    val_fid_samples: Annotated[int, AtLeast(2)] = 2000


def fid_classifier_key(overrides: tuple[str, ...] | list[str] = ()) -> str:
    """SHA-256 of the MNIST files' digests and the FID recipe's settings (after ``overrides``).

    The files are verified against those digests whenever they are read, so the key
    changes with the data and with any change to the recipe or the overrides.
    """
    recipe = apply_overrides(read_recipe(FID_RECIPE), list(overrides))
    spec = {
        "data": sorted(f"{file.path} {file.digest}" for file in MNIST.files),
        "recipe": FID_RECIPE,
        "settings": recipe,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def own_fid_classifier(train: Callable[..., tuple[Path, dict]]) -> Path:
    """The run directory of archlab's own FID classifier, trained by ``train`` if not cached.

    ``train(recipe, overrides, out=...)`` is :func:`archlab.run.train`.  The run is
    trained into a temporary directory beside its cache entry and renamed into place;
    a process that finds another one training it waits for it (:func:`build_once`).
    """
    key = fid_classifier_key(FID_RECIPE_OVERRIDES)
    target = cache_root() / "fid-classifier" / f"{FID_RECIPE}-{key[:16]}"
    if target.is_dir():
        if not (target / "model.safetensors").is_file():
            raise ConfigError(
                f"{target}, archlab's cached FID classifier, is incomplete; delete it and the "
                "next run trains it again"
            )
        note(f"data.fid_classifier: archlab's own MNIST CNN, trained before, in {target}")
        return target
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ConfigError(
            "data.fid_classifier is unset and archlab's own FID classifier is not in the cache "
            f"({target}) yet; it is trained in one process: run the same command once without "
            "torchrun, or give one with --set data.fid_classifier=RUN_DIR"
        )

    def build(path: Path) -> None:
        note(
            "data.fid_classifier is unset, so the FID reads the features of archlab's own "
            f"MNIST CNN: training it once with the {FID_RECIPE} recipe ({FID_RECIPE_TIME}) "
            f"into {target}; later runs reuse it"
        )
        train(FID_RECIPE, list(FID_RECIPE_OVERRIDES), out=str(path))

    path, _ = build_once(
        target,
        build,
        on_wait=lambda: note(f"waiting for another process training the FID classifier {target}"),
    )
    return path


def fit_gaussian(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (unbiased) covariance of features (n, d), in float64."""
    features = features.double()
    return features.mean(0), torch.cov(features.T)


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) for two Gaussians N(mu, S)."""
    mu1, sigma1, mu2, sigma2 = (t.double() for t in (mu1, sigma1, mu2, sigma2))
    eigenvalues, vectors = torch.linalg.eigh(sigma1)
    root1 = (vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T
    middle = root1 @ sigma2 @ root1
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_root)


def to_unit(images: Tensor) -> Tensor:
    """uint8 images (n, H, W) -> float (n, 1, H, W) in [-1, 1]."""
    return images.unsqueeze(1).float().div_(127.5).sub_(1)


def image_grid(images: Tensor, rows: int, cols: int, pad: int = 2) -> Tensor:
    """Images (n <= rows * cols, C, H, W) in [0, 1] as one uint8 (C, rows (H+pad)+pad, ...)."""
    n, c, h, w = images.shape
    cells = torch.zeros(rows * cols, c, h + pad, w + pad)
    cells[:n, :, pad:, pad:] = images.float().clamp(0, 1)
    grid = cells.view(rows, cols, c, h + pad, w + pad).permute(2, 0, 3, 1, 4)
    grid = grid.reshape(c, rows * (h + pad), cols * (w + pad))
    grid = torch.nn.functional.pad(grid, (0, pad, 0, pad))
    return (grid * 255).round().to(torch.uint8)


@register_task
class ImageGenerationTask(Task):
    name = "image_generation"
    DataConfig = ImageGenerationData
    roles = (roles.GAN,)
    verbs = frozenset({"sample"})
    metric = "fid"
    derived_model_keys = {
        "channels": "MNIST's grey images, one channel",
        "image_size": "MNIST's 28 x 28 images",
    }
    unit = "img"

    def setup(self) -> None:
        d = self.data
        splits = d.splits()
        images, labels = splits.pop("train")
        self.train, self.examples = (images, labels), splits
        self._classifier = self._load_classifier()
        self._real_stats: dict[tuple[str, int], tuple[Tensor, Tensor]] = {}
        self.batches = TrainBatches(len(self.train[0]))

    def prepare(self, train: Callable[..., tuple[Path, dict]]) -> None:
        """Without ``data.fid_classifier``, use archlab's own (trained once, cached)."""
        if self.data.fid_classifier is None:
            self.data.fid_classifier = str(own_fid_classifier(train))

    def _load_classifier(self) -> nn.Module:
        from archlab.models.cnn import ImageCNN

        path = self.data.fid_classifier
        train_first = (
            "leave data.fid_classifier unset to use archlab's own, or train one "
            "(`archlab train cnn-mnist --out runs/cnn-mnist`) and give its run directory with "
            "--set data.fid_classifier=runs/cnn-mnist"
        )
        if path is None:
            raise ConfigError(f"the FID needs the features of a trained MNIST CNN: {train_first}")
        try:
            model = load_model(path)
        except ArchlabError as exc:
            raise ConfigError(f"data.fid_classifier: {exc}; {train_first}") from None
        if not isinstance(model, ImageCNN) or model.config.input_size != 28:
            raise ConfigError(
                f"data.fid_classifier {path} holds a {type(model).__name__}; the FID needs a "
                f"28 x 28 MNIST `cnn`: {train_first}"
            )
        return model.float().eval().requires_grad_(False)

    def model_overrides(self) -> dict:
        return {"channels": 1, "image_size": IMAGE_SIZE}

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.batches.per_epoch(batch_size)

    def splits(self) -> tuple[str, ...]:
        return ("val", "test")

    def train_batch(self, step: int, batch_size: int, seed: int) -> tuple[Tensor, Tensor]:
        images, labels = self.train
        rows = torch.tensor(self.batches.indices(step, batch_size, seed))
        return to_unit(images[rows]), labels[rows]

    def batch_size_of(self, batch: tuple[Tensor, Tensor]) -> int:
        return batch[0].shape[0]

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        real, labels = batch
        config = unwrap(model).config
        z = torch.randn(len(real), config.z_dim, device=real.device)
        d_loss, g_loss = gan_losses(
            config.loss, model(real, z, labels if config.num_classes else None)
        )
        return d_loss + g_loss

    # ----- evaluation -----

    def _features(self, images: Tensor, batch_size: int) -> Tensor:
        """The FID classifier's penultimate features of images in [-1, 1], in float32."""
        with torch.autocast("cpu", enabled=False):  # the same features whatever the GAN's dtype
            return torch.cat(
                [
                    self._classifier.features((images[i : i + batch_size].float() + 1) / 2)
                    for i in range(0, len(images), batch_size)
                ]
            )

    def _generate(self, model: nn.Module, labels: Tensor, g: torch.Generator, batch_size: int):
        """One generated image per label (labels ignored by unconditional models), on the CPU."""
        config, device = model.config, next(model.parameters()).device
        chunks = []
        for i in range(0, len(labels), batch_size):
            y = labels[i : i + batch_size].to(device)
            z = torch.randn(len(y), config.z_dim, generator=g).to(device)
            chunks.append(model.generator(z, y if config.num_classes else None).float().cpu())
        return torch.cat(chunks)

    @torch.no_grad()
    def _measure(self, model: nn.Module, split: str, n_real: int, n_fake: int, batch_size: int):
        images, labels = self.examples[split]
        real, real_labels = to_unit(images[:n_real]), labels[:n_real]
        if (split, n_real) not in self._real_stats:
            self._real_stats[(split, n_real)] = fit_gaussian(self._features(real, batch_size))
        g = torch.Generator().manual_seed(EVAL_NOISE_SEED)
        fake_labels = real_labels.repeat(-(-n_fake // n_real))[:n_fake]
        fake = self._generate(model, fake_labels, g, batch_size)
        fid = frechet_distance(
            *self._real_stats[(split, n_real)], *fit_gaussian(self._features(fake, batch_size))
        )
        config, device = model.config, next(model.parameters()).device
        d_total = g_total = 0.0
        for i in range(0, n_real, batch_size):
            x, y = real[i : i + batch_size].to(device), real_labels[i : i + batch_size].to(device)
            z = torch.randn(len(x), config.z_dim, generator=g).to(device)
            d_loss, g_loss = gan_losses(config.loss, model(x, z, y if config.num_classes else None))
            d_total += float(d_loss) * len(x)
            g_total += float(g_loss) * len(x)
        return {"fid": fid, "d_loss": d_total / n_real, "g_loss": g_total / n_real}

    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        """FID, L_D and L_G on ``val_fid_samples`` images of ``split`` and as many fakes."""
        n = min(self.data.val_fid_samples, len(self.examples[split][0]))
        return self._measure(model, split, n, n, batch_size)

    def final_metrics(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        """FID of ``fid_samples`` generated images against every image of ``split``."""
        n_real = len(self.examples[split][0])
        return self._measure(model, split, n_real, self.data.fid_samples, batch_size)

    # ----- sampling -----

    @torch.no_grad()
    def sample(self, model: nn.Module, out: str | Path, n: int = 64, seed: int = 0) -> str:
        """Write a grid of ``n`` generated images to ``out`` (PNG); returns its layout.

        A class-conditional model draws ceil(n / 10) images per class, one row per class.
        """
        from PIL import Image

        if n <= 0:
            raise ArchlabError(f"the number of images to sample must be positive, got {n}")
        if n > MAX_SAMPLES:
            raise ArchlabError(
                f"a grid holds at most {MAX_SAMPLES:,} images, got {n:,}; for more, write "
                "several grids with other --seed values"
            )
        classes = model.config.num_classes
        g = torch.Generator().manual_seed(seed)
        if classes:
            cols = -(-n // classes)
            rows, labels = classes, torch.arange(classes).repeat_interleave(cols)
        else:
            cols = math.ceil(math.sqrt(n))
            rows, labels = -(-n // cols), torch.zeros(n, dtype=torch.long)
        images = self._generate(model.eval(), labels, g, 256)
        grid = image_grid((images + 1) / 2, rows, cols)
        pixels = grid[0] if grid.shape[0] == 1 else grid.permute(1, 2, 0)
        try:
            Image.fromarray(pixels.numpy()).save(out)
        except (OSError, ValueError) as exc:
            raise ArchlabError(f"cannot write {out}: {exc}") from None
        return f"{rows} x {cols} images" + (", one row per class" if classes else "")

    def report(self, model: nn.Module, run_dir: Path) -> None:
        """samples.png: 64 generated images (10 x 7, one row per class, if conditional)."""
        self.sample(model, run_dir / "samples.png", n=64, seed=0)
