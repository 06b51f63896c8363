"""Vision: MNIST files and splits, shifts, the affine test set, capsules, CNN and CapsNet."""

import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import archlab
from archlab.data.files import DataError
from archlab.data.mnist import (
    affine_mnist,
    affine_test_set,
    center_of_mass_crop,
    load_mnist,
    mnist_splits,
    place,
    random_shift,
    read_idx,
)
from archlab.errors import ArchlabError
from archlab.nn.capsule import capsule_lengths, margin_loss, routing_by_agreement, squash
from archlab.run import load, train
from archlab.tasks.image_classification import (
    ImageClassificationData,
    ImageClassificationTask,
    read_digit,
)
from tests.conftest import require_data

# label counts 0-9 stated in the data README
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist():
    return require_data("mnist/train-images-idx3-ubyte.gz")


def write_idx(path, magic: int, dims: tuple[int, ...], payload: bytes) -> None:
    header = struct.pack(f">i{len(dims)}i", magic, *dims)
    path.write_bytes(gzip.compress(header + payload))


# ----- IDX files -----


def test_idx_parser_reads_images_and_labels(tmp_path) -> None:
    pixels = bytes(range(256)) * 6 + bytes(32)  # 2 images of 28 x 28
    write_idx(tmp_path / "img.gz", 2051, (2, 28, 28), pixels)
    write_idx(tmp_path / "lab.gz", 2049, (2,), bytes([7, 3]))
    images = read_idx(tmp_path / "img.gz", "images")
    assert images.shape == (2, 28, 28) and images.dtype == torch.uint8
    assert images.flatten().tolist() == list(pixels)
    assert read_idx(tmp_path / "lab.gz", "labels").tolist() == [7, 3]


def test_idx_parser_refuses_wrong_magic_truncation_and_bad_files(tmp_path) -> None:
    write_idx(tmp_path / "labels-as-images.gz", 2049, (2, 28, 28), bytes(2 * 784))
    with pytest.raises(
        DataError,
        match=r"labels-as-images.gz is not an IDX images file: its "
        r"magic number is 2049, expected 2051",
    ):
        read_idx(tmp_path / "labels-as-images.gz", "images")
    write_idx(tmp_path / "short.gz", 2051, (3, 28, 28), bytes(2 * 784))
    with pytest.raises(
        DataError,
        match=r"short.gz is truncated: its header announces 3 images "
        r"\(2,352 bytes after the header\), it holds 1,568",
    ):
        read_idx(tmp_path / "short.gz", "images")
    write_idx(tmp_path / "big.gz", 2051, (1, 32, 32), bytes(1024))
    with pytest.raises(DataError, match="holds 32x32 images, expected 28x28"):
        read_idx(tmp_path / "big.gz", "images")
    (tmp_path / "tiny.gz").write_bytes(gzip.compress(b"\x00\x00\x08"))
    with pytest.raises(
        DataError, match="tiny.gz is truncated: an IDX labels file needs an? 8-byte"
    ):
        read_idx(tmp_path / "tiny.gz", "labels")
    whole = gzip.compress(struct.pack(">ii", 2049, 1000) + bytes(1000))
    (tmp_path / "cut.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="cut.gz cannot be read as gzip-compressed IDX"):
        read_idx(tmp_path / "cut.gz", "labels")


def test_mnist_counts_labels_and_seeded_validation_split(mnist) -> None:
    images, labels = load_mnist("train")
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == TRAIN_COUNTS
    assert torch.bincount(load_mnist("test")[1]).tolist() == TEST_COUNTS
    splits = mnist_splits(5000, split_seed=0)
    assert {k: len(v[0]) for k, v in splits.items()} == {"train": 55000, "val": 5000, "test": 10000}
    counts = torch.bincount(splits["train"][1], minlength=10) + torch.bincount(splits["val"][1])
    assert counts.tolist() == TRAIN_COUNTS  # val and train partition the 60,000
    assert torch.equal(mnist_splits(5000, 0)["val"][0], splits["val"][0])
    assert not torch.equal(mnist_splits(5000, 1)["val"][0], splits["val"][0])


# ----- shifts, centring and the affine test set -----


def test_shift_is_pad_2_and_random_28x28_crop() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)
    shifts = torch.randint(-2, 3, (64, 2), generator=g)
    shifted = place(images, 28, shifts)
    padded = F.pad(images, (2, 2, 2, 2))
    for n, (dy, dx) in enumerate(shifts.tolist()):
        assert torch.equal(shifted[n], padded[n, 2 - dy : 30 - dy, 2 - dx : 30 - dx])


