"""CIFAR-style ResNets (He et al. 2016), as trained in the papers (docs/science.md section 8).

A 3x3 stem convolution with stride 1 and no max-pool (32 x 32 inputs are small), four stages of
64, 128, 256, 512 planes (strides 1, 2, 2, 2), global average pooling and one Linear. Stages are
built from :class:`BasicBlock` (ResNet18/34) or :class:`Bottleneck` (ResNet50, expansion 4, the
stride on the 3x3 conv). A projection shortcut (1x1 conv + BatchNorm) is used where the shape changes.

Every ReLU is its own module and the residual addition is written in ``forward``, so hooks see
``layer1.0.relu1`` ... and a torch.fx trace sees the addition as its own node (``add``, ``add_1``,
...). Layer names: ``conv1 bn1 relu layer1.0.conv1 layer1.0.bn1 layer1.0.relu1 layer1.0.conv2
layer1.0.bn2 [layer2.0.shortcut.0 layer2.0.shortcut.1] layer1.0.relu2 ... avgpool fc``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.limits import check_parameters
from diffeoprobe.validate import check_choice, check_int

__all__ = ["BLOCKS", "BasicBlock", "Bottleneck", "ResNet"]

_STEM_WIDTH = 64
_STAGE_PLANES = (64, 128, 256, 512)
_STAGE_STRIDES = (1, 2, 2, 2)


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    """1x1 projection + BatchNorm where the shape changes; ``None`` (identity) otherwise."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    """conv3x3 -> bn -> relu1 -> conv3x3 -> bn, plus the shortcut, -> relu2."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output ``relu2(branch(x) + shortcut(x))``."""
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(out + identity)


class Bottleneck(nn.Module):
    """conv1x1 -> bn -> relu1 -> conv3x3 (stride) -> bn -> relu2 -> conv1x1 (x4) -> bn, plus the
    shortcut, -> relu3.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output ``relu3(branch(x) + shortcut(x))``."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu3(out + identity)


#: block name -> block class.
BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


class ResNet(nn.Module):
    """ResNet for small images ``(B, C, H, W)`` -> logits ``(B, num_classes)``; any side >= 1 works
    (28 -> 28, 14, 7, 4 through the stages; 32 -> 32, 16, 8, 4).

    Args:
        in_channels: input channels ``C``.
        num_classes: number of outputs.
        block: ``"basic"`` or ``"bottleneck"``.
        layers: number of blocks in each of the four stages (ResNet18: ``(2, 2, 2, 2)``, ResNet34
            and ResNet50: ``(3, 4, 6, 3)``).

    >>> net = ResNet(3, 10, block="basic", layers=(1, 1, 1, 1))
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> [name for name, _ in net.layer2[0].named_children()]
    ['conv1', 'bn1', 'relu1', 'conv2', 'bn2', 'shortcut', 'relu2']
    """

    layer1: nn.Sequential  # the four stages, set in __init__
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        block: str = "basic",
        layers: Sequence[int] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", minimum=1)
        num_classes = check_int(num_classes, "num_classes", minimum=1)
        check_choice(block, "block", tuple(BLOCKS))
        if isinstance(layers, str) or not isinstance(layers, Sequence) or len(layers) != 4:
            raise DiffeoProbeError(f"layers must be 4 integers (blocks per stage), got {layers!r}")
        counts = [check_int(n, f"layers[{i}]", minimum=1) for i, n in enumerate(layers)]
        weights = sum(18.0 * planes**2 * n for planes, n in zip(_STAGE_PLANES, counts, strict=True))
        check_parameters(  # a block holds about 18 planes^2 weights (both kinds)
            "layers, in_channels and num_classes",
            weights + 9.0 * _STEM_WIDTH * in_channels + 2049.0 * num_classes,
            modules=10 * sum(counts),
        )

        kind = BLOCKS[block]
        self.conv1 = nn.Conv2d(in_channels, _STEM_WIDTH, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_WIDTH)
        self.relu = nn.ReLU()
        planes_in = _STEM_WIDTH
        for i, (planes, stride, count) in enumerate(
            zip(_STAGE_PLANES, _STAGE_STRIDES, counts, strict=True), start=1
        ):
            blocks = []
            for k in range(count):
                blocks.append(kind(planes_in, planes, stride if k == 0 else 1))
                planes_in = planes * kind.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of the images ``x``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))
