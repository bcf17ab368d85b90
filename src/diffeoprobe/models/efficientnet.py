"""EfficientNet-B0 (Tan & Le 2019) for 32 x 32 images.

The standard B0: a 3x3 stem (32 channels), 16 MBConv blocks from :data:`B0_STAGES`, a 1x1 head
convolution to 1280 channels, global average pooling, dropout 0.2 and a Linear. Each MBConv block
is ``1x1 expansion -> depthwise kxk (stride) -> squeeze-excitation -> 1x1 projection``, with
BatchNorm after each convolution, SiLU (swish) activations, no activation after the projection, and
a residual addition when the block keeps the shape; the residual branch is dropped per example
during training with a rate rising linearly from 0 to 0.2 over the blocks (stochastic depth).
Squeeze-excitation averages over space, reduces to a quarter of the block's *input* channels
(SiLU), expands back (sigmoid) and rescales the channels.

CIFAR adaptation (as in the usual CIFAR code, the papers' included): the stem has stride 1 instead
of 2, so 32 x 32 inputs reach 2 x 2 after the four stride-2 stages (28 x 28: 14, 7, 4, 2).

Layer names: ``stem_conv stem_bn stem_act``, then for block ``k`` of ``blocks``:
``blocks.k.expand_conv expand_bn expand_act`` (absent in the first block, whose expansion is 1),
``blocks.k.dw_conv dw_bn dw_act``, ``blocks.k.se.pool se.reduce se.act se.expand se.gate``,
``blocks.k.project_conv project_bn``, ``blocks.k.drop_path`` (identity in ``eval()`` mode; only in
blocks with a residual and a rate > 0), then ``head_conv head_bn head_act avgpool dropout
classifier``. Each activation is its own module; the channel rescaling and the residual addition are
written in ``forward`` (fx nodes ``mul``, ``add``).
"""

from __future__ import annotations

import torch
from torch import nn

from diffeoprobe.limits import check_parameters
from diffeoprobe.validate import check_int

__all__ = ["B0_STAGES", "DropPath", "EfficientNet", "MBConv", "SqueezeExcitation"]

#: EfficientNet-B0 stages: (expansion, output channels, repeats, stride of the first block, kernel).
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 16, 1, 1, 3),
    (6, 24, 2, 2, 3),
    (6, 40, 2, 2, 5),
    (6, 80, 3, 2, 3),
    (6, 112, 3, 1, 5),
    (6, 192, 4, 2, 5),
    (6, 320, 1, 1, 3),
)
_STEM = 32  # stem output channels
_HEAD = 1280  # head output channels
_SE_RATIO = 0.25  # squeeze width / block input channels
_DROPOUT = 0.2  # before the classifier
_DROP_PATH = 0.2  # stochastic depth rate of the last block


class DropPath(nn.Module):
    """Stochastic depth: in training, zero the whole residual branch of an example with
    probability ``rate`` and scale the kept ones by ``1 / (1 - rate)``; the identity in eval.
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with each example's branch dropped (training) or ``x`` itself (eval)."""
        if not self.training:
            return x
        keep = 1.0 - self.rate
        mask = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) < keep
        return x * mask / keep


class SqueezeExcitation(nn.Module):
    """Channel gates from the spatial mean: ``x * sigmoid(expand(silu(reduce(mean(x)))))``."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` scaled channel by channel by its gates."""
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation (see the module docstring)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        expansion: int,
        kernel_size: int,
        stride: int,
        drop_path: float,
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        if expansion != 1:
            self.expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self.expand_bn = nn.BatchNorm2d(hidden)
            self.expand_act = nn.SiLU()
        self.dw_conv = nn.Conv2d(
            hidden, hidden, kernel_size, stride, padding=kernel_size // 2, groups=hidden, bias=False
        )
        self.dw_bn = nn.BatchNorm2d(hidden)
        self.dw_act = nn.SiLU()
        self.se = SqueezeExcitation(hidden, max(1, int(in_channels * _SE_RATIO)))
        self.project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(out_channels)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path) if self.residual and drop_path > 0 else None
        self.expansion = expansion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output: the residual sum when the shapes allow it."""
        out = x
        if self.expansion != 1:
            out = self.expand_act(self.expand_bn(self.expand_conv(out)))
        out = self.se(self.dw_act(self.dw_bn(self.dw_conv(out))))
        out = self.project_bn(self.project_conv(out))
        if not self.residual:
            return out
        if self.drop_path is not None:
            out = self.drop_path(out)
        return out + x


class EfficientNet(nn.Module):
    """EfficientNet-B0 for small images ``(B, C, H, W)`` -> logits ``(B, num_classes)``.

    >>> net = EfficientNet(3, 10)
    >>> len(net.blocks), sum(p.numel() for p in net.parameters())  # torchvision's B0 count
    (16, 4020358)
    >>> [name for name, _ in net.blocks[1].named_children()][:4]
    ['expand_conv', 'expand_bn', 'expand_act', 'dw_conv']
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", minimum=1)
        num_classes = check_int(num_classes, "num_classes", minimum=1)
        check_parameters(  # the blocks and the head: about 4 million weights
            "in_channels and num_classes",
            9.0 * _STEM * in_channels + 4e6 + (_HEAD + 1.0) * num_classes,
        )
        self.stem_conv = nn.Conv2d(in_channels, _STEM, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(_STEM)
        self.stem_act = nn.SiLU()
        total = sum(repeats for _, _, repeats, _, _ in B0_STAGES)
        blocks: list[nn.Module] = []
        channels = _STEM
        for expansion, out, repeats, stride, kernel in B0_STAGES:
            for r in range(repeats):
                blocks.append(
                    MBConv(
                        channels,
                        out,
                        expansion=expansion,
                        kernel_size=kernel,
                        stride=stride if r == 0 else 1,
                        drop_path=_DROP_PATH * len(blocks) / total,
                    )
                )
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = nn.Conv2d(channels, _HEAD, 1, bias=False)
        self.head_bn = nn.BatchNorm2d(_HEAD)
        self.head_act = nn.SiLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(_DROPOUT)
        self.classifier = nn.Linear(_HEAD, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of the images ``x``."""
        x = self.blocks(self.stem_act(self.stem_bn(self.stem_conv(x))))
        x = self.head_act(self.head_bn(self.head_conv(x)))
        return self.classifier(self.dropout(self.avgpool(x).flatten(1)))
