"""GANs: the blocks, the one-backward simultaneous update, the losses, FID, training, sampling."""

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from torch import nn
from torch.nn.utils import parametrize

import archlab
from archlab.errors import ArchlabError, ConfigError
from archlab.nn.gan import SelfAttention2d, discriminator_loss, gan_losses, generator_loss
from archlab.run import load, resolve, train
from archlab.tasks.gan import fit_gaussian, frechet_distance, image_grid
from archlab.train.trainer import Trainer
from tests.conftest import require_data

SMALL = dict(z_dim=16, ngf=8, ndf=8)


def real_batch(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28) * 2 - 1


# ----- the networks -----


@pytest.mark.parametrize("name", ["dcgan", "cgan", "sagan"])
def test_generator_and_discriminator_shapes(name: str) -> None:
    model = archlab.create_model(name, **SMALL)
    y = torch.arange(6) if name == "cgan" else None
    images = model.generator(torch.randn(6, 16), y)
    assert images.shape == (6, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1  # tanh
    assert model.discriminator(images, y).shape == (6,)
    scores = model(real_batch(), torch.randn(6, 16), y)
    assert [s.shape for s in scores] == [(6,)] * 3  # D on real, on fakes for L_D and for L_G


def test_the_conditional_gan_uses_its_labels_and_demands_them() -> None:
    model = archlab.create_model("cgan", **SMALL).eval()
    z, x = torch.randn(4, 16), real_batch(4)
    a, b = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 6, 7, 8])
    assert not torch.allclose(model.generator(z, a), model.generator(z, b))
    assert not torch.allclose(model.discriminator(x, a), model.discriminator(x, b))
    with pytest.raises(ArchlabError, match="labels"):
        model.generator(z)
    with pytest.raises(ArchlabError, match=r"lie in \[0, 10\)"):
        model.discriminator(x, torch.tensor([0, 1, 2, 10]))


def test_projection_discriminator_adds_e_y_dot_phi() -> None:
    model = archlab.create_model("cgan", **SMALL).eval()
    D, x, y = model.discriminator, real_batch(3), torch.tensor([4, 0, 9])
    phi = D.phi(x)
    expected = D.psi(phi)[:, 0] + (D.embed.weight[y] * phi).sum(1)
    torch.testing.assert_close(D(x, y), expected, atol=1e-6, rtol=1e-6)


def _weight_matrix(module: nn.Module) -> torch.Tensor:
    w = module.weight  # the normalised weight, through the parametrization
    if isinstance(module, nn.ConvTranspose2d):
        w = w.transpose(0, 1)  # spectral_norm's dim 1: output channels first
    return w.flatten(1)


def test_sagan_is_spectrally_normalised_everywhere_and_dcgan_nowhere() -> None:
    sagan, dcgan = archlab.create_model("sagan", **SMALL), archlab.create_model("dcgan", **SMALL)
    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)
    normed = [m for m in sagan.modules() if isinstance(m, layers)]
    assert len(normed) == 3 + 4 + 2 + 4 + 1  # G convs, G attention, D convs, D attention, psi
    assert all(parametrize.is_parametrized(m, "weight") for m in normed)
    assert not any(parametrize.is_parametrized(m) for m in dcgan.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in sagan.discriminator.modules())
    assert sum(isinstance(m, SelfAttention2d) for m in sagan.modules()) == 2
    for _ in range(30):  # power iterations run in training forwards
        sagan.discriminator(real_batch(2))
        sagan.generator(torch.randn(2, 16))
    for m in normed:  # the estimate u^T W v approaches sigma(W) from below
        sigma = torch.linalg.matrix_norm(_weight_matrix(m).detach(), ord=2).item()
        assert 0.999 < sigma < 1.03, m
    raw = [
        torch.linalg.matrix_norm(m.parametrizations.weight.original.flatten(1), 2) for m in normed
    ]
    assert min(raw) < 0.5  # N(0, 0.02) weights: far from 1 without the normalisation


# ----- self-attention -----


