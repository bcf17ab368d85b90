"""A configurable plain CNN, 1D or 2D: ``depth`` blocks of conv -> norm -> activation -> pooling,
then global average pooling and a linear readout.

Every layer is a named submodule, so the measurement engine (which names layers by module path) sees::

    block1.conv  block1.norm  block1.act  block1.pool   (norm only with batch_norm=True,
    block2.conv  ...                                     pool only in blocks that pool)
    gap          readout

The model takes no seed: weights use PyTorch's default initialisation, so call
``torch.manual_seed(seed)`` right before building it for a reproducible initialisation.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.limits import check_parameters
from diffeoprobe.validate import check_choice, check_int

__all__ = ["ACTIVATIONS", "HEADS", "PADDINGS", "POOLINGS", "GlobalAvgPool", "SimpleCNN"]

#: activation name -> module factory (a fresh module per block, so each is its own layer).
ACTIVATIONS: Mapping[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}

#: padding name -> PyTorch ``padding_mode`` (``None``: no padding). All but "valid" pad
#: ``(filter_size - 1) // 2`` pixels per side: the size is kept at stride 1 for odd filter sizes
#: (an even filter loses one pixel per layer; asymmetric padding would need a copy of the input).
#: "same" and "zeros" are the same zero padding.
PADDINGS: Mapping[str, Literal["zeros", "circular", "reflect", "replicate"] | None] = {
    "same": "zeros",
    "zeros": "zeros",
    "circular": "circular",
    "reflect": "reflect",
    "replicate": "replicate",
    "valid": None,
}

#: pooling name -> (1D module, 2D module), built with kernel and stride 2 and ``ceil_mode=True``:
#: a side ``n`` becomes ``ceil(n / 2)``, so a side of 1 passes unchanged and deep nets keep working
#: on small inputs, and no border pixel is dropped (a partial window averages its pixels only).
POOLINGS: Mapping[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "max": (nn.MaxPool1d, nn.MaxPool2d),
    "avg": (nn.AvgPool1d, nn.AvgPool2d),
}
HEADS = ("gap",)
_POOL_SIZE = 2  # kernel and stride of the pooling layers
_BASE_WIDTH = 32  # channels of the first block when no width is given

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d}
_NORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


class GlobalAvgPool(nn.Module):
    """Mean over all spatial positions: ``(B, C, *spatial) -> (B, C)``.

    >>> GlobalAvgPool()(torch.ones(2, 3, 4, 5)).shape
    torch.Size([2, 3])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of ``x`` over its spatial dimensions."""
        return x.flatten(2).mean(dim=2)


def _per_layer(value: int | Sequence[int], name: str, depth: int) -> list[int]:
    """Broadcast a scalar to ``depth`` layers, or check a list has ``depth`` integers >= 1."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != depth:
            raise DiffeoProbeError(
                f"{name} must be one integer or a list of depth={depth} integers, "
                f"got {len(value)} entries: {list(value)!r}"
            )
        return [check_int(v, f"{name}[{i}]", minimum=1) for i, v in enumerate(value)]
    return [check_int(value, name, minimum=1)] * depth


