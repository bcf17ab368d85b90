"""LeNet-5 (LeCun et al. 1998), in the modern form the papers trained (ReLU, max-pooling).

``conv1`` 5x5 (6 channels) -> ``relu1`` -> ``pool1`` 2x2 -> ``conv2`` 5x5 (16) -> ``relu2`` ->
``pool2`` 2x2 -> ``fc1`` (120) -> ``relu3`` -> ``fc2`` (84) -> ``relu4`` -> ``fc3`` (num_classes).

LeNet-5 reads a 32 x 32 field: 32 -> 28 -> 14 -> 10 -> 5, so ``fc1`` sees 16 x 5 x 5 features.
Smaller images are zero-padded by ``conv1`` up to that field, as LeCun centred the 28 x 28 MNIST
digits in 32 x 32 (padding 2 for 28). Larger images are not padded and ``fc1`` grows to match. The
size of ``fc1`` depends on the image side, so the model takes ``input_size``.
"""

from __future__ import annotations

import torch
from torch import nn

from diffeoprobe.limits import check_parameters
from diffeoprobe.validate import check_int

__all__ = ["LeNet"]

_FIELD = 32  # side of LeNet-5's input field, in pixels
_KERNEL = 5
_CHANNELS = (6, 16)
_HIDDEN = (120, 84)


class LeNet(nn.Module):
    """LeNet-5 for square images ``(B, C, input_size, input_size)`` -> logits ``(B, num_classes)``.

    Args:
        in_channels: input channels ``C``.
        num_classes: number of outputs.
        input_size: side of the (square) input images in pixels, ``>= 1``; sides below 32 are
            zero-padded to 32 by ``conv1`` (``ceil((32 - input_size) / 2)`` per side).

    >>> net = LeNet(1, 10, input_size=28)
    >>> net.conv1.padding, net.fc1.in_features
    ((2, 2), 400)
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self, in_channels: int, num_classes: int, *, input_size: int = _FIELD) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", minimum=1)
        num_classes = check_int(num_classes, "num_classes", minimum=1)
        side = check_int(input_size, "input_size", minimum=1)
        padding = max(0, -(-(_FIELD - side) // 2))
        side += 2 * padding
        for _ in _CHANNELS:
            side = (side - _KERNEL + 1) // 2
        c1, c2 = _CHANNELS
        check_parameters(
            "input_size",
            float(c2) * max(side, 0) ** 2 * _HIDDEN[0] + (in_channels + c1) * c1 * _KERNEL**2,
        )
        self.conv1 = nn.Conv2d(in_channels, c1, _KERNEL, padding=padding)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, _KERNEL)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * side * side, _HIDDEN[0])
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(*_HIDDEN)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(_HIDDEN[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of the images ``x``."""
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x))).flatten(1)
        return self.fc3(self.relu4(self.fc2(self.relu3(self.fc1(x)))))
