"""The 1D CNN of the scale-detection experiments (docs/science.md sections 6 and 7; paper Fig. 7).

``depth`` blocks ``conv -> act`` (filter 2, stride 2, ``width`` channels by default), global average
pooling and a linear readout, in the NTK / mean-field parametrisation the paper trains with
(learning rate proportional to ``width``):

- every weight is initialised N(0, 1) (biases, when present, at 0);
- a convolution multiplies its weights by ``1 / sqrt(in_channels * filter_size)`` (its fan-in) in
  the forward pass, so with unit-variance inputs every pre-activation has variance ~1 at
  initialisation, at any width;
- the readout multiplies by ``1 / width`` (mean-field), not ``1 / sqrt(width)``.

Lengths: each convolution maps a length ``L`` to ``ceil(L / stride)``, padding circularly (the task
is periodic) by ``(ceil(L / stride) - 1) * stride + filter_size - L`` samples, half on the left
(rounded down) and the rest on the right. With filter 2 and stride 2 on even lengths that is no
padding at all: 128 -> 64 -> ... -> 1 in 7 layers exactly. Other lengths also work: an odd length
wraps its first sample around, a length of 1 stays 1, and whatever is left after the last layer is
averaged by the global pooling.

Layer names: ``block1.conv block1.act ... block{depth}.conv block{depth}.act gap readout``. The
scaled convolution and readout are single ``torch.fx`` leaf calls (``scaled_conv1d``,
``scaled_linear``), so a trace has exactly one node per layer.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from diffeoprobe.limits import check_parameters
from diffeoprobe.validate import check_choice, check_int

from .simple_cnn import ACTIVATIONS, GlobalAvgPool, _check_bool

__all__ = ["ScaleCNN1d", "ScaledConv1d", "ScaledLinear", "scaled_conv1d", "scaled_linear"]


@torch.fx.wrap
def scaled_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, scale: float
) -> torch.Tensor:
    """``conv1d(circular_pad(x), scale * weight) + bias``; a length ``L`` becomes ``ceil(L / stride)``.

    Args:
        x: signals ``(B, C_in, L)``.
        weight: filters ``(C_out, C_in, F)``.
        bias: ``(C_out,)`` or ``None``.
        stride: step of the filter, in samples.
        scale: factor on the weights (not on the bias).

    >>> x = torch.arange(5.0).view(1, 1, 5)
    >>> scaled_conv1d(x, torch.ones(1, 1, 2), None, 2, 0.5)  # pairs (0,1), (2,3), (4,0)
    tensor([[[0.5000, 2.5000, 2.0000]]])
    """
    length, size = x.shape[-1], weight.shape[-1]
    padding = (-(-length // stride) - 1) * stride + size - length
    if padding > 0:
        left = padding // 2
        index = torch.arange(-left, length + padding - left, device=x.device) % length
        x = x.index_select(-1, index)
    return F.conv1d(x, weight * scale, bias, stride)


@torch.fx.wrap
def scaled_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """``linear(x, scale * weight) + bias`` for ``x`` of shape ``(B, in_features)``."""
    return F.linear(x, weight * scale, bias)


class ScaledConv1d(nn.Conv1d):
    """A 1D convolution with N(0, 1) weights, scaled by ``1 / sqrt(fan-in)`` in the forward pass,
    circular padding to ``ceil(L / stride)`` outputs (see :func:`scaled_conv1d`).

    >>> _ = torch.manual_seed(0)
    >>> conv = ScaledConv1d(64, 256, kernel_size=2, stride=2)
    >>> y = conv(torch.randn(8, 64, 32))
    >>> y.shape, round(y.var().item(), 1)
    (torch.Size([8, 256, 16]), 1.0)
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, bias: bool = False
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size)

    def reset_parameters(self) -> None:
        """Draw the weights from N(0, 1) and set the bias to 0."""
        nn.init.normal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The scaled convolution of ``x``, circularly padded."""
        return scaled_conv1d(x, self.weight, self.bias, self.stride[0], self.scale)

    def extra_repr(self) -> str:
        """The layer's settings, its ``scale`` included, for ``repr``."""
        return f"{super().extra_repr()}, scale={self.scale:.4g}"


class ScaledLinear(nn.Linear):
    """A Linear layer with N(0, 1) weights, multiplied by ``1 / in_features`` in the forward pass
    (the mean-field readout).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.scale = 1.0 / in_features

    def reset_parameters(self) -> None:
        """Draw the weights from N(0, 1) and set the bias to 0."""
        nn.init.normal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The scaled linear map of ``x``."""
        return scaled_linear(x, self.weight, self.bias, self.scale)

    def extra_repr(self) -> str:
        """The layer's settings, its ``scale`` included, for ``repr``."""
        return f"{super().extra_repr()}, scale={self.scale:.4g}"


class ScaleCNN1d(nn.Sequential):
    """The scale-detection CNN for signals ``(B, C, L)`` -> logits ``(B, num_classes)``.

    Args:
        in_channels: input channels ``C``.
        num_classes: number of outputs (1 for a hinge loss on labels +-1).
        depth: number of ``conv -> act`` blocks; with filter 2 and stride 2, ``log2(L)`` blocks
            bring a length ``L`` down to 1 (the paper: L = 128, depth 7).
        width: channels of every convolution (the paper: 1000).
        filter_size: filter size ``F`` in samples.
        stride: stride ``s`` in samples.
        activation: one of :data:`~diffeoprobe.models.simple_cnn.ACTIVATIONS`.
        bias: give every layer a bias (initialised at 0); the paper has none.

    >>> _ = torch.manual_seed(0)
    >>> net = ScaleCNN1d(1, 1, depth=7, width=8)
    >>> h = torch.randn(2, 1, 128)
    >>> for block in list(net)[:7]:  # the seven conv blocks: 128 -> 64 -> ... -> 1
    ...     h = block(h)
    >>> h.shape, net(torch.randn(2, 1, 128)).shape
    (torch.Size([2, 8, 1]), torch.Size([2, 1]))
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        depth: int = 7,
        width: int = 1000,
        filter_size: int = 2,
        stride: int = 2,
        activation: str = "relu",
        bias: bool = False,
    ) -> None:
        channels = check_int(in_channels, "in_channels", minimum=1)
        num_classes = check_int(num_classes, "num_classes", minimum=1)
        depth = check_int(depth, "depth", minimum=1)
        width = check_int(width, "width", minimum=1)
        filter_size = check_int(filter_size, "filter_size", minimum=1)
        stride = check_int(stride, "stride", minimum=1)
        check_choice(activation, "activation", tuple(ACTIVATIONS))
        _check_bool(bias, "bias")
        check_parameters(
            "depth, width and filter_size",
            float(filter_size) * width * (channels + (depth - 1.0) * width) + width * num_classes,
            modules=3 * depth,
        )

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(1, depth + 1):
            conv = ScaledConv1d(channels, width, filter_size, stride, bias=bias)
            layers[f"block{i}"] = nn.Sequential(
                OrderedDict(conv=conv, act=ACTIVATIONS[activation]())
            )
            channels = width
        layers["gap"] = GlobalAvgPool()
        layers["readout"] = ScaledLinear(width, num_classes, bias=bias)
        super().__init__(layers)