def test_random_shift_moves_each_image_by_at_most_2_pixels_all_offsets_seen() -> None:
    dot = torch.zeros(2000, 28, 28, dtype=torch.uint8)
    dot[:, 14, 14] = 255
    out = random_shift(dot, 2, torch.Generator().manual_seed(1))
    rows, cols = (
        out.flatten(1).argmax(dim=1).div(28, rounding_mode="floor"),
        out.flatten(1).argmax(1) % 28,
    )
    assert (out.flatten(1) == 255).sum(dim=1).eq(1).all()  # the dot is kept, once
    offsets = set(zip((rows - 14).tolist(), (cols - 14).tolist(), strict=True))
    assert offsets == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    again = random_shift(dot, 2, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_training_batches_depend_only_on_seed_and_step(mnist) -> None:
    task = ImageClassificationTask(ImageClassificationData(train_size=1000))
    task.setup()
    x, y = task.train_batch(7, 32, seed=3)
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    x2, y2 = task.train_batch(7, 32, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(task.train_batch(8, 32, seed=3)[0], x)


def test_affine_set_is_deterministic_on_a_40x40_canvas_with_the_digit_kept(mnist) -> None:
    images = load_mnist("test")[0][:300]
    out = affine_mnist(images)
    assert out.shape == (300, 40, 40) and out.dtype == torch.uint8
    assert torch.equal(out, affine_mnist(images))
    centred = place(images, 40)
    assert (out != centred).flatten(1).any(dim=1).all()  # every digit was transformed
    # ink scales with the area (scale 0.8-1.2 per axis), so none was pushed off the canvas
    ratio = out.flatten(1).float().sum(1) / images.flatten(1).float().sum(1)
    assert ratio.min() > 0.55 and ratio.max() < 1.6
    full, labels = affine_test_set()
    assert full.shape == (10000, 40, 40) and torch.equal(full[:300], out)
    assert torch.bincount(labels).tolist() == TEST_COUNTS


def test_center_of_mass_crop_centres_digits() -> None:
    images = torch.zeros(3, 40, 40, dtype=torch.uint8)
    images[0, 2:8, 3:7] = 200  # a blob near a corner
    images[1, 30:38, 25:29] = 100
    images[2, 18:22, 18:22] = 50
    out = center_of_mass_crop(images)
    assert out.shape == (3, 28, 28)
    for img, before in zip(out, images, strict=True):
        w = img.float()
        row = (w.sum(1) * torch.arange(28)).sum() / w.sum()
        col = (w.sum(0) * torch.arange(28)).sum() / w.sum()
        assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5  # where MNIST puts it
        assert img.sum() == before.sum()  # nothing cut off


# ----- capsules -----


def test_squash_keeps_direction_and_maps_norms_into_0_1() -> None:
    s = torch.randn(1000, 16, dtype=torch.float64) * torch.logspace(-3, 2, 1000)[:, None]
    v = squash(s)
    norms, s_norms = v.norm(dim=1), s.norm(dim=1)
    assert (norms >= 0).all() and (norms < 1).all()
    torch.testing.assert_close(norms, s_norms**2 / (1 + s_norms**2), rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(F.cosine_similarity(v, s, dim=1), torch.ones(1000, dtype=s.dtype))
    zero = torch.zeros(2, 8, requires_grad=True)
    squash(zero).sum().backward()
    assert torch.equal(squash(zero), zero) and torch.isfinite(zero.grad).all()


def reference_routing(u_hat: torch.Tensor, iterations: int):
    """Procedure 1 written plainly, differentiated by autograd: the oracle."""
    b = torch.zeros(u_hat.shape[:3], dtype=u_hat.dtype)
    for r in range(iterations):
        c = b.softmax(dim=1)
        v = squash((c.unsqueeze(-1) * u_hat).sum(dim=2))
        if r < iterations - 1:
            b = b + (u_hat * v.unsqueeze(2)).sum(dim=-1)
    return v, c


def test_routing_couplings_sum_to_1_over_parents() -> None:
    u_hat = torch.randn(4, 10, 50, 16)
    _, c = routing_by_agreement(u_hat, iterations=3)
    assert c.shape == (4, 10, 50) and (c > 0).all()
    torch.testing.assert_close(c.sum(dim=1), torch.ones(4, 50))
    assert c.std(dim=1).mean() > 0.01  # three iterations moved away from uniform


def test_one_routing_iteration_is_uniform_coupling() -> None:
    u_hat = torch.randn(3, 10, 40, 16)
    v, c = routing_by_agreement(u_hat, iterations=1)
    torch.testing.assert_close(c, torch.full_like(c, 0.1))
    torch.testing.assert_close(v, squash(u_hat.sum(dim=2) / 10))


@pytest.mark.parametrize("iterations", [1, 3])
def test_routing_values_and_hand_written_gradients_match_autograd(iterations: int) -> None:
    u_hat = torch.randn(2, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    v, c = routing_by_agreement(u_hat, iterations)
    v_ref, c_ref = reference_routing(u_hat, iterations)
    torch.testing.assert_close(v, v_ref)
    torch.testing.assert_close(c, c_ref)
    g = torch.randn_like(v)
    (grad,) = torch.autograd.grad(v, u_hat, g)
    (grad_ref,) = torch.autograd.grad(v_ref, u_hat, g)
    torch.testing.assert_close(grad, grad_ref)
    assert torch.autograd.gradcheck(lambda x: routing_by_agreement(x, iterations).v, (u_hat,))


def test_routing_stays_float32_under_bf16_autocast() -> None:
    u_hat = torch.randn(2, 10, 30, 16)
    with torch.autocast("cpu", torch.bfloat16):
        v, _ = routing_by_agreement(u_hat.bfloat16(), 3)
    assert v.dtype == torch.float32
    ref, _ = routing_by_agreement(u_hat.bfloat16().float(), 3)
    torch.testing.assert_close(v, ref)


# ----- CapsNet -----


def test_capsnet_is_sabours_architecture() -> None:
    model = archlab.create_model("capsnet")
    x = torch.rand(2, 1, 28, 28)
    assert model.primary_capsules(x).shape == (2, 1152, 8)
    assert model.W.shape == (1152, 10, 16, 8)
    v = model(x)
    assert v.shape == (2, 10, 16) and (capsule_lengths(v) < 1).all()
    assert model.reconstruct(v).shape == (2, 1, 28, 28)
    n_params = sum(p.numel() for p in model.parameters())
    decoder = sum(p.numel() for p in model.decoder.parameters())
    assert n_params == 8_215_568 and n_params - decoder == 6_804_224  # the paper: 8.2M, 6.8M


def test_margin_loss_matches_a_hand_computed_value() -> None:
    lengths = torch.zeros(2, 10)
    lengths[0, 3], lengths[0, 0], lengths[0, 1] = 0.6, 0.3, 0.05  # true class 3
    lengths[1, 0], lengths[1, 5] = 0.95, 0.2  # true class 0
    direction = F.normalize(torch.randn(2, 10, 4), dim=-1)
    v = lengths.unsqueeze(-1) * direction
    # sample 0: (0.9 - 0.6)^2 + 0.5 (0.3 - 0.1)^2 = 0.11; sample 1: 0.5 (0.2 - 0.1)^2 = 0.005
    loss = margin_loss(v, torch.tensor([3, 0]), m_plus=0.9, m_minus=0.1, lam=0.5)
    torch.testing.assert_close(loss, torch.tensor((0.11 + 0.005) / 2))


def test_reconstruction_uses_only_the_masked_capsule_and_is_scaled() -> None:
    model = archlab.create_model("capsnet", conv1_channels=4, primary_caps=2)
    v = torch.randn(3, 10, 16) * 0.2
    labels = torch.tensor([1, 4, 9])
    other = v.clone()
    other[:, 0] += 1.0  # change capsules that are masked out
    torch.testing.assert_close(model.reconstruct(v, labels), model.reconstruct(other, labels))
    predicted = capsule_lengths(v).argmax(dim=1)
    torch.testing.assert_close(model.reconstruct(v), model.reconstruct(v, predicted))
    images = torch.rand(3, 1, 28, 28)
    sse = (model.reconstruct(v, labels) - images).pow(2).sum(dim=(1, 2, 3)).mean()
    expected = margin_loss(v, labels) + 0.0005 * sse
    task_loss = ImageClassificationTask(ImageClassificationData())._loss
    torch.testing.assert_close(task_loss(model, v, labels, images), expected)


# ----- CNN -----


def test_lenet5_matches_a_torch_sequential_with_the_same_weights() -> None:
    model = archlab.create_model("cnn", channels=[6, 16], hidden=[120, 84], dropout=0.0).eval()
    reference = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # C1, S2
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # C3, S4: 16 x 5 x 5
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),  # C5
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),  # F6, output
    )  # fmt: skip
    ours, theirs = list(model.parameters()), list(reference.parameters())
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    with torch.no_grad():
        for a, b in zip(theirs, ours, strict=True):
            a.copy_(b)
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in model.parameters()) == 61_706


