"""Convolutional networks.

TextCNN (Kim 2014, "Convolutional Neural Networks for Sentence Classification"):
    x_{1:n} = word embeddings (n x k)
    c_i = ReLU(w . x_{i:i+h-1} + b)                 one feature map per filter of width h
    c_hat = max_i c_i                               max-over-time pooling
    z = [c_hat over all filters];  y = softmax(W (z o r) + b),  r ~ Bernoulli(1 - p)
    ||w_j||_2 <= s for every row w_j of W                max-norm constraint, s = 3
with filter widths 3, 4, 5, 100 maps each, dropout 0.5 (Kim's CNN-rand: embeddings
learnt from scratch, initialised U(-0.25, 0.25) as in his code).  Each sentence is
zero-padded by h - 1 positions on both sides (a "wide" convolution, as Kim's code
pads), so every word, even in a sentence shorter than h, is seen by every filter.
The max-norm constraint is applied as a reparametrisation: the output layer uses W
with each row rescaled to norm s when it is longer.

ImageCNN, ``arch: lenet`` (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based
learning applied to document recognition"), LeNet-5's layout:
    h_l = maxpool_2x2(ReLU(W_l * h_{l-1} + b_l))       l = 1..L, k x k convolutions
    z = flatten(h_L);  z <- ReLU(W z + b) per hidden layer;  logits = W_out z + b_out
The first convolution pads by k // 2 (LeNet-5 padded the 28 x 28 digits to 32 x 32),
the others are "valid": with channels [6, 16], k = 5 and hidden [120, 84] this is
LeNet-5 (C1 6@28x28, S2, C3 16@10x10, S4, C5 120, F6 84, 10 outputs), with ReLU
and max-pooling in place of its scaled tanh and trainable sub-sampling.  Dropout
(Srivastava et al. 2014) before every fully connected layer.

ImageCNN, ``arch: resnet`` (He, Zhang, Ren & Sun 2016, "Deep residual learning for
image recognition"), the small CIFAR-style residual net of their section 4.2:
    stem: ReLU(BN(conv3x3(x)))
    block: y = ReLU(F(x) + P(x)),  F(x) = BN(conv3x3(ReLU(BN(conv3x3(x)))))
where P is the identity, or a strided 1 x 1 convolution + BN when the block halves
the resolution and changes the width (their option B); ``depth`` blocks per
stage, one stage per entry of ``channels``, each after the first starting with
stride 2; then global average pooling, dropout and a linear classifier.

An image classifier maps images (batch, channels, height, width) in [0, 1] to
class logits (the task trains them with the cross-entropy).  Inputs are used in
channels-last memory order, which oneDNN convolutions run fastest on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Config, Count, OneOf, PositiveFloat, Probability, Size
from archlab.errors import ConfigError
from archlab.models import roles
from archlab.nn.checks import check_images, check_token_ids
from archlab.registry import register_model


@dataclass
class TextCNNConfig(Config):
    vocab_size: Size = 20000
    embed_dim: Size = 300
    filter_sizes: list[Size] = field(default_factory=lambda: [3, 4, 5])
    n_filters: Size = 100
    dropout: Probability = 0.5
    num_classes: Size = 2
    pad_id: Count = 0
    max_norm: PositiveFloat | None = 3.0  # Kim's l2 constraint on the output weights; None = off

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.filter_sizes:
            raise ConfigError(f"{self.key('filter_sizes')} must hold at least one width")
        self.require_below("pad_id", "vocab_size")


@register_model("textcnn", TextCNNConfig)
class TextCNN(nn.Module):
    """Kim (2014) CNN for sentence classification: convolutions + max-over-time pooling."""

    role = roles.TextClassifier

    def __init__(self, config: TextCNNConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)
        nn.init.uniform_(self.embed.weight, -0.25, 0.25)
        with torch.no_grad():
            self.embed.weight[c.pad_id].zero_()
        self.convs = nn.ModuleList(
            nn.Conv1d(c.embed_dim, c.n_filters, h, padding=h - 1) for h in c.filter_sizes
        )
        self.dropout = nn.Dropout(c.dropout)
        self.W = nn.Linear(c.n_filters * len(c.filter_sizes), c.num_classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Class logits (batch, num_classes) for token ids (batch, time); mask 1 = token.

        Max-pooling skips windows that lie wholly in a batch's right padding, so a
        sentence gets the same logits however much padding its batch adds.
        """
        c = self.config
        check_token_ids("input_ids", input_ids, c.vocab_size)
        if attention_mask is None:
            attention_mask = input_ids != c.pad_id
        lengths = attention_mask.long().sum(dim=1).clamp(min=1)
        x = self.embed(input_ids).transpose(1, 2)  # (batch, embed_dim, time)
        pooled = []
        for h, conv in zip(c.filter_sizes, self.convs, strict=True):
            feature_map = F.relu(conv(x))  # (batch, n_filters, time + h - 1)
            starts = torch.arange(feature_map.shape[2], device=x.device)
            valid = starts[None, :] <= (lengths + h - 2)[:, None]  # holds a real word
            pooled.append(feature_map.masked_fill(~valid[:, None, :], 0.0).amax(dim=2))
        z = torch.cat(pooled, dim=1)
        W = self.W.weight
        if self.config.max_norm is not None:
            W = torch.renorm(W, p=2, dim=0, maxnorm=self.config.max_norm)
        return F.linear(self.dropout(z), W, self.W.bias)


