"""Input checks at the boundary of the public API (scikit-learn's ``check_array`` habit).

Each check raises :class:`~diffeoprobe.errors.DiffeoProbeError` naming the parameter and the
allowed values, and returns the (possibly normalised) value, so callers write one line per input.
Internals below the public functions assume valid input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from diffeoprobe.errors import DiffeoProbeError


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """A finite temperature ``T >= 0`` (``T = 0`` means no deformation)."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise DiffeoProbeError(f"{name} must be a real number >= 0, got {temperature!r}") from None
    if not math.isfinite(value) or value < 0:
        raise DiffeoProbeError(f"{name} must be a finite number >= 0, got {temperature!r}")
    return value


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """A finite real number ``> 0`` (or ``>= 0`` with ``allow_zero``)."""
    bound = ">= 0" if allow_zero else "> 0"
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise DiffeoProbeError(f"{name} must be a real number {bound}, got {value!r}") from None
    if not math.isfinite(out) or out < 0 or (out == 0 and not allow_zero):
        raise DiffeoProbeError(f"{name} must be a finite number {bound}, got {value!r}")
    return out


def check_int(value: object, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer in ``[minimum, maximum]``; floats such as ``3.0`` are refused (no silent rounding)."""
    allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise DiffeoProbeError(f"{name} must be {allowed}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise DiffeoProbeError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def check_cut(cut: object, name: str = "cut") -> int:
    """The integer frequency cut-off ``c >= 1`` of the max-entropy ensemble (science.md section 2)."""
    return check_int(cut, name, minimum=1)


def check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    """One of a fixed set of names."""
    if value not in choices:
        raise DiffeoProbeError(
            f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
        )
    return value


def check_size(size: int | Sequence[int], name: str = "size") -> tuple[int, ...]:
    """A spatial size: one side length ``L`` (1D) or ``(H, W)`` (2D), each an integer >= 1."""
    if isinstance(size, int) and not isinstance(size, bool):
        sides: tuple[object, ...] = (size,)
    elif isinstance(size, Sequence) and not isinstance(size, str) and len(size) in (1, 2):
        sides = tuple(size)
    else:
        raise DiffeoProbeError(
            f"{name} must be an integer L or a pair (H, W) of integers >= 1, got {size!r}"
        )
    return tuple(check_int(s, name, minimum=1) for s in sides)


def check_signal(x: object, name: str = "x") -> torch.Tensor:
    """A floating-point batch of 1D signals ``(B, C, L)`` or 2D images ``(B, C, H, W)``."""
    if not isinstance(x, torch.Tensor):
        raise DiffeoProbeError(
            f"{name} must be a torch.Tensor of shape (B, C, L) or (B, C, H, W), got {type(x).__name__}"
        )
    if x.dim() not in (3, 4):
        raise DiffeoProbeError(
            f"{name} must have shape (B, C, L) or (B, C, H, W) (rank 3 or 4), got rank {x.dim()} with shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise DiffeoProbeError(
            f"{name} must have a floating-point dtype (float16/32/64), got {x.dtype}"
        )
    if x.numel() == 0:
        raise DiffeoProbeError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    return x
