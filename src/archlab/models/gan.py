"""Generative adversarial networks for small images: DCGAN, class-conditional, SAGAN.

The game (Goodfellow et al. 2014): a generator G maps noise z ~ N(0, I) (and a class
y) to an image, a discriminator D scores images as real or generated; D descends
L_D and G descends L_G (see :mod:`archlab.nn.gan` for the two losses used here).

``dcgan`` (Radford, Metz & Chintala 2016, "Unsupervised representation learning
with deep convolutional generative adversarial networks"), sized for 28 x 28:
    G: z (100) -> ConvT 7x7 -> 7x7 x 2ngf -> ConvT 4/2 -> 14x14 x ngf -> ConvT 4/2 -> 28x28
       batch norm + ReLU after each hidden layer, tanh at the output
    D: 28x28 -> Conv 4/2 -> 14x14 x ndf -> Conv 4/2 -> 7x7 x 2ndf -> phi(x) (flattened)
       -> D(x) = psi(phi(x)), psi linear; LeakyReLU(0.2), batch norm on all but the
       input layer, strided convolutions and no pooling
with weights drawn from N(0, 0.02), as the paper does.

``cgan``, class-conditional: G reads [z, onehot(y)] (Mirza & Osindero 2014,
"Conditional generative adversarial nets"), and D is a projection discriminator
(Miyato & Koyama 2018, "cGANs with projection discriminator"):
    D(x, y) = psi(phi(x)) + e_y^T phi(x)        e_y a learnt embedding of class y

``sagan`` (Zhang, Goodfellow, Metaxas & Odena 2019, "Self-attention generative
adversarial networks"): the same networks with SAGAN's self-attention block on the
14 x 14 feature maps of G and D, spectral normalisation on every layer of both
(which replaces batch norm in D, as in Miyato et al. 2018), and the hinge loss;
the recipe adds their two-time-scale learning rates (D 4e-4, G 1e-4, Adam betas
(0, 0.9)).

The three are one class with different config fields.  ``forward(real, z, y)``
returns the discriminator's scores for one simultaneous update
(:class:`archlab.nn.gan.GANScores`): on real images, on the fakes detached
(for L_D), and on the fakes through a copy of D whose parameters are detached
(:func:`archlab.nn.gan.frozen_call`, for L_G); the task sums the two losses
(``config.loss`` names their kind), so one backward gives D exactly the gradient
of L_D and G exactly that of L_G, as the textbook's two backward passes would.
Images come from ``generator(z, y)``, in [-1, 1], shape (batch, channels, size, size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Config, Count, OneOf, Size
from archlab.errors import ConfigError, expect
from archlab.models import roles
from archlab.nn.checks import check_images
from archlab.nn.gan import (
    GAN_LOSSES,
    GANScores,
    SelfAttention2d,
    frozen_call,
    maybe_spectral_norm,
)
from archlab.registry import register_model


@dataclass
class GANConfig(Config):
    z_dim: Size = 100
    ngf: Size = 64  # generator channels at size / 2 (twice that at size / 4)
    ndf: Size = 64  # discriminator channels at size / 2 (twice that at size / 4)
    channels: Size = 1  # image channels
    image_size: Size = 28  # height = width, a multiple of 4
    num_classes: Count = 0  # 0: unconditional; else G reads onehot(y), D projects e_y
    attention: bool = False  # SAGAN's self-attention block at size / 2 in G and D
    spectral_norm: bool = False  # on every layer of G and D (D then has no batch norm)
    loss: Annotated[str, OneOf(GAN_LOSSES)] = "bce"  # bce (non-saturating, DCGAN) or hinge

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_size % 4:
            raise ConfigError(
                f"{self.key('image_size')} must be a multiple of 4, got {self.image_size}"
            )


def _layer(module: nn.Module, spectral: bool) -> nn.Module:
    """A convolution or linear layer with DCGAN's N(0, 0.02) weights, spectrally normed if asked."""
    nn.init.normal_(module.weight, 0.0, 0.02)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return maybe_spectral_norm(module, spectral)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    nn.init.normal_(bn.weight, 1.0, 0.02)
    return bn


