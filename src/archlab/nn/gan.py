"""Pieces of generative adversarial networks: losses, spectral norm, self-attention.

Losses, for discriminator logits d = D(x) on real images x and D(G(z)) on fakes:

    non-saturating (Goodfellow et al. 2014, section 3; the DCGAN loss):
        L_D = -E[log sigma(D(x))] - E[log(1 - sigma(D(G(z))))]
        L_G = -E[log sigma(D(G(z)))]
    hinge (Lim & Ye 2017; Miyato et al. 2018; SAGAN, Zhang et al. 2019, eq. 3):
        L_D = E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]
        L_G = -E[D(G(z))]

with log sigma(t) = -softplus(-t) and log(1 - sigma(t)) = -softplus(t), evaluated
in float32 for stability under bf16 autocast.

Spectral normalisation (Miyato, Kataoka, Koyama & Yoshida 2018): W_SN = W / sigma(W),
sigma(W) the largest singular value, estimated by one power iteration per training
forward (``torch.nn.utils.parametrizations.spectral_norm``).

Self-attention (SAGAN, Zhang, Goodfellow, Metaxas & Odena 2019, section 3), over the
N = H x W positions of a feature map x (C channels), with 1 x 1 convolutions
W_f, W_g, W_h (C -> C/8) and W_v (C/8 -> C):

    s_ij = f(x_i)^T g(x_j),   beta_{j,i} = exp(s_ij) / sum_i exp(s_ij)
    o_j = v( sum_i beta_{j,i} h(x_i) ),   y_i = gamma o_i + x_i,   gamma initialised to 0

so the block starts as the identity and learns how much non-local evidence to use.
The sum is single-head attention with query g(x_j), key f(x_i), value h(x_i) and
no 1/sqrt(d) scaling, which ``F.scaled_dot_product_attention(..., scale=1)`` computes
with a fused kernel (given contiguous inputs with a heads axis; otherwise the CPU
falls back to the unfused path, 2.5 times slower).
:class:`archlab.nn.attention.MultiHeadAttention` does not fit: its projections are
d -> d linear maps with 1/sqrt(d_head) scaling, where SAGAN's query and key are C/8
wide, unscaled, and its value is projected back by W_v.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.parametrizations import spectral_norm

from archlab.errors import ConfigError

GAN_LOSSES = ("bce", "hinge")


def discriminator_loss(kind: str, d_real: Tensor, d_fake: Tensor) -> Tensor:
    """L_D of ``kind`` ("bce" non-saturating or "hinge") from logits on real and fake images."""
    d_real, d_fake = d_real.float(), d_fake.float()
    if kind == "bce":
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    if kind == "hinge":
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    raise ConfigError(f"GAN loss must be one of {GAN_LOSSES}, got {kind!r}")


def generator_loss(kind: str, d_fake: Tensor) -> Tensor:
    """L_G of ``kind`` from the discriminator's logits on generated images."""
    d_fake = d_fake.float()
    if kind == "bce":
        return F.softplus(-d_fake).mean()
    if kind == "hinge":
        return -d_fake.mean()
    raise ConfigError(f"GAN loss must be one of {GAN_LOSSES}, got {kind!r}")


class GANScores(NamedTuple):
    """The discriminator's logits in one simultaneous GAN update.

    ``real``: D(x); ``fake``: D(G(z)) with G(z) detached, so it reaches only D;
    ``gen``: D(G(z)) through a D whose parameters are detached, so it reaches only G.
    """

    real: Tensor
    fake: Tensor
    gen: Tensor


def gan_losses(kind: str, scores: GANScores) -> tuple[Tensor, Tensor]:
    """(L_D, L_G) of ``kind`` from one update's scores; L_D reaches only D, L_G only G."""
    return discriminator_loss(kind, scores.real, scores.fake), generator_loss(kind, scores.gen)


def frozen_call(module: nn.Module, *args: Tensor) -> Tensor:
    """``module(*args)`` with its parameters detached: gradients reach the inputs only.

    The generator's loss is backpropagated through the discriminator this way, so it
    moves G without adding to D's gradients (buffers, e.g. batch-norm statistics and
    spectral norm's power-iteration vectors, update as in any training forward).
    """
    params = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, params, args)


def maybe_spectral_norm(module: nn.Module, enabled: bool) -> nn.Module:
    """``module`` with spectral normalisation on its weight when ``enabled``."""
    return spectral_norm(module) if enabled else module


class SelfAttention2d(nn.Module):
    """SAGAN's self-attention block: y = gamma * o + x over the positions of a feature map."""

    def __init__(self, channels: int, reduction: int = 8, spectral: bool = False) -> None:
        super().__init__()
        c_bar = max(1, channels // reduction)

        def conv(c_in: int, c_out: int) -> nn.Module:
            return maybe_spectral_norm(nn.Conv2d(c_in, c_out, 1), spectral)

        self.W_f, self.W_g, self.W_h = (conv(channels, c_bar) for _ in range(3))
        self.W_v = conv(c_bar, channels)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        b, _, height, width = x.shape

        def positions(t: Tensor) -> Tensor:  # (b, c_bar, H, W) -> (b, 1 head, N, c_bar)
            return t.flatten(2).transpose(1, 2)[:, None].contiguous()

        f, g, h = positions(self.W_f(x)), positions(self.W_g(x)), positions(self.W_h(x))
        attended = F.scaled_dot_product_attention(g, f, h, scale=1.0)[:, 0]  # (b, N, c_bar)
        o = self.W_v(attended.transpose(1, 2).reshape(b, -1, height, width))
        return x + self.gamma * o
