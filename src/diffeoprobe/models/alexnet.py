"""AlexNet (Krizhevsky et al. 2012) adapted to 32 x 32 images, as trained in the papers.

The common five-convolution CIFAR adaptation (the one in the papers' training code): 3x3 kernels
throughout, the first with stride 2, channels 64, 192, 384, 256, 256, three 2x2 max-pools, then the
original classifier (dropout, 4096, 4096, num_classes) on the 256 x 2 x 2 features::

    32 -> conv s2: 16 -> pool: 8 -> conv: 8 -> pool: 4 -> 3 convs: 4 -> pool: 2

The pools use ``ceil_mode=True``, so 28 x 28 inputs reach 2 x 2 as well (14, 7, 4, 2) without
padding the image; an adaptive average pool to 2 x 2 (the identity at 28 and 32, as in torchvision's
AlexNet) lets larger inputs work too.

Layer names: ``features.0`` ... ``features.12``, ``avgpool``, ``classifier.0`` ... ``classifier.6``;
every ReLU is its own module. The dropouts are the identity in ``eval()`` mode (where measurements
run), so their output repeats the layer before.
"""

from __future__ import annotations

import torch
from torch import nn

from diffeoprobe.limits import check_parameters
from diffeoprobe.validate import check_int

__all__ = ["AlexNet"]

_CHANNELS = (64, 192, 384, 256, 256)
_POOL_AFTER = (0, 1, 4)  # indices of the convs followed by a max-pool
_FEATURE_SIDE = 2  # side of the feature map the classifier reads
_HIDDEN = 4096  # width of the two hidden classifier layers
_DROPOUT = 0.5


class AlexNet(nn.Module):
    """AlexNet for small images ``(B, C, H, W)`` -> logits ``(B, num_classes)``.

    >>> net = AlexNet(1, 10)
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        channels = check_int(in_channels, "in_channels", minimum=1)
        num_classes = check_int(num_classes, "num_classes", minimum=1)
        widths = [float(channels), *map(float, _CHANNELS)]
        features = 9 * sum(a * b for a, b in zip(widths, widths[1:], strict=False))
        classifier = (_CHANNELS[-1] * _FEATURE_SIDE**2 + _HIDDEN + num_classes) * float(_HIDDEN)
        check_parameters("in_channels and num_classes", features + classifier)
        layers: list[nn.Module] = []
        for i, out in enumerate(_CHANNELS):
            layers += [nn.Conv2d(channels, out, 3, stride=2 if i == 0 else 1, padding=1), nn.ReLU()]
            if i in _POOL_AFTER:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(_FEATURE_SIDE)
        self.classifier = nn.Sequential(
            nn.Dropout(_DROPOUT),
            nn.Linear(channels * _FEATURE_SIDE**2, _HIDDEN),
            nn.ReLU(),
            nn.Dropout(_DROPOUT),
            nn.Linear(_HIDDEN, _HIDDEN),
            nn.ReLU(),
            nn.Linear(_HIDDEN, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of the images ``x``."""
        return self.classifier(self.avgpool(self.features(x)).flatten(1))