def _default_widths(depth: int) -> list[int]:
    """32, 64, 64, 128, 128, ...: depth 4 gives a net that reaches about 90% on Fashion-MNIST."""
    return [_BASE_WIDTH * 2 ** (k // 2) for k in range(1, depth + 1)]


def _estimate_parameters(
    in_channels: int,
    num_classes: int,
    dim: int,
    depth: int,
    width: int | Sequence[int] | None,
    filter_size: int | Sequence[int],
) -> float | None:
    """About the number of weights of the net, without building it (``None``: leave odd values to
    the checks that follow). Uniform widths and filters take a closed form; otherwise the sum runs
    layer by layer and stops past 1e300.
    """

    def per_layer(value: object) -> Callable[[int], float] | None:
        if isinstance(value, int) and not isinstance(value, bool):
            return lambda i: float(value)
        if (
            isinstance(value, Sequence)
            and not isinstance(value, str)
            and len(value) == depth
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            return lambda i: float(value[i])
        return None

    widths = (
        (lambda i: _BASE_WIDTH * 2.0 ** min(1000, (i + 1) // 2))
        if width is None
        else per_layer(width)
    )
    filters = per_layer(filter_size)
    if widths is None or filters is None:
        return None
    if isinstance(width, int) and isinstance(filter_size, int):
        w, taps = float(width), float(filter_size) ** dim
        return taps * w * (in_channels + (depth - 1) * w) + 3 * depth * w + (w + 1) * num_classes
    total, channels = 0.0, float(in_channels)
    for i in range(depth):
        w = widths(i)
        total += channels * w * filters(i) ** dim + 3 * w  # conv weights, bias, norm
        channels = w
        if total > 1e300:
            return math.inf
    return total + (channels + 1) * num_classes


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise DiffeoProbeError(f"{name} must be True or False, got {value!r}")
    return value


class SimpleCNN(nn.Sequential):
    """A plain CNN for 1D signals or 2D images, readable and configurable layer by layer.

    Block ``i`` (``block1`` .. ``block{depth}``) is ``conv`` (filter ``filter_size[i]``, stride
    ``stride[i]``, ``width[i]`` output channels, padding as ``padding``) -> ``norm`` (BatchNorm, only
    with ``batch_norm``) -> ``act`` -> ``pool`` (kernel 2, stride 2, ceil mode: a side ``n`` becomes ``ceil(n / 2)``; in
    every ``pool_every``-th block). Then ``gap`` averages over space and ``readout``
    (Linear) gives the logits.

    Args:
        in_channels: input channels ``C``.
        num_classes: number of outputs.
        dim: 1 (input ``(B, C, L)``) or 2 (input ``(B, C, H, W)``).
        depth: number of conv blocks, ``>= 1``.
        width: output channels per block; one integer for all blocks or a list of ``depth``;
            ``None`` doubles from 32 every second block (32, 64, 64, 128, 128, 256, ...).
        filter_size: conv kernel side in pixels; integer or list of ``depth``.
        stride: conv stride in pixels; integer or list of ``depth``.
        activation: one of :data:`ACTIVATIONS`.
        pooling: ``"max"``, ``"avg"`` or ``None`` (no pooling layers).
        pool_every: pool after blocks ``pool_every, 2 * pool_every, ...``.
        padding: one of :data:`PADDINGS`: ``(filter_size - 1) // 2`` pixels per side filled with
            zeros ("same" = "zeros"), wrapped ("circular"), mirrored ("reflect") or repeated
            ("replicate"); "valid" pads nothing.
        batch_norm: add a BatchNorm after each conv.
        bias: give the convolutions a bias.
        head: ``"gap"`` (global average pooling then Linear).

    Output: logits ``(B, num_classes)``. Initialisation is PyTorch's default; seed it with
    ``torch.manual_seed`` before construction.

    >>> net = SimpleCNN(1, 10)
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> [name for name, _ in net.named_modules()][1:6]
    ['block1', 'block1.conv', 'block1.act', 'block1.pool', 'block2']
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        dim: int = 2,
        depth: int = 4,
        width: int | Sequence[int] | None = None,
        filter_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        activation: str = "relu",
        pooling: str | None = "max",
        pool_every: int = 1,
        padding: str = "same",
        batch_norm: bool = False,
        bias: bool = True,
        head: str = "gap",
    ) -> None:
        in_channels = check_int(in_channels, "in_channels", minimum=1)
        num_classes = check_int(num_classes, "num_classes", minimum=1)
        dim = check_int(dim, "dim", minimum=1, maximum=2)
        depth = check_int(depth, "depth", minimum=1)
        estimate = _estimate_parameters(in_channels, num_classes, dim, depth, width, filter_size)
        if estimate is not None:  # before any list of depth entries or any layer is built
            check_parameters("depth, width and filter_size", estimate, modules=5 * depth)
        widths = _default_widths(depth) if width is None else _per_layer(width, "width", depth)
        filters = _per_layer(filter_size, "filter_size", depth)
        strides = _per_layer(stride, "stride", depth)
        check_choice(activation, "activation", tuple(ACTIVATIONS))
        if pooling is not None:
            check_choice(pooling, "pooling", tuple(POOLINGS))
        pool_every = check_int(pool_every, "pool_every", minimum=1)
        check_choice(padding, "padding", tuple(PADDINGS))
        _check_bool(batch_norm, "batch_norm")
        _check_bool(bias, "bias")
        check_choice(head, "head", HEADS)

        padding_mode = PADDINGS[padding]
        blocks: list[tuple[str, nn.Module]] = []
        channels = in_channels
        for i, (out, size, step) in enumerate(zip(widths, filters, strides, strict=True), start=1):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            layers["conv"] = _CONVS[dim](
                channels,
                out,
                kernel_size=size,
                stride=step,
                padding=0 if padding_mode is None else (size - 1) // 2,
                padding_mode=padding_mode or "zeros",
                bias=bias,
            )
            if batch_norm:
                layers["norm"] = _NORMS[dim](out)
            layers["act"] = ACTIVATIONS[activation]()
            if pooling is not None and i % pool_every == 0:
                layers["pool"] = POOLINGS[pooling][dim - 1](_POOL_SIZE, ceil_mode=True)
            blocks.append((f"block{i}", nn.Sequential(layers)))
            channels = out
        blocks += [("gap", GlobalAvgPool()), ("readout", nn.Linear(channels, num_classes))]
        super().__init__(OrderedDict(blocks))
        self.dim = dim