class Generator(nn.Module):
    """z (batch, z_dim) [+ class y] -> images (batch, channels, size, size) in [-1, 1]."""

    def __init__(self, c: GANConfig) -> None:
        super().__init__()
        self.config = c
        sn, base = c.spectral_norm, c.image_size // 4
        self.net = nn.Sequential(
            _layer(nn.ConvTranspose2d(c.z_dim + c.num_classes, 2 * c.ngf, base, bias=False), sn),
            _batch_norm(2 * c.ngf),
            nn.ReLU(),
            _layer(nn.ConvTranspose2d(2 * c.ngf, c.ngf, 4, 2, 1, bias=False), sn),
            _batch_norm(c.ngf),
            nn.ReLU(),
            SelfAttention2d(c.ngf, spectral=sn) if c.attention else nn.Identity(),
            _layer(nn.ConvTranspose2d(c.ngf, c.channels, 4, 2, 1), sn),
            nn.Tanh(),
        )

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        c = self.config
        expect(
            z.dim() == 2 and z.shape[1] == c.z_dim,
            f"z must have shape (batch, {c.z_dim}), got {tuple(z.shape)}",
        )
        if c.num_classes:
            z = torch.cat([z, F.one_hot(_check_labels(y, len(z), c), c.num_classes).to(z)], 1)
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """Images (batch, channels, size, size) [+ class y] -> logits (batch,)."""

    def __init__(self, c: GANConfig) -> None:
        super().__init__()
        self.config = c
        sn, base = c.spectral_norm, c.image_size // 4
        self.phi = nn.Sequential(
            _layer(nn.Conv2d(c.channels, c.ndf, 4, 2, 1), sn),
            nn.LeakyReLU(0.2),
            SelfAttention2d(c.ndf, spectral=sn) if c.attention else nn.Identity(),
            _layer(nn.Conv2d(c.ndf, 2 * c.ndf, 4, 2, 1, bias=sn), sn),
            nn.Identity() if sn else _batch_norm(2 * c.ndf),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        width = 2 * c.ndf * base * base
        self.psi = _layer(nn.Linear(width, 1), sn)
        self.embed = _layer(nn.Embedding(c.num_classes, width), sn) if c.num_classes else None

    def forward(self, images: Tensor, y: Tensor | None = None) -> Tensor:
        c = self.config
        check_images(images, c.channels, c.image_size)
        phi = self.phi(images)
        logits = self.psi(phi).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(_check_labels(y, len(images), c)) * phi).sum(1)
        return logits


def _check_labels(y: Tensor | None, batch: int, c: GANConfig) -> Tensor:
    expect(
        y is not None and y.shape == (batch,) and not y.is_floating_point(),
        f"a class-conditional GAN needs integer labels y of shape ({batch},)",
    )
    if len(y):
        expect(
            int(y.min()) >= 0 and int(y.max()) < c.num_classes,
            f"labels y must lie in [0, {c.num_classes})",
        )
    return y


@register_model(
    "sagan",
    GANConfig,
    defaults={"attention": True, "spectral_norm": True, "loss": "hinge"},
    summary="Self-attention GAN (Zhang et al. 2019): attention, spectral norm, hinge loss",
)
@register_model(
    "cgan",
    GANConfig,
    defaults={"num_classes": 10},
    summary="Class-conditional DCGAN: one-hot class into G, projection discriminator",
)
@register_model(
    "dcgan", GANConfig, summary="DCGAN (Radford et al. 2016): all-convolutional G and D, BCE loss"
)
class DCGAN(nn.Module):
    """DCGAN (Radford et al. 2016): convolutional generator and discriminator."""

    role = roles.GAN

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)

    def forward(self, real: Tensor, z: Tensor, y: Tensor | None = None) -> GANScores:
        """D's logits on real images, on detached fakes (for L_D) and through a frozen D (for L_G).

        The task adds L_D (on ``real`` and ``fake``) and L_G (on ``gen``) of the kind
        ``config.loss``; that sum's one backward gives D exactly the gradient of L_D and
        G exactly the gradient of L_G.
        """
        fake = self.generator(z, y)
        return GANScores(
            real=self.discriminator(real, y),
            fake=self.discriminator(fake.detach(), y),
            gen=frozen_call(self.discriminator, fake, y),
        )
