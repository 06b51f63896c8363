"""CapsNet with dynamic routing (Sabour, Frosst & Hinton 2017, "Dynamic Routing Between Capsules").

    Conv1:        256 feature maps, 9 x 9, stride 1, ReLU                  28x28 -> 20x20
    PrimaryCaps:  32 types of 8-D capsules, 9 x 9 convolution, stride 2,   20x20 -> 6x6
                  u_i = squash(conv output),  6 * 6 * 32 = 1152 capsules
    DigitCaps:    u_hat_{j|i} = W_ij u_i,  W_ij in R^{16 x 8} for 1152 x 10 pairs
                  v_j = routing_by_agreement(u_hat), 3 iterations            10 x 16-D
    ||v_j|| is the probability that digit j is present.

    Margin loss (eq. 4), summed over digits, averaged over the batch:
        L_k = T_k max(0, m+ - ||v_k||)^2 + lambda (1 - T_k) max(0, ||v_k|| - m-)^2
        m+ = 0.9, m- = 0.1, lambda = 0.5
    Reconstruction: all digit capsules but one are masked to 0 -- the true class in
    training, the predicted one otherwise -- and a decoder FC 512 ReLU, 1024 ReLU,
    784 sigmoid rebuilds the image; its sum of squared errors, scaled by 0.0005,
    is added to the margin loss.

Squash and routing are in :mod:`archlab.nn.capsule` (batched, fp32 even under
bf16 autocast, with a hand-written backward).  The equations are the paper's: the
authors' code (Sarasra/models, research/capsules) also adds a bias to s_j and
halves the margin loss, which the paper does not state, so neither is done here.
W is initialised N(0, 0.01^2), the authors' standard deviation.  Under bf16
autocast the two convolutions run in bf16 and everything from the primary
capsules on in fp32.  With 28 x 28 inputs there are 8.2M parameters (6.8M
without the decoder), as in the paper.

A capsule classifier (:class:`archlab.models.roles.CapsuleClassifier`):
``forward(images)`` -> the digit capsules v (batch, classes, 16), whose lengths
(:func:`archlab.nn.capsule.capsule_lengths`) are the class probabilities;
``reconstruct(v, labels=None)`` -> images rebuilt from the masked capsules.  The
``image_classification`` task trains it with the margin loss plus the scaled
reconstruction loss (:func:`archlab.nn.capsule.margin_loss`), with the loss
settings of this config (m_plus, m_minus, lam, reconstruction_scale).  With
``reconstruction_scale: 0`` the decoder is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Config, Interval, NonNegativeFloat, Size
from archlab.errors import ConfigError
from archlab.models import roles
from archlab.nn.capsule import capsule_lengths, routing_by_agreement, squash
from archlab.nn.checks import check_images
from archlab.registry import register_model


@dataclass
class CapsNetConfig(Config):
    in_channels: Size = 1
    input_size: Size = 28
    num_classes: Size = 10
    conv1_channels: Size = 256
    kernel_size: Size = 9  # Conv1 and PrimaryCaps
    primary_caps: Size = 32  # capsule types in PrimaryCaps
    primary_dim: Size = 8
    primary_stride: Size = 2
    digit_dim: Size = 16
    routing_iters: Size = 3
    m_plus: Annotated[float, Interval(0.0, 1.0)] = 0.9
    m_minus: Annotated[float, Interval(0.0, 1.0)] = 0.1
    lam: NonNegativeFloat = 0.5  # down-weighting of the loss for absent digits
    decoder: list[Size] = field(default_factory=lambda: [512, 1024])
    reconstruction_scale: NonNegativeFloat = 0.0005  # 0 = no decoder

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.primary_grid() < 1:
            raise ConfigError(
                f"a {self.input_size}x{self.input_size} image is too small for two "
                f"{self.kernel_size}x{self.kernel_size} convolutions"
            )

    def primary_grid(self) -> int:
        """Height (= width) of the PrimaryCaps grid: 6 for 28 x 28 inputs."""
        conv1 = self.input_size - self.kernel_size + 1
        return (conv1 - self.kernel_size) // self.primary_stride + 1

    @property
    def n_primary(self) -> int:
        return self.primary_caps * self.primary_grid() ** 2


@register_model("capsnet", CapsNetConfig)
class CapsNet(nn.Module):
    """CapsNet (Sabour et al. 2017): PrimaryCaps, DigitCaps with routing by agreement."""

    role = roles.CapsuleClassifier

    def __init__(self, config: CapsNetConfig) -> None:
        super().__init__()
        self.config = c = config
        self.conv1 = nn.Conv2d(c.in_channels, c.conv1_channels, c.kernel_size)
        self.primary = nn.Conv2d(
            c.conv1_channels, c.primary_caps * c.primary_dim, c.kernel_size, c.primary_stride
        )
        self.W = nn.Parameter(
            0.01 * torch.randn(c.n_primary, c.num_classes, c.digit_dim, c.primary_dim)
        )
        self.decoder = None
        if c.reconstruction_scale > 0:
            sizes = [c.num_classes * c.digit_dim, *c.decoder]
            layers: list[nn.Module] = []
            for a, b in zip(sizes, sizes[1:], strict=False):
                layers += [nn.Linear(a, b), nn.ReLU()]
            layers += [nn.Linear(sizes[-1], c.in_channels * c.input_size**2), nn.Sigmoid()]
            self.decoder = nn.Sequential(*layers)

    def primary_capsules(self, images: Tensor) -> Tensor:
        """u (batch, 1152, 8): squashed PrimaryCaps outputs, capsule type-major."""
        c = self.config
        x = images.contiguous(memory_format=torch.channels_last)
        x = self.primary(F.relu(self.conv1(x)))  # (batch, types * dim, grid, grid)
        batch, _, grid, _ = x.shape
        u = x.float().view(batch, c.primary_caps, c.primary_dim, grid * grid).transpose(2, 3)
        return squash(u.reshape(batch, c.n_primary, c.primary_dim))

    def forward(self, images: Tensor) -> Tensor:
        """Digit capsules v (batch, num_classes, 16) of images (batch, channels, size, size)."""
        c = self.config
        check_images(images, c.in_channels, c.input_size)
        u = self.primary_capsules(images)
        with torch.autocast(images.device.type, enabled=False):
            u_hat = torch.einsum("ijdk,bik->bjid", self.W.float(), u)  # (batch, 10, 1152, 16)
        return routing_by_agreement(u_hat, c.routing_iters).v

    def reconstruct(self, v: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images (batch, channels, size, size) decoded from the capsule of ``labels``.

        Without labels, from the longest capsule (the predicted digit), as at test time.
        """
        if self.decoder is None:
            raise ConfigError("this CapsNet has no decoder (model.reconstruction_scale is 0)")
        c = self.config
        if labels is None:
            labels = capsule_lengths(v).argmax(dim=1)
        mask = F.one_hot(labels, c.num_classes).to(v.dtype).unsqueeze(2)
        out = self.decoder((v * mask).flatten(1))
        return out.view(-1, c.in_channels, c.input_size, c.input_size)
