"""Size limits: work that would not fit is refused before anything is allocated.

Some settings make memory or run counts grow without bound: the idealised nets of
:mod:`diffeoprobe.theory` (input side ~ ``stride^depth`` and ``filter_size * stride^(depth - 1)``),
the models' widths and depths, the ensemble's cut-off ``cut`` (``c^2`` coefficients per 2D field),
``draws`` (copies of every probe image), the scale-detection data set (``d^(2 dim) / 2`` pairs) and
grid files (the product of the axes' lengths). Before doing such work the library estimates what it
needs and raises a :class:`~diffeoprobe.errors.DiffeoProbeError` (on the command line: one line,
exit code 2) naming the parameter, the estimate, the limit and how to raise it, instead of meeting
the operating system's out-of-memory killer minutes later. The estimates count the large tensors
of the step (an order of magnitude, not a bound on the whole process); every size the project
uses (tests, the presets ``quick``, ``standard``, ``paper``) stays far below the defaults.

The limits (one place; each can be raised by an environment variable, read at every check):

- :data:`MEMORY_LIMIT_BYTES`: the memory one step may ask for. Default: the smaller of 16 GiB and
  half the machine's physical memory (16 GiB where that cannot be read). Raise it with
  ``DIFFEOPROBE_MEMORY_LIMIT``, a size such as ``64GB``, ``512MiB`` or ``2e10`` (bytes), or by
  assigning ``diffeoprobe.limits.MEMORY_LIMIT_BYTES`` in a program.
- :data:`MAX_GRID_RUNS`: the runs a grid file may expand to (default 100,000). Raise it with
  ``DIFFEOPROBE_MAX_RUNS`` (an integer), or by assigning ``diffeoprobe.limits.MAX_GRID_RUNS``.

>>> format_bytes(parse_bytes("64GB")), format_bytes(parse_bytes("1.5 GiB"))
('64 GB', '1.61 GB')
"""

from __future__ import annotations

import math
import os
import re

from diffeoprobe.errors import DiffeoProbeError

__all__ = [
    "DEFAULT_MEMORY_LIMIT_BYTES",
    "MAX_GRID_RUNS",
    "MEMORY_ENV",
    "MEMORY_LIMIT_BYTES",
    "MODULE_BYTES",
    "RUNS_ENV",
    "check_memory",
    "check_parameters",
    "check_runs",
    "format_bytes",
    "max_grid_runs",
    "memory_limit",
    "parse_bytes",
]

MEMORY_ENV = "DIFFEOPROBE_MEMORY_LIMIT"
"""The environment variable that sets :data:`MEMORY_LIMIT_BYTES` (a size: ``64GB``, ``2e10``)."""
RUNS_ENV = "DIFFEOPROBE_MAX_RUNS"
"""The environment variable that sets :data:`MAX_GRID_RUNS` (an integer)."""

_FIXED_LIMIT = 16 * 2**30


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):  # not POSIX, or the name is unknown
        return None