def test_resnet_shapes_and_residual_blocks() -> None:
    model = archlab.create_model("cnn", arch="resnet", channels=[8, 16], depth=2, input_size=40)
    logits = model(torch.rand(3, 1, 40, 40))
    assert logits.shape == (3, 10)
    logits.sum().backward()
    blocks = [m for m in model.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 4
    assert isinstance(blocks[0].shortcut, nn.Identity) and not isinstance(
        blocks[2].shortcut, nn.Identity
    )


def test_images_of_the_wrong_shape_are_refused() -> None:
    model = archlab.create_model("cnn")
    with pytest.raises(
        ArchlabError, match=r"images must be a float tensor of shape \(batch, 1, 28, 28\)"
    ):
        model(torch.rand(2, 28, 28))


# ----- training, evaluation, predict -----

TINY_LENET = [
    "data.train_size=3000",
    "model.channels=[8,16]",
    "model.hidden=[64]",
    "model.dropout=0.1",
    "trainer.max_epochs=3",
    "trainer.batch_size=64",
    "trainer.lr=3e-3",
    "trainer.eval_every=1000",
]


@pytest.fixture(scope="module")
def lenet_run(mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("vision") / "lenet"
    return train("cnn-mnist", TINY_LENET, out=str(out), progress=False)


def test_tiny_lenet_learns_and_is_evaluated_on_the_affine_set(lenet_run) -> None:
    _, results = lenet_run
    assert results["test"]["accuracy"] > 0.85  # chance is 0.1
    assert 0.2 < results["affine"]["accuracy"] < results["test"]["accuracy"]


def test_tiny_capsnet_learns(mnist, tmp_path) -> None:
    overrides = [
        "data.train_size=1000",
        "data.val_size=1000",
        "model.conv1_channels=32",
        "model.primary_caps=8",
        "model.decoder=[64]",
        "trainer.max_epochs=3",
        "trainer.batch_size=50",
        "trainer.lr=3e-3",
        "trainer.eval_every=1000",
        "trainer.eval_batch_size=1000",
        "data.affine=false",
    ]
    _, results = train("capsnet-mnist", overrides, out=str(tmp_path / "caps"), progress=False)
    assert results["test"]["accuracy"] > 0.5


def write_png(path, pixels: torch.Tensor, mode: str = "L") -> None:
    Image.fromarray(pixels.numpy()).convert(mode).save(path)


def test_read_digit_undoes_inversion_scaling_and_colour(mnist, tmp_path) -> None:
    digit = load_mnist("test")[0][0]
    big = Image.fromarray((255 - digit).numpy()).resize((112, 112), Image.Resampling.BILINEAR)
    big.convert("RGB").save(tmp_path / "black-on-white.png")
    write_png(tmp_path / "mnist.png", digit)
    assert torch.equal(read_digit(tmp_path / "mnist.png"), digit)  # MNIST's own centring
    again = read_digit(tmp_path / "black-on-white.png").float()
    assert again.shape == (28, 28)
    assert (again - digit.float()).abs().mean() < 8  # out of 255
    assert F.cosine_similarity(again.flatten(), digit.float().flatten(), dim=0) > 0.95


def test_predict_cli_classifies_a_png_and_refuses_a_non_image(lenet_run, tmp_path) -> None:
    run_dir, _ = lenet_run
    run = load(run_dir)
    images, labels = load_mnist("test")
    with torch.no_grad():
        probs = run.task.probabilities(run.model, run.model(images[:200, None].float() / 255))
    confident = int(
        torch.nonzero((probs.argmax(1) == labels[:200]) & (probs.max(1).values > 0.95))[0]
    )
    write_png(tmp_path / "digit.png", images[confident])
    Image.fromarray(np.asarray(255 - images[confident])).resize((90, 90)).convert("RGBA").save(
        tmp_path / "big.png"
    )
    (tmp_path / "notes.png").write_text("not an image")
    cmd = [sys.executable, "-m", "archlab", "predict", str(run_dir)]
    proc = subprocess.run([*cmd, str(tmp_path / "digit.png"), str(tmp_path / "big.png")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(int(labels[confident]))] * 2
    assert all(0.5 < float(line.split("\t")[1]) <= 1 for line in lines)
    bad = subprocess.run(
        [*cmd, str(tmp_path / "notes.png")], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "notes.png: cannot be read as an image" in bad.stderr
