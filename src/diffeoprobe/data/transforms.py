"""Per-channel normalisation and batched augmentation (random crop + horizontal flip) on tensors.

The augmentations act on a whole batch ``(B, C, H, W)`` at once, with one random draw per sample and
no Python loop over samples, so the training loop applies them per batch on the batch's device
(docs/science.md section 8: CIFAR-10 is trained with random crop + flip).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.validate import check_int

__all__ = ["NORMALIZATION", "augment", "horizontal_flip", "normalize", "random_crop"]

#: dataset -> (per-channel mean, per-channel std) of the training split's pixels in ``[0, 1]``.
#: Published values, as used across the literature: CIFAR-10 and SVHN (RGB) and MNIST are the
#: commonly quoted train-set statistics (CIFAR-10's std is the pixel std, 0.247..., not the
#: often-copied 0.2023...); Fashion-MNIST's were checked against the installed train files
#: (0.28604, 0.35302).
NORMALIZATION: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashionmnist": ((0.2860,), (0.3530,)),
}


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel, the channel being dimension ``-3`` of ``(..., C, H, W)``.

    >>> x = torch.full((2, 1, 3, 3), 0.5)
    >>> normalize(x, *NORMALIZATION["mnist"]).unique()
    tensor([1.1986])
    """
    if x.dim() < 3 or x.shape[-3] != len(mean) or len(std) != len(mean):
        raise DiffeoProbeError(
            f"normalize: x must have shape (..., C, H, W) with C = {len(mean)} channels (one mean "
            f"and std each), got shape {tuple(x.shape)} and {len(mean)} means, {len(std)} stds"
        )
    shape = (len(mean), 1, 1)
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - mean_t) / std_t


def _check_batch(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DiffeoProbeError(f"{name}: x must be a batch of images (B, C, H, W), got {shape}")


def _draw_device(x: torch.Tensor, generator: torch.Generator | None) -> torch.device:
    """Draw where the generator lives (any device works for the caller's batch)."""
    return generator.device if generator is not None else x.device


def random_crop(
    x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad each image by ``padding`` pixels per side, then crop it back at a random offset.

    Each sample gets its own offset ``(dy, dx)``, uniform in ``{0, ..., 2 * padding}^2``; the output
    has the shape, dtype and device of ``x`` ``(B, C, H, W)``. ``padding=0`` returns ``x`` unchanged.

    >>> x = torch.arange(16.0).view(1, 1, 4, 4)
    >>> random_crop(x, padding=1, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([1, 1, 4, 4])
    """
    _check_batch(x, "random_crop")
    padding = check_int(padding, "padding", minimum=0)
    if padding == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    offsets = torch.randint(
        0, 2 * padding + 1, (2, b), generator=generator, device=_draw_device(x, generator)
    ).to(x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    channel = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def horizontal_flip(
    x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5
) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``, one draw per sample.

    >>> x = torch.arange(4.0).view(1, 1, 1, 4)
    >>> horizontal_flip(x, p=1.0).flatten().tolist()
    [3.0, 2.0, 1.0, 0.0]
    """
    _check_batch(x, "horizontal_flip")
    if not 0.0 <= p <= 1.0:
        raise DiffeoProbeError(f"horizontal_flip: p must be a probability in [0, 1], got {p!r}")
    draws = torch.rand(x.shape[0], generator=generator, device=_draw_device(x, generator))
    flip = (draws < p).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def augment(
    x: torch.Tensor,
    *,
    crop_padding: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The standard CIFAR augmentation of a batch ``(B, C, H, W)``: random crop, then random flip.

    Args:
        x: the batch (any dtype and device).
        crop_padding: zero padding per side before the random crop; ``0`` for no crop.
        flip: mirror each image left-right with probability 1/2.
        generator: the source of the random draws (its device is where they are drawn).

    >>> g = torch.Generator().manual_seed(0)
    >>> augment(torch.rand(8, 3, 32, 32), generator=g).shape
    torch.Size([8, 3, 32, 32])
    """
    _check_batch(x, "augment")
    x = random_crop(x, crop_padding, generator)
    return horizontal_flip(x, generator) if flip else x
