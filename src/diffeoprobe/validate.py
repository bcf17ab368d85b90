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

__all__ = [
    "MAX_AMPLITUDE",
    "MAX_SEED",
    "MAX_TEMPERATURE",
    "check_choice",
    "check_cut",
    "check_device",
    "check_dtype",
    "check_flag",
    "check_generator",
    "check_int",
    "check_positive",
    "check_seed",
    "check_signal",
    "check_size",
    "check_temperature",
]

MAX_TEMPERATURE = 1e6
"""The largest temperature accepted anywhere (``0 <= T <= MAX_TEMPERATURE``).

The folding limit ``temperature_range()[1]`` is at most ``2 / pi^2 = 0.203`` (1D, ``cut = 1``) and
does not grow with the image, so this is millions of times past it: the typical displacement is
already about a thousand image widths (2D, ``cut = 3``: ``delta = 930 n``), every source point is
clamped to the border, and larger ``T`` changes nothing but the risk of overflow (``T = 1e300``
makes ``sqrt(T) * n`` infinite in float32 and the field NaN). Under it the field stays finite in
float32 for any image that fits in memory (``|u| <~ 10 sqrt(T) n c^2`` pixels, far below ``3e38``).
"""


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """A finite temperature ``0 <= T <= MAX_TEMPERATURE`` (``T = 0`` means no deformation)."""
    allowed = f"a finite number in [0, {MAX_TEMPERATURE:g}]"
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise DiffeoProbeError(f"{name} must be {allowed}, got {temperature!r}") from None
    if not math.isfinite(value) or value < 0:
        raise DiffeoProbeError(f"{name} must be {allowed}, got {temperature!r}")
    if value > MAX_TEMPERATURE:
        raise DiffeoProbeError(
            f"{name} must be {allowed}, got {temperature!r}: past it every pixel is clamped to "
            "the border and the field soon overflows to NaN (the folding limit "
            "dp.temperature_range(size, cut)[1] is below 0.21)"
        )
    return value


def check_positive(
    value: float, name: str, *, allow_zero: bool = False, maximum: float | None = None
) -> float:
    """A finite real number ``> 0`` (or ``>= 0`` with ``allow_zero``), at most ``maximum``."""
    bound = (">= 0" if allow_zero else "> 0") + (f" and <= {maximum:g}" if maximum else "")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise DiffeoProbeError(f"{name} must be a real number {bound}, got {value!r}") from None
    if not math.isfinite(out) or out < 0 or (out == 0 and not allow_zero):
        raise DiffeoProbeError(f"{name} must be a finite number {bound}, got {value!r}")
    if maximum is not None and out > maximum:
        raise DiffeoProbeError(f"{name} must be a finite number {bound}, got {value!r}")
    return out


MAX_AMPLITUDE = 1e6
"""The largest image value, noise norm or amplitude accepted (their squares must fit a float32)."""


def check_int(value: object, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer in ``[minimum, maximum]``; floats such as ``3.0`` are refused (no silent rounding)."""
    allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise DiffeoProbeError(f"{name} must be {allowed}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise DiffeoProbeError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def check_cut(cut: object, name: str = "cut") -> int:
    """The integer frequency cut-off ``c >= 1`` of the max-entropy ensemble (docs/science.md section 2)."""
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
    """A floating-point batch of 1D signals ``(B, C, L)`` or 2D images ``(B, C, H, W)``, finite.

    Finiteness is checked on the CPU only: on a GPU it would cost a host synchronisation per
    call (``measure`` refuses non-finite representations on every device instead).
    """
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
    if x.device.type == "cpu" and not bool(torch.isfinite(x).all()):
        raise DiffeoProbeError(f"{name} holds NaN or infinite values")
    return x


MAX_SEED = 2**64 - 1
"""The largest seed accepted anywhere: ``torch.manual_seed`` and ``torch.Generator.manual_seed``
take 64-bit seeds and overflow past them."""


def check_seed(seed: object, name: str = "seed") -> int:
    """A seed: an integer in ``[0, MAX_SEED]`` (64 bits)."""
    return check_int(seed, name, minimum=0, maximum=MAX_SEED)


_DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(device: object, name: str = "device") -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` (a ``torch.device`` too), present on this machine.

    Raises:
        DiffeoProbeError: another spelling (``tpu``), or CUDA asked for where there is none or
            not that many GPUs.
    """
    allowed = "cpu, cuda or cuda:N"
    try:
        value = device if isinstance(device, torch.device) else torch.device(str(device))
    except (RuntimeError, ValueError):
        raise DiffeoProbeError(f"{name} must be {allowed}, got {device!r}") from None
    if value.type not in _DEVICE_TYPES:
        raise DiffeoProbeError(f"{name} must be {allowed}, got {device!r}")
    if value.type == "mps" and not torch.backends.mps.is_available():
        raise DiffeoProbeError(
            f"{name} {str(device)!r}: MPS is not available on this machine; use cpu"
        )
    if value.type == "cuda":
        if not torch.cuda.is_available():
            raise DiffeoProbeError(
                f"{name} {str(device)!r}: CUDA is not available on this machine; use cpu"
            )
        count = torch.cuda.device_count()
        if value.index is not None and value.index >= count:
            raise DiffeoProbeError(
                f"{name} {str(device)!r}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}"
            )
    return value


def check_generator(generator: object, name: str = "generator") -> torch.Generator | None:
    """``None`` or a :class:`torch.Generator`."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise DiffeoProbeError(
            f"{name} must be a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


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