@dataclass
class ImageCNNConfig(Config):
    arch: Annotated[str, OneOf(("lenet", "resnet"))] = "lenet"
    in_channels: Size = 1
    input_size: Size = 28  # height = width of the input images
    num_classes: Size = 10
    channels: list[Size] = field(default_factory=lambda: [32, 64])  # per conv layer / stage
    kernel_size: Size = 5  # lenet convolutions
    hidden: list[Size] = field(default_factory=lambda: [1024])  # lenet fully connected layers
    depth: Size = 2  # resnet blocks per stage
    dropout: Probability = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.channels:
            raise ConfigError(f"{self.key('channels')} must hold at least one width")
        if self.arch == "lenet" and self.lenet_output_size() < 1:
            raise ConfigError(
                f"{len(self.channels)} convolution + pooling layers of size "
                f"{self.kernel_size} leave nothing of a {self.input_size}x{self.input_size} image"
            )

    def lenet_output_size(self) -> int:
        """Height (= width) of the last LeNet feature map."""
        size = self.input_size
        for i in range(len(self.channels)):
            size = (size + 2 * (self.kernel_size // 2 if i == 0 else 0) - self.kernel_size + 1) // 2
        return size


class BasicBlock(nn.Module):
    """He et al.'s two-convolution residual block: ReLU(F(x) + P(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


@register_model("cnn", ImageCNNConfig)
class ImageCNN(nn.Module):
    """Image CNN: LeNet-5-style (LeCun et al. 1998) or a small ResNet (He et al. 2016)."""

    role = roles.ImageClassifier

    def __init__(self, config: ImageCNNConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.arch == "lenet":
            self.body, width = self._lenet_body(c)
            head: list[nn.Module] = [nn.Flatten()]
            for h in c.hidden:
                head += [nn.Dropout(c.dropout), nn.Linear(width, h), nn.ReLU()]
                width = h
        else:
            self.body, width = self._resnet_body(c)
            head = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.head = nn.Sequential(*head)
        self.out = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(width, c.num_classes))

    @staticmethod
    def _lenet_body(c: ImageCNNConfig) -> tuple[nn.Sequential, int]:
        layers: list[nn.Module] = []
        c_in = c.in_channels
        for i, c_out in enumerate(c.channels):
            padding = c.kernel_size // 2 if i == 0 else 0
            layers += [nn.Conv2d(c_in, c_out, c.kernel_size, padding=padding), nn.ReLU()]
            layers.append(nn.MaxPool2d(2))
            c_in = c_out
        return nn.Sequential(*layers), c_in * c.lenet_output_size() ** 2

    @staticmethod
    def _resnet_body(c: ImageCNNConfig) -> tuple[nn.Sequential, int]:
        stem = [
            nn.Conv2d(c.in_channels, c.channels[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(c.channels[0]),
            nn.ReLU(),
        ]
        blocks, c_in = [], c.channels[0]
        for stage, c_out in enumerate(c.channels):
            for block in range(c.depth):
                blocks.append(BasicBlock(c_in, c_out, 2 if stage > 0 and block == 0 else 1))
                c_in = c_out
        body = nn.Sequential(*stem, *blocks)
        for m in body.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        return body, c_in

    def features(self, images: Tensor) -> Tensor:
        """The penultimate activations (batch, width): what the classifier sees (e.g. for FID)."""
        check_images(images, self.config.in_channels, self.config.input_size)
        return self.head(self.body(images.contiguous(memory_format=torch.channels_last)))

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (batch, num_classes) of images (batch, in_channels, size, size)."""
        return self.out(self.features(images))
