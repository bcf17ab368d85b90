"""The diffeomorphism of the scale-detection tasks: active pixels move by one (docs/science.md section 6)."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from diffeoprobe.validate import check_generator, check_int, check_signal

__all__ = [
    "pixel_shift",
    "task_diffeo",
]


def pixel_shift(
    x: torch.Tensor,
    *,
    block: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Move every active position of every sample by one pixel in a random direction.

    A position is active when it is nonzero in any channel; all its channels move together.
    1D: the step is -1 or +1 with equal probability. 2D: an angle ``theta`` uniform in
    ``[0, 2 pi)`` is rounded to the grid, ``(dH, dW) = (round(sin theta), round(cos theta))``,
    one of the 8 neighbours (each axis step with probability 1/6, each diagonal 1/12). A step
    that leaves the image is clipped at the border, axis by axis. With ``block = xi`` a step that
    changes ``floor(position / xi)`` along any axis is undone, so Task-2 labels never change.
    Values landing on the same pixel add up, so the sum of the signal is always kept.

    Args:
        x: ``(B, C, L)`` or ``(B, C, H, W)``, floating point.
        block: the block size ``xi >= 1`` of Task 2, or ``None`` for no constraint.
        generator: random source for the directions (drawn on its device, else on ``x``'s).

    Returns:
        Tensor like ``x``.

    Example:
        >>> x = torch.zeros(1, 1, 8)
        >>> x[0, 0, 3] = 1.0
        >>> y = pixel_shift(x, generator=torch.Generator().manual_seed(0))
        >>> int(y.sum()), int(y.nonzero()[0, 2]) in (2, 4)
        (1, True)
    """
    check_signal(x)
    if block is not None:
        block = check_int(block, "block", minimum=1)
    generator = check_generator(generator)
    b, c = x.shape[:2]
    size = x.shape[2:]
    draw_device = generator.device if generator is not None else x.device
    if len(size) == 1:
        sign = torch.randint(0, 2, (b, *size), generator=generator, device=draw_device)
        steps = [2 * sign.to(x.device) - 1]
    else:
        theta = (
            2
            * math.pi
            * torch.rand((b, *size), generator=generator, dtype=torch.float64, device=draw_device)
        )
        theta = theta.to(x.device)
        steps = [theta.sin().round().long(), theta.cos().round().long()]

    sources, targets = [], []
    for k, n in enumerate(size):
        shape = [1] * (len(size) + 1)
        shape[k + 1] = n
        p = torch.arange(n, device=x.device).view(shape)
        sources.append(p)
        targets.append((p + steps[k]).clamp(0, n - 1))
    if block is not None:
        crossed = torch.zeros((b, *size), dtype=torch.bool, device=x.device)
        for p, t in zip(sources, targets, strict=False):
            crossed |= torch.div(p, block, rounding_mode="floor") != torch.div(
                t, block, rounding_mode="floor"
            )
        targets = [torch.where(crossed, p, t) for p, t in zip(sources, targets, strict=False)]

    index = targets[0] if len(size) == 1 else targets[0] * size[1] + targets[1]
    index = index.reshape(b, 1, -1).expand(b, c, -1)
    flat = x.reshape(b, c, -1)
    return torch.zeros_like(flat).scatter_add(2, index, flat).view_as(x)


def task_diffeo(
    diffeo: str, dataset: str, options: Mapping[str, Any]
) -> str | Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """The ``diffeo`` that :func:`~diffeoprobe.measurement.measure` takes for a data set.

    ``"auto"`` becomes the task's own pixel shift on ``scale-detection`` (for Task 2 kept inside
    the blocks of side ``xi``, so that no label changes; docs/science.md section 6) and
    ``"max-entropy"`` elsewhere. Any other name is returned unchanged.

    Args:
        diffeo: ``"auto"`` or a diffeo name of ``measure``.
        dataset: the data set's registry name.
        options: the data set's options (``task``, ``xi``, ...; defaults as the data set's).

    >>> task_diffeo("auto", "fashionmnist", {})
    'max-entropy'
    >>> task_diffeo("auto", "scale-detection", {"task": 1})
    'pixel-shift'
    >>> task_diffeo("auto", "scale-detection", {"task": 2, "xi": 8}).__name__
    'pixel_shift_in_blocks_of_8'
    """
    if diffeo != "auto":
        return diffeo
    if dataset != "scale-detection":
        return "max-entropy"
    from diffeoprobe.data.scale_detection import scale_detection

    defaults = inspect.signature(scale_detection).parameters
    if int(options.get("task", defaults["task"].default)) != 2:
        return "pixel-shift"
    return _shift_in_blocks(int(options.get("xi", defaults["xi"].default)))


@functools.cache
def _shift_in_blocks(block: int) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """:func:`pixel_shift` with ``block`` in the ``(x, generator)`` form of ``measure`` (cached,
    so one block size is one function).
    """

    def shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return pixel_shift(x, block=block, generator=generator)

    shift.__name__ = f"pixel_shift_in_blocks_of_{block}"
    return shift
