"""Fully connected networks of the papers (``fc2``, ``fc4``, ``fc6``; trained with Adam).

The image is flattened, then ``depth - 1`` hidden layers ``Linear -> ReLU`` of ``width`` units and a
Linear readout: ``depth`` counts the Linear layers (the papers' "FC L2/L4/L6"). The first layer's
size depends on the image, so the model takes ``input_size`` (no lazy modules: the parameters exist,
and can be seeded and counted, before any data is seen).

Layer names: ``fc1 relu1 fc2 relu2 ... readout``.
"""

from __future__ import annotations

import torch
from torch import nn

from diffeoprobe.limits import check_parameters
from diffeoprobe.validate import check_int

__all__ = ["FullyConnected"]

_WIDTH = 1024  # hidden units per layer, default


class FullyConnected(nn.Module):
    """A fully connected ReLU net on square images ``(B, C, input_size, input_size)``.

    Args:
        in_channels: input channels ``C``.
        num_classes: number of outputs.
        depth: number of Linear layers, ``>= 1`` (``depth - 1`` hidden layers).
        input_size: side of the (square) input images in pixels; the first layer reads
            ``in_channels * input_size**2`` numbers.
        width: units of each hidden layer.

    Initialisation is PyTorch's default.

    >>> net = FullyConnected(1, 10, depth=3, input_size=28, width=16)
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> [name for name, _ in net.named_children()]
    ['fc1', 'relu1', 'fc2', 'relu2', 'readout']
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        depth: int = 4,
        input_size: int = 32,
        width: int = _WIDTH,
    ) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", minimum=1)
        num_classes = check_int(num_classes, "num_classes", minimum=1)
        depth = check_int(depth, "depth", minimum=1)
        side = check_int(input_size, "input_size", minimum=1)
        width = check_int(width, "width", minimum=1)
        features = in_channels * side * side
        hidden = 0.0 if depth == 1 else float(features) * width + (depth - 2.0) * width * width
        check_parameters(
            "depth, width and input_size",
            hidden + (width if depth > 1 else features) * float(num_classes),
            modules=2 * depth,
        )
        for i in range(1, depth):
            self.add_module(f"fc{i}", nn.Linear(features, width))
            self.add_module(f"relu{i}", nn.ReLU())
            features = width
        self.readout = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of the images ``x``, flattened."""
        x = x.flatten(1)
        for layer in self.children():
            x = layer(x)
        return x