def test_attention_block_is_the_identity_at_initialisation() -> None:
    block = SelfAttention2d(16)
    x = torch.randn(2, 16, 5, 7)
    assert block.gamma.item() == 0
    torch.testing.assert_close(block(x), x, atol=0, rtol=0)


def test_attention_block_matches_sagan_formula_written_out() -> None:
    block = SelfAttention2d(16)
    with torch.no_grad():
        block.gamma.fill_(0.7)
    x = torch.randn(2, 16, 5, 7)
    f, g, h = (conv(x).flatten(2) for conv in (block.W_f, block.W_g, block.W_h))  # (b, C/8, N)
    s = torch.einsum("bci,bcj->bij", f, g)  # s_ij = f(x_i)^T g(x_j)
    beta = s.softmax(dim=1)  # beta_{j,i}: normalised over i
    o = torch.einsum("bij,bci->bcj", beta, h).reshape(2, 2, 5, 7)
    expected = 0.7 * block.W_v(o) + x
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


# ----- losses and the one-backward update -----


def test_losses_against_hand_computed_values() -> None:
    d_real, d_fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    # hinge: mean(max(0, 1 - d_real)) + mean(max(0, 1 + d_fake)) = (0 + 2)/2 + (1.5 + 0)/2
    assert discriminator_loss("hinge", d_real, d_fake).item() == pytest.approx(1.75)
    assert generator_loss("hinge", d_fake).item() == pytest.approx(1.25)

    def sigmoid(t: float) -> float:
        return 1 / (1 + math.exp(-t))

    bce_d = (
        -(math.log(sigmoid(2)) + math.log(sigmoid(-1))) / 2
        - (math.log(1 - sigmoid(0.5)) + math.log(1 - sigmoid(-3))) / 2
    )
    bce_g = -(math.log(sigmoid(0.5)) + math.log(sigmoid(-3))) / 2
    assert discriminator_loss("bce", d_real, d_fake).item() == pytest.approx(bce_d, rel=1e-6)
    assert generator_loss("bce", d_fake).item() == pytest.approx(bce_g, rel=1e-6)
    with pytest.raises(ConfigError, match="hinge"):
        archlab.create_model("dcgan", loss="wasserstein")


@pytest.mark.parametrize("name", ["dcgan", "cgan", "sagan"])
def test_one_backward_gives_each_player_the_gradient_of_its_own_loss(name: str) -> None:
    """The single loss equals the textbook two-loss computation, gradient for gradient."""
    model = archlab.create_model(name, **SMALL)
    with torch.no_grad():  # make attention matter, so its gradients are not all zero
        for m in model.modules():
            if isinstance(m, SelfAttention2d):
                m.gamma.fill_(0.5)
    reference = copy.deepcopy(model)
    real, z = real_batch(), torch.randn(6, 16)
    y = torch.tensor([0, 3, 3, 9, 1, 5]) if name == "cgan" else None

    d_loss, g_loss = gan_losses(model.config.loss, model(real, z, y))
    (d_loss + g_loss).backward()

    G, D, kind = reference.generator, reference.discriminator, reference.config.loss
    fake = G(z, y)
    d_loss = discriminator_loss(kind, D(real, y), D(fake.detach(), y))
    d_grads = torch.autograd.grad(d_loss, list(D.parameters()))
    g_loss = generator_loss(kind, D(fake, y))  # the textbook G step: D's gradients dropped
    g_grads = torch.autograd.grad(g_loss, list(G.parameters()))

    for ours, theirs in [
        (model.discriminator.parameters(), d_grads),
        (model.generator.parameters(), g_grads),
    ]:
        for p, expected in zip(ours, theirs, strict=True):
            torch.testing.assert_close(p.grad, expected, atol=1e-6, rtol=1e-5)
    assert any(g.abs().sum() > 0 for g in d_grads) and any(g.abs().sum() > 0 for g in g_grads)
    for ours, theirs in zip(model.buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(ours, theirs)  # batch-norm and power-iteration states too


# ----- FID -----


def test_frechet_distance_of_known_gaussians() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g, dtype=torch.float64)
    x = x @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    mu, sigma = fit_gaussian(x)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    assert frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(14.25, rel=1e-8)
    eye = torch.eye(6, dtype=torch.float64)  # Tr(I + 4I - 2 (4I)^{1/2}) = 6 (1 + 4 - 4) = 6
    zero = torch.zeros(6, dtype=torch.float64)
    assert frechet_distance(zero, eye, zero, 4 * eye) == pytest.approx(6.0, rel=1e-10)
    # against scipy's matrix square root on two unrelated covariances
    mu2, sigma2 = fit_gaussian(torch.randn(300, 6, generator=g, dtype=torch.float64) * 2 + 1)
    covmean = scipy.linalg.sqrtm(sigma.numpy() @ sigma2.numpy()).real
    expected = ((mu - mu2) ** 2).sum().item() + np.trace(
        sigma.numpy() + sigma2.numpy() - 2 * covmean
    )
    assert frechet_distance(mu, sigma, mu2, sigma2) == pytest.approx(expected, rel=1e-8)


