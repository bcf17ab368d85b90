"""CIFAR-style VGG (Simonyan & Zisserman 2015), as trained in the papers (docs/science.md section 8).

3x3 convolutions (padding 1) -> BatchNorm (``bn`` variants) -> ReLU, 2x2 max-pools between the
stages, then one Linear ``512 -> num_classes`` (the usual CIFAR VGG: no 4096-wide classifier).

Input sizes: the pools use ``ceil_mode=True``, so a side ``n`` becomes ``ceil(n / 2)``: 32 -> 16 ->
8 -> 4 -> 2 -> 1 as in the original, and 28 -> 14 -> 7 -> 4 -> 2 -> 1 where floor pooling would reach
0. An adaptive average pool to 1 x 1 before the classifier (the identity at 28 and 32) lets larger
inputs work too.

Layer names: ``features.0`` (conv), ``features.1`` (bn), ``features.2`` (relu), ``features.3``
(pool), ..., ``avgpool``, ``classifier``; every ReLU is its own module.
"""

from __future__ import annotations

import torch
from torch import nn

from diffeoprobe.limits import check_parameters
from diffeoprobe.validate import check_choice, check_int

from .simple_cnn import _check_bool

__all__ = ["CONFIGS", "VGG"]

#: configuration -> output channels of each 3x3 conv, ``"M"`` a 2x2 max-pool (the paper's table 1,
#: columns A, B, D, E).
# fmt: off
CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}
# fmt: on


class VGG(nn.Module):
    """VGG for small images ``(B, C, H, W)`` (CIFAR, MNIST sizes) -> logits ``(B, num_classes)``.

    Args:
        in_channels: input channels ``C``.
        num_classes: number of outputs.
        config: one of :data:`CONFIGS`.
        batch_norm: add a BatchNorm after every convolution (the ``bn`` variants). The convolutions
            keep their bias either way, as in the papers' code (and torchvision).

    >>> net = VGG(1, 10, config="vgg11", batch_norm=True)
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> [name for name, _ in net.named_children()]
    ['features', 'avgpool', 'classifier']
    """

    def __init__(
        self, in_channels: int, num_classes: int, *, config: str = "vgg11", batch_norm: bool = False
    ) -> None:
        super().__init__()
        channels = check_int(in_channels, "in_channels", minimum=1)
        num_classes = check_int(num_classes, "num_classes", minimum=1)
        check_choice(config, "config", tuple(CONFIGS))
        _check_bool(batch_norm, "batch_norm")
        widths = [float(channels)] + [float(e) for e in CONFIGS[config] if e != "M"]
        weights = sum(9 * a * b for a, b in zip(widths, widths[1:], strict=False))
        check_parameters("in_channels and num_classes", weights + widths[-1] * num_classes)
        layers: list[nn.Module] = []
        for entry in CONFIGS[config]:
            if entry == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            layers.append(nn.Conv2d(channels, int(entry), kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(entry)))
            layers.append(nn.ReLU())
            channels = int(entry)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of the images ``x``."""
        return self.classifier(self.avgpool(self.features(x)).flatten(1))
