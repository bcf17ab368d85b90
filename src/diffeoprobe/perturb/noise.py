"""Isotropic noise matched in norm to the change a diffeomorphism made (docs/science.md section 3)."""

from __future__ import annotations

import torch

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.validate import check_flag, check_generator, check_signal

__all__ = [
    "matched_noise",
]


def matched_noise(
    x: torch.Tensor,
    xt: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    rectified: bool = False,
) -> torch.Tensor:
    """Noise ``eta`` with, per sample, the norm of the deformation's change ``xt - x``.

    Default: ``eta_i = z_i ||xt_i - x_i|| / ||z_i||`` with ``z ~ N(0, I)`` per sample, the norm
    over all channels and positions (computed in float64, so ``||eta_i|| = ||xt_i - x_i||`` to the
    precision of ``x``'s dtype; ``eta_i = 0`` where ``xt_i = x_i``).

    ``rectified=True`` is the variant of the 1D scale-detection scripts: i.i.d. per-pixel Gaussian
    noise whose variance is the mean of ``(xt - x)^2`` over the batch and all positions, passed
    through a ReLU (non-negative; its norm matches only on average, before the ReLU).

    Args:
        x: clean batch ``(B, C, L)`` or ``(B, C, H, W)``, floating point.
        xt: the deformed batch, same shape.
        generator: random source for ``z``; drawn in float64 on its device (else on ``x``'s).
        rectified: use the ReLU variant.

    Returns:
        ``eta``, the noise itself (add it to ``x``), same shape, dtype and device as ``x``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.zeros(2, 1, 4, 4)
        >>> eta = matched_noise(x, x + 1, generator=g)
        >>> eta.flatten(1).norm(dim=1).tolist()
        [4.0, 4.0]
    """
    check_signal(x, "x")
    check_signal(xt, "xt")
    generator = check_generator(generator)
    rectified = check_flag(rectified, "rectified")
    if xt.shape != x.shape:
        raise DiffeoProbeError(
            f"xt must have the shape of x {tuple(x.shape)}, got {tuple(xt.shape)}"
        )
    draw_device = generator.device if generator is not None else x.device
    z = torch.randn(x.shape, generator=generator, dtype=torch.float64, device=draw_device)
    z = z.to(x.device)
    change = xt.to(device=x.device, dtype=torch.float64) - x.to(torch.float64)
    if rectified:
        eta = (z * change.pow(2).mean().sqrt()).relu()
    else:
        scale = change.flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1)
        eta = z * scale.view(-1, *([1] * (x.dim() - 1)))
    return eta.to(x.dtype)