def test_image_grid_layout() -> None:
    images = torch.zeros(5, 1, 4, 4)
    images[3] = 1.0  # the 4th image: row 1, column 1 of a 2 x 3 grid
    grid = image_grid(images, rows=2, cols=3, pad=2)
    assert grid.shape == (1, 2 * 6 + 2, 3 * 6 + 2) and grid.dtype == torch.uint8
    assert grid[0, 8:12, 2:6].eq(255).all() and grid.sum() == 16 * 255


# ----- training on MNIST, sampling -----


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A tiny MNIST CNN run, whose features the FID reads."""
    require_data("mnist/train-images-idx3-ubyte.gz")
    out = tmp_path_factory.mktemp("gan") / "cnn"
    overrides = [
        "data.train_size=2000",
        "data.affine=false",
        "model.channels=[4,8]",
        "model.hidden=[32]",
        "trainer.max_steps=30",
        "trainer.batch_size=64",
        "trainer.eval_batch_size=1000",
        "trainer.lr=3e-3",
    ]
    run_dir, _ = train("cnn-mnist", overrides, out=str(out), progress=False)
    return run_dir


def tiny_gan(classifier, steps: int = 150) -> list[str]:
    return [
        f"data.fid_classifier={classifier}",
        "data.train_size=4000",
        "data.fid_samples=500",
        "data.val_fid_samples=500",
        "model.z_dim=16",
        "model.ngf=16",
        "model.ndf=16",
        f"trainer.max_steps={steps}",
        "trainer.batch_size=32",
        "trainer.eval_batch_size=500",
        f"trainer.eval_every={steps}",
        "trainer.log_every=10",
        "trainer.lr=1e-3",
    ]


def test_a_missing_fid_classifier_is_one_clear_error(tmp_path) -> None:
    # (an unset one is archlab's own: tests/test_fid_classifier.py)
    with pytest.raises(ConfigError, match="data.fid_classifier.*not a directory.*unset"):
        train(
            "dcgan-mnist",
            [f"data.fid_classifier={tmp_path / 'nowhere'}"],
            out=str(tmp_path / "run2"),
            progress=False,
        )


@pytest.fixture(scope="module")
def dcgan_run(classifier, tmp_path_factory):
    out = tmp_path_factory.mktemp("gan") / "dcgan"
    return train("dcgan-mnist", tiny_gan(classifier), out=str(out), progress=False)


def test_tiny_dcgan_learns_and_writes_its_run_directory(dcgan_run) -> None:
    run_dir, results = dcgan_run
    for name in ("config.yaml", "model.safetensors", "results.json", "curves.png", "samples.png"):
        assert (run_dir / name).is_file(), name
    assert set(results["test"]) == {"fid", "d_loss", "g_loss"}
    run = load(run_dir)
    untrained = archlab.create_model("dcgan", z_dim=16, ngf=16, ndf=16).eval()
    run.task.setup()
    before = run.task.evaluate(untrained, "val", 500)
    after = run.task.evaluate(run.model, "val", 500)
    assert after["fid"] < 0.5 * before["fid"]  # the generator has moved towards digits
    assert after["d_loss"] != pytest.approx(before["d_loss"], abs=0.05)
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logged if r["split"] == "train"]
    assert len(losses) == 15 and len(set(losses)) == 15


def test_two_time_scales_give_the_discriminator_its_own_learning_rate(classifier, tmp_path) -> None:
    recipe = resolve(
        {
            "task": {"name": "image_generation"},
            "data": {"fid_classifier": str(classifier), "train_size": 256},
            "model": {"name": "sagan", **SMALL},
            "trainer": {
                "max_steps": 1,
                "lr": 1e-4,
                "lr_scales": {"discriminator": 4.0},
                "optimizer": "adam",
                "beta1": 0.0,
                "beta2": 0.9,
            },
        }
    )
    recipe.task.setup()
    model, config = recipe.build_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = Trainer(recipe.task, model, recipe.trainer, tmp_path, "sagan", config)
    trainer._train_step()
    lrs = {g["lr_scale"]: g["lr"] for g in trainer.optimizer.param_groups if g["params"]}
    assert lrs == {1.0: pytest.approx(1e-4), 4.0: pytest.approx(4e-4)}
    # Adam's first step moves every parameter with a gradient by lr (sign of the gradient)
    for name, p in model.named_parameters():
        step = (p.detach() - before[name]).abs().max().item()
        lr = 4e-4 if name.startswith("discriminator.") else 1e-4
        if step > 0:
            assert step == pytest.approx(lr, rel=0.05), name


def archlab_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "archlab", *args], capture_output=True, text=True, check=False
    )


def test_sample_cli_writes_grids_and_refuses_bad_requests(dcgan_run, classifier, tmp_path) -> None:
    run_dir, _ = dcgan_run
    proc = archlab_cli("sample", str(run_dir), "--out", str(tmp_path / "grid.png"), "--n", "64")
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "grid.png") as image:
        assert image.size == (8 * 30 + 2, 8 * 30 + 2) and image.mode == "L"
    bad = archlab_cli("sample", str(run_dir), "--out", str(tmp_path / "x.png"), "--n", "0")
    assert bad.returncode == 2 and "must be positive, got 0" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    huge = archlab_cli("sample", str(run_dir), "--out", str(tmp_path / "x.png"), "--n", "100000")
    assert huge.returncode == 2 and len(huge.stderr.strip().splitlines()) == 1
    assert "a grid holds at most 2,500 images, got 100,000" in huge.stderr
    run = load(run_dir)
    with pytest.raises(ArchlabError, match="must be positive, got -3"):
        run.task.sample(run.model, tmp_path / "x.png", n=-3)
    not_gan = archlab_cli("sample", str(classifier), "--out", str(tmp_path / "y.png"))
    assert (
        not_gan.returncode == 2 and "run, which cannot sample (it can: predict)" in not_gan.stderr
    )
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()


def test_conditional_samples_have_one_row_per_digit(classifier, tmp_path) -> None:
    run_dir, _ = train(
        "cgan-mnist", tiny_gan(classifier, steps=2), out=str(tmp_path / "cgan"), progress=False
    )
    run = load(run_dir)
    assert run.task.sample(run.model, tmp_path / "c.png", n=25, seed=1).startswith("10 x 3")
    with Image.open(tmp_path / "c.png") as image:
        assert image.size == (3 * 30 + 2, 10 * 30 + 2)
        pixels = torch.from_numpy(np.array(image))
    cell = pixels[2 + 30 * 4 : 30 * 5, 2:30].float()  # digit 4, first sample: image 12
    z = torch.randn(30, 16, generator=torch.Generator().manual_seed(1))[12:13]
    expected = (run.model.generator(z, torch.tensor([4])) + 1) / 2 * 255
    torch.testing.assert_close(cell, expected[0, 0].round(), atol=1, rtol=0)
