"""The argument checks the perturbations add to :mod:`diffeoprobe.validate`: a random generator,
a device, a dtype and a flag, each refused with one :class:`DiffeoProbeError` naming it.
"""

from __future__ import annotations

import torch

from diffeoprobe.errors import DiffeoProbeError

__all__ = ["check_device", "check_dtype", "check_flag", "check_generator"]


def check_generator(generator: object, name: str = "generator") -> torch.Generator | None:
    """``None`` or a :class:`torch.Generator`."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise DiffeoProbeError(
            f"{name} must be a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def check_device(device: object, name: str = "device") -> torch.device:
    """A :class:`torch.device` or its name (``"cpu"``, ``"cuda:1"``)."""
    if isinstance(device, torch.device):
        return device
    if isinstance(device, str):
        try:
            return torch.device(device)
        except RuntimeError:
            pass
    raise DiffeoProbeError(f"{name} must be a device such as 'cpu' or 'cuda:0', got {device!r}")


def check_dtype(dtype: object, name: str = "dtype") -> torch.dtype:
    """A floating-point :class:`torch.dtype`."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise DiffeoProbeError(f"{name} must be a floating-point torch dtype, got {dtype!r}")
    return dtype


def check_flag(value: object, name: str) -> bool:
    """``True`` or ``False`` (no truthy strings)."""
    if not isinstance(value, bool):
        raise DiffeoProbeError(f"{name} must be True or False, got {value!r}")
    return value