def _default_memory_limit() -> int:
    physical = _physical_memory()
    return _FIXED_LIMIT if not physical or physical <= 0 else min(_FIXED_LIMIT, physical // 2)


DEFAULT_MEMORY_LIMIT_BYTES: int = _default_memory_limit()
"""The smaller of 16 GiB and half the physical memory of this machine."""
MEMORY_LIMIT_BYTES: int = DEFAULT_MEMORY_LIMIT_BYTES
"""The memory one step may ask for (bytes), unless ``DIFFEOPROBE_MEMORY_LIMIT`` says otherwise."""
MAX_GRID_RUNS: int = 100_000
"""The runs one grid may expand to, unless ``DIFFEOPROBE_MAX_RUNS`` says otherwise."""

MODULE_BYTES = 4096
"""Bytes counted per ``nn.Module`` of a model besides its parameters (the Python objects)."""

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(text: str, name: str = MEMORY_ENV) -> int:
    """A size in bytes from ``"64GB"``, ``"512 MiB"``, ``"2e10"`` (units: B, kB, MB, GB, TB (powers
    of 1000), KiB, MiB, GiB, TiB (powers of 1024); case-insensitive; bytes without one).

    >>> parse_bytes("64GB"), parse_bytes("2GiB"), parse_bytes("1e6")
    (64000000000, 2147483648, 1000000)
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise DiffeoProbeError(
            f"{name} must be a size such as 64GB, 512MiB or 2e10 (bytes), got {text!r}"
        )
    value = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value < 1:
        raise DiffeoProbeError(f"{name} must be a size of at least 1 byte, got {text!r}")
    return int(value)


def format_bytes(size: float) -> str:
    """A size for a message: ``'23.4 GB'`` (powers of 1000), ``'more than 1e300 bytes'``.

    >>> format_bytes(3), format_bytes(2.5e9), format_bytes(float("inf"))
    ('3 bytes', '2.5 GB', 'more than 1e300 bytes')
    """
    if not math.isfinite(size) or size > 1e300:
        return "more than 1e300 bytes"
    if size < 1000:
        return f"{int(size)} bytes"
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            value = size / scale
            return f"{value:.3g} {unit}" if value < 1e6 else f"{size:.3g} bytes"
    raise AssertionError("size >= 1000 has a unit")


def memory_limit() -> int:
    """The memory limit in bytes: ``DIFFEOPROBE_MEMORY_LIMIT`` if set, else :data:`MEMORY_LIMIT_BYTES`."""
    text = os.environ.get(MEMORY_ENV, "").strip()
    return parse_bytes(text) if text else int(MEMORY_LIMIT_BYTES)


def max_grid_runs() -> int:
    """The run limit of a grid: ``DIFFEOPROBE_MAX_RUNS`` if set, else :data:`MAX_GRID_RUNS`."""
    text = os.environ.get(RUNS_ENV, "").strip()
    if not text:
        return int(MAX_GRID_RUNS)
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise DiffeoProbeError(f"{RUNS_ENV} must be an integer >= 1, got {text!r}")
    return value


def check_memory(name: str, needed: float, what: str) -> None:
    """Refuse (:class:`DiffeoProbeError`) when ``needed`` bytes pass :func:`memory_limit`.

    ``name`` is the parameter (or parameters) responsible, ``what`` says what the memory holds.

    >>> check_memory("cut", 1e30, "the coefficients")
    Traceback (most recent call last):
    ...
    diffeoprobe.errors.DiffeoProbeError: cut: the coefficients would need about 1e+30 bytes, over the memory limit of ...
    """
    limit = memory_limit()
    if needed > limit:
        amount = format_bytes(needed)
        amount = amount if amount.startswith("more") else f"about {amount}"
        raise DiffeoProbeError(
            f"{name}: {what} would need {amount}, over the memory limit of "
            f"{format_bytes(limit)}; choose a smaller value, or raise the limit with "
            f"{MEMORY_ENV} (e.g. {MEMORY_ENV}=64GB)"
        )


def check_parameters(name: str, parameters: float, modules: float = 0) -> None:
    """Refuse a model of ``parameters`` float32 weights in ``modules`` modules past the limit."""
    needed = 4.0 * parameters + MODULE_BYTES * modules
    shown = f"{parameters:.3g}" if math.isfinite(parameters) and parameters < 1e300 else "> 1e300"
    check_memory(name, needed, f"the model's {shown} parameters")


def check_runs(count: float, name: str) -> None:
    """Refuse a grid of ``count`` runs past :func:`max_grid_runs` (before any run is built)."""
    limit = max_grid_runs()
    if count > limit:
        shown = f"{count:,}" if isinstance(count, int) and count < 10**18 else f"{count:.3g}"
        raise DiffeoProbeError(
            f"{name}: the grid expands to {shown} runs (the product of the axes' lengths), over "
            f"the limit of {limit:,} runs; use "
            f"shorter axes, or raise the limit with {RUNS_ENV} (e.g. {RUNS_ENV}={10 * limit})"
        )
