"""Max-entropy diffeomorphisms of 1D signals and 2D images (docs/science.md section 2).

A displacement component is a random sine series that vanishes on the border,

    tau(u, v) = sum_{i, j >= 1, sqrt(i^2 + j^2) < c + 1/2} C_ij sin(pi i u) sin(pi j v),
    C_ij ~ N(0, T / (i^2 + j^2)),                                  (1D: C_i ~ N(0, T / i^2))

on the grid ``u_p = p / (n - 1)`` (``torch.linspace(0, 1, n)``, as the published reference), so the
border pixels never move. In pixels, component ``k`` is ``tau * n_k`` with ``n_k`` the length of
*its own* axis (component 0 runs along H, the rows; component 1 along W, the columns). The deformed
signal is ``(tau x)(p) = x(p - displacement(p))`` with the source point clamped to the image.

Size conventions (the two families differ on purpose; see docs/perturbations.md):

- :func:`sample_displacement`: ``size = L`` or ``(L,)`` is 1D, ``(H, W)`` is 2D (like the tensors).
- :func:`typical_displacement`, :func:`temperature_for`, :func:`temperature_range`: ``size = n``
  is a *square 2D* ``n x n`` image (the paper's convention, ``temperature_for(1.0, 32)``), ``(L,)``
  is 1D and ``(H, W)`` is 2D.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from diffeoprobe.config import INTERPOLATIONS
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.limits import check_memory
from diffeoprobe.validate import (
    MAX_TEMPERATURE,
    check_choice,
    check_cut,
    check_device,
    check_dtype,
    check_generator,
    check_int,
    check_positive,
    check_signal,
    check_size,
    check_temperature,
)

__all__ = [
    "GAUSSIAN_SIGMA",
    "GAUSSIAN_WINDOW",
    "deform",
    "deform_memory",
    "remap",
    "sample_displacement",
    "temperature_for",
    "temperature_range",
    "typical_displacement",
]

# Width of the Gaussian interpolation kernel in pixels: the published reference's value
# (docs/science.md section 2, "sigma about 0.47 pixel").
GAUSSIAN_SIGMA = 0.4715


def _gaussian_taps(dtype: torch.dtype) -> tuple[int, int]:
    """Offsets ``(lo, hi)`` of the truncated Gaussian window ``floor(s) + lo .. floor(s) + hi``.

    With ``r = ceil(sqrt(2 sigma^2 ln(1 / u)))`` (``u`` the unit roundoff of ``dtype``), the window
    is ``floor(s) - r + 1 .. floor(s) + r``: every omitted pixel is at least ``r`` pixels from ``s``,
    so its weight ``exp(-r^2 / (2 sigma^2))`` is below ``u`` while the kept weights sum to more
    than 1/2. float32: ``r = 3``, 6 taps per axis, omitted weights below ``1.7e-9``; float64:
    ``r = 5``, 10 taps, below ``4e-25``. So the truncated kernel equals the dense one to the
    precision of the dtype.
    """
    unit_roundoff = torch.finfo(dtype).eps / 2
    reach = math.ceil(math.sqrt(2 * GAUSSIAN_SIGMA**2 * math.log(1 / unit_roundoff)))
    return 1 - reach, reach


# The window of each working dtype: (lo, hi) offsets from floor(source), both included.
GAUSSIAN_WINDOW = {dtype: _gaussian_taps(dtype) for dtype in (torch.float32, torch.float64)}


# --- sampling -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _sine_table(n: int, cut: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``s[p, i - 1] = sin(pi i u_p)`` on ``u_p = p / (n - 1)``, shape ``(n, cut)``."""
    u = torch.linspace(0, 1, n, dtype=torch.float64)
    i = torch.arange(1, cut + 1, dtype=torch.float64)
    return torch.sin(math.pi * u[:, None] * i[None, :]).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _mode_std(ndim: int, cut: int) -> torch.Tensor:
    """Standard deviation of each coefficient at ``T = 1``: ``1 / |k|`` inside the cut, else 0.

    Shape ``(cut,)`` in 1D, ``(cut, cut)`` in 2D, float64.
    """
    k = torch.arange(1, cut + 1, dtype=torch.float64)
    if ndim == 1:
        return 1 / k
    r = (k[:, None] ** 2 + k[None, :] ** 2).sqrt()
    return (r < cut + 0.5) / r


def _coefficients(
    batch: int,
    ndim: int,
    temperature: float,
    cut: int,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The mode amplitudes ``C`` of ``batch`` fields, ``(B, ndim, c)`` or ``(B, ndim, c, c)``.

    Drawn in float64 on the generator's device (else on ``device``), then moved and cast, so a
    seed gives the same coefficients whatever the device and dtype of the result.
    """
    draw_device = generator.device if generator is not None else device
    std = math.sqrt(temperature) * _mode_std(ndim, cut).to(draw_device)
    shape = (batch, ndim) + std.shape
    coeffs = torch.randn(shape, generator=generator, dtype=torch.float64, device=draw_device)
    return (coeffs * std).to(device=device, dtype=dtype)


def sample_displacement(
    batch: int,
    size: int | Sequence[int],
    temperature: float,
    cut: int = 3,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw ``batch`` independent max-entropy displacement fields, in pixels.

    Args:
        batch: number of fields ``B`` (one per image).
        size: ``L`` or ``(L,)`` for 1D signals, ``(H, W)`` for 2D images.
        temperature: ``0 <= T <= MAX_TEMPERATURE`` (1e6, see :mod:`diffeoprobe.validate`:
            past it the field would overflow); the variance of mode ``k`` is ``T / |k|^2``.
        cut: integer ``c >= 1``; modes with ``|k| < c + 1/2`` are kept (1D: ``i <= c``).
        generator: the random source. Coefficients are drawn in float64 on its device (or on
            ``device`` without one), so a seed gives the same field bit for bit at any ``dtype``.
        device: where the field lives; defaults to the generator's device, else the CPU.
        dtype: floating dtype of the result.

    Returns:
        Tensor ``(B, ndim, *size)``: component ``k`` is the displacement along spatial axis ``k``
        (2D: 0 = rows/H, 1 = columns/W) in pixels of that axis. Every field is zero on the border
        pixels; ``n = 1`` along an axis gives a zero field.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sample_displacement(4, (32, 24), temperature=1e-3, generator=g).shape
        torch.Size([4, 2, 32, 24])
        >>> sample_displacement(4, 64, temperature=1e-3, generator=g).shape
        torch.Size([4, 1, 64])
    """
    batch = check_int(batch, "batch", minimum=1)
    size = check_size(size)
    temperature = check_temperature(temperature)
    cut = check_cut(cut)
    dtype = check_dtype(dtype)
    generator = check_generator(generator)
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    device = check_device(device)

    ndim = len(size)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    cut_part, field = deform_memory(batch, size, cut, "gaussian", 8 if work == torch.float64 else 4)
    check_memory(
        "cut" if cut_part >= field else "batch and size",
        cut_part + field,
        f"{batch} displacement fields of size {size} (cut {cut})",
    )
    coeffs = _coefficients(batch, ndim, temperature, cut, generator, device, work)
    return _field(coeffs, size).to(dtype)


def _field(coeffs: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Sum the sine series of ``coeffs`` on the grid: displacement ``(B, ndim, *size)`` in pixels."""
    ndim, cut = coeffs.shape[1], coeffs.shape[2]
    coeffs = coeffs * torch.tensor(size, dtype=coeffs.dtype, device=coeffs.device).view(
        1, ndim, *[1] * ndim
    )
    tables = [_sine_table(n, cut, coeffs.device, coeffs.dtype) for n in size]
    if ndim == 1:
        return torch.einsum("bki,pi->bkp", coeffs, tables[0])
    return torch.einsum("bkij,hi,wj->bkhw", coeffs, tables[0], tables[1])


def _mean_square_displacement(
    size: int | Sequence[int], temperature: float, cut: int = 3
) -> torch.Tensor:
    """The exact ``E[u_k(p)^2]`` in pixels^2 from the mode sum, shape ``(ndim, *size)``, float64.

    Size convention of :func:`sample_displacement` (an int is 1D).
    """
    size = check_size(size)
    cut = check_cut(cut)
    variance = float(temperature) * _mode_std(len(size), cut) ** 2
    sq = [_sine_table(n, cut, torch.device("cpu"), torch.float64) ** 2 for n in size]
    if len(size) == 1:
        per_unit = (sq[0] @ variance)[None]
    else:
        per_unit = (sq[0] @ variance @ sq[1].T)[None].expand(2, -1, -1)
    pixels = torch.tensor(size, dtype=torch.float64).view(-1, *([1] * len(size)))
    return per_unit * pixels**2


# --- typical displacement and temperatures ---------------------------------------------------------


def _formula_size(size: int | Sequence[int]) -> tuple[int, ...]:
    """An int is a square 2D image here (the paper's ``n``); ``(L,)`` is 1D, ``(H, W)`` is 2D."""
    if isinstance(size, int) and not isinstance(size, bool):
        return check_size((size, size))
    return check_size(size)


def _delta2_per_temperature(size: tuple[int, ...], cut: int) -> tuple[float, float]:
    """``delta^2 / T`` and the folding bound ``delta_max`` (pixels) for ``size`` and ``cut``.

    1D (exact): mean_u E[tau^2] = (T / 2) S_c, S_c = sum_{i<=c} 1 / i^2, so delta^2 = L^2 T S_c / 2.
    2D (the paper's asymptotics): delta^2 = n^2 pi T ln(c) / 4, with n^2 = (H^2 + W^2) / 2.
    Both: delta_max = n / (pi c), where delta times the top wavenumber pi c / n is one.
    """
    if len(size) == 1:
        (n,) = size
        s_c = sum(1 / i**2 for i in range(1, cut + 1))
        return n**2 * s_c / 2, n / (math.pi * cut)
    if cut < 2:
        raise DiffeoProbeError(
            f"cut must be >= 2 for the 2D temperature formulas (they contain ln(cut)), got {cut}"
        )
    h, w = size
    n2 = (h**2 + w**2) / 2
    return n2 * math.pi * math.log(cut) / 4, math.sqrt(n2) / (math.pi * cut)


def typical_displacement(temperature: float, size: int | Sequence[int], cut: int = 3) -> float:
    """Typical displacement ``delta`` in pixels: the rms of ``|u(p)|`` over pixels and fields.

    2D (paper): ``delta = (n / 2) sqrt(pi T ln c)``, with ``n = sqrt((H^2 + W^2) / 2)`` for a
    non-square image (``delta^2`` sums the two components, each scaled by its own axis); needs
    ``cut >= 2``. 1D (exact): ``delta = L sqrt(T S_c / 2)``, ``S_c = sum_{i=1..c} 1 / i^2``.

    Args:
        temperature: ``0 <= T <= MAX_TEMPERATURE``.
        size: ``n`` (square 2D ``n x n``), ``(H, W)`` (2D) or ``(L,)`` (1D).
        cut: integer ``c``.

    Example:
        >>> round(typical_displacement(temperature_for(1.0, 32), 32), 12)
        1.0
    """
    temperature = check_temperature(temperature)
    size = _formula_size(size)
    per_t, _ = _delta2_per_temperature(size, check_cut(cut))
    return math.sqrt(per_t * temperature)


def temperature_for(delta: float, size: int | Sequence[int], cut: int = 3) -> float:
    """The temperature whose typical displacement is ``delta`` pixels (inverse of the above).

    2D: ``T = 4 delta^2 / (pi n^2 ln c)``; 1D: ``T = 2 delta^2 / (L^2 S_c)``. Same ``size``
    convention as :func:`typical_displacement` (an int is a square 2D image).

    Raises:
        DiffeoProbeError: ``delta`` is negative, not finite, or so large that ``T`` would pass
            ``MAX_TEMPERATURE`` (about a thousand image widths; the message gives the largest).

    Example:
        >>> f"{temperature_for(1.0, 32, cut=3):.3e}"
        '1.132e-03'
    """
    delta = check_positive(delta, "delta", allow_zero=True)
    size = _formula_size(size)
    per_t, _ = _delta2_per_temperature(size, check_cut(cut))
    largest = math.sqrt(per_t * MAX_TEMPERATURE)
    if delta > largest:  # compared before squaring: delta**2 overflows a float past 1.3e154
        raise DiffeoProbeError(
            f"delta must be in [0, {largest:.6g}] pixels for size {size} and cut {cut} "
            f"(temperature at most {MAX_TEMPERATURE:g}), got {delta!r}"
        )
    return min(delta**2 / per_t, MAX_TEMPERATURE)


def temperature_range(size: int | Sequence[int], cut: int = 3) -> tuple[float, float]:
    """``(T_min, T_max)``: half a pixel of typical displacement, and the onset of folding.

    ``T_min`` gives ``delta = 1/2`` pixel; ``T_max`` gives ``delta = n / (pi c)``, where the
    typical displacement times the highest wavenumber ``pi c / n`` is one. 2D: ``T_min =
    1 / (pi n^2 ln c)``, ``T_max = 4 / (pi^3 c^2 ln c)``; 1D: ``T_min = 1 / (2 L^2 S_c)``,
    ``T_max = 2 / (pi^2 c^2 S_c)``. Same ``size`` convention as :func:`typical_displacement`.

    Example:
        >>> lo, hi = temperature_range(32, cut=3)
        >>> f"{lo:.3e} {hi:.3e}"
        '2.829e-04 1.305e-02'
    """
    size = _formula_size(size)
    per_t, delta_max = _delta2_per_temperature(size, check_cut(cut))
    return 0.25 / per_t, delta_max**2 / per_t


# --- memory ---------------------------------------------------------------------------------------


def deform_memory(
    batch: int,
    size: Sequence[int],
    cut: int,
    interp: str = "bilinear",
    itemsize: int = 4,
    channels: int = 1,
) -> tuple[float, float]:
    """Bytes :func:`deform` allocates for ``batch`` images, as ``(cut's part, the images' part)``.

    The cut's part grows with ``c^ndim`` and ``c n``: the mode weights (``c^ndim``, float64), the
    coefficients (``B ndim c^ndim``, drawn in float64 and cast), the sine tables (``n c`` per axis,
    the column table ``2 ndim c W``) and the per-row sums (``B H ndim c``; the Gaussian path's
    ``einsum`` holds ``B ndim c n`` instead). The images' part is the input copy, the output and
    the sampling grid (``B ndim pixels``); the Gaussian path adds the field and its windows.

    >>> cut_part, images = deform_memory(256, (32, 32), 3)
    >>> round(cut_part / 1e3), round(images / 1e6)
    (297, 7)
    """
    ndim, pixels = len(size), math.prod(float(n) for n in size)
    modes = float(cut) ** ndim
    rows = float(size[0]) if ndim == 2 else 1.0
    longest = float(max(size))
    cut_part = 32 * modes + batch * ndim * modes * (16 + itemsize)  # weights; coefficients
    cut_part += sum(16.0 * n * cut for n in size) + 2 * ndim * cut * size[-1] * (8 + itemsize)
    cut_part += batch * ndim * cut * (longest if interp == "gaussian" else rows) * itemsize
    per_image = channels * pixels * 3 + ndim * pixels * (2 if interp != "gaussian" else 8)
    return cut_part, batch * per_image * itemsize


def _check_memory(x: torch.Tensor, cut: int, interp: str, name: str = "x") -> None:
    """Refuse a :func:`deform` of ``x`` whose fields or images would pass the memory limit."""
    itemsize = 8 if x.dtype == torch.float64 else 4
    cut_part, images = deform_memory(
        x.shape[0], tuple(x.shape[2:]), cut, interp, itemsize, x.shape[1]
    )
    what = f"the deformation of {x.shape[0]} images of shape {tuple(x.shape[1:])}"
    check_memory("cut" if cut_part >= images else name, cut_part + images, what + f" (cut {cut})")


# --- resampling ------------------------------------------------------------------------------------


def _per_pixel(n: int) -> float:
    """Length of one pixel in ``grid_sample`` coordinates (``align_corners=True``: -1 and +1 are
    the centres of the first and last pixels).
    """
    return 2 / max(n - 1, 1)


@functools.lru_cache(maxsize=64)
def _identity_grid(size: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The identity sampling grid ``(1, rows, W, 2)``, last axis (column, row); 1D has one row."""
    cols = torch.linspace(-1, 1, size[-1], dtype=torch.float64)
    rows = (
        torch.linspace(-1, 1, size[0], dtype=torch.float64)
        if len(size) == 2
        else -torch.ones(1, dtype=torch.float64)
    )
    r, c = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([c, r], -1)[None].to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _column_table(
    width: int, ndim: int, cut: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``(ndim * c, 2 W)``: row ``k c + j`` holds ``sin(pi j u_w)`` in grid component ``k`` only."""
    table = torch.zeros(ndim, cut, width, 2, dtype=torch.float64)
    sines = _sine_table(width, cut, torch.device("cpu"), torch.float64).T
    for k in range(ndim):
        table[k, :, :, k] = sines
    return table.reshape(ndim * cut, 2 * width).to(device=device, dtype=dtype)


def _sampling_grid(coeffs: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """The ``grid_sample`` grid of ``p - u(p)`` straight from the coefficients, ``(B, rows, W, 2)``.

    Equal to the identity grid plus the normalised ``-u`` of :func:`_field`, but written in the
    grid's own layout by two small matrix products (the hot path of :func:`deform`); memory stays
    ``O(c (H + W))`` besides the grid.
    """
    b, ndim, cut = coeffs.shape[:3]
    # grid_sample orders the components (column, row) and samples at p - u.
    scale = [-n * _per_pixel(n) for n in reversed(size)]
    coeffs = coeffs.flip(1) * torch.tensor(scale, dtype=coeffs.dtype, device=coeffs.device).view(
        1, ndim, *[1] * ndim
    )
    if ndim == 1:
        rows, per_row = 1, coeffs.reshape(b, cut)
    else:
        rows = size[0]
        sines = _sine_table(rows, cut, coeffs.device, coeffs.dtype)
        per_row = sines @ coeffs.permute(2, 0, 1, 3).reshape(cut, -1)  # (H, B * 2 * c)
        per_row = per_row.view(rows, b, ndim * cut).transpose(0, 1).reshape(b * rows, -1)
    table = _column_table(size[-1], ndim, cut, coeffs.device, coeffs.dtype)
    grid = (per_row @ table).view(b, rows, size[-1], 2)
    return grid.add_(_identity_grid(size, coeffs.device, coeffs.dtype))


def _displacement_grid(displacement: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """The ``grid_sample`` grid of ``p - u(p)`` for a displacement ``(B, ndim, *size)`` in pixels."""
    ndim = len(size)
    scale = [-_per_pixel(n) for n in reversed(size)]
    offset = displacement.flip(1) * torch.tensor(
        scale, dtype=displacement.dtype, device=displacement.device
    ).view(1, ndim, *[1] * ndim)
    offset = offset.movedim(1, -1)
    if ndim == 1:
        offset = F.pad(offset, (0, 1)).unsqueeze(1)
    return _identity_grid(size, displacement.device, displacement.dtype) + offset


def _grid_sample(x: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """Bilinear or nearest resampling; ``padding_mode="border"`` clamps the source point to the
    image exactly as the reference does. 1D runs as a ``(B, C, 1, L)`` image.
    """
    one_d = x.dim() == 3
    x = x.unsqueeze(2) if one_d else x
    grid = grid.expand(x.shape[0], -1, -1, -1)
    out = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=True)
    return out.squeeze(2) if one_d else out


# --- Gaussian resampling ---------------------------------------------------------------------------

# Output pixels per chunk of the batch in _gaussian: a chunk's temporaries stay in cache. Fixed (not
# per thread), so that the result does not depend on the number of threads.
_GAUSSIAN_CHUNK_PIXELS = 1 << 15


@functools.lru_cache(maxsize=64)
def _tap_ratios(taps: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(T,)``: ``r_t = c(t - m) / c(t - 1 - m)`` for ``t >= 1`` (entry 0 unused), ``m = T // 2``,
    with ``c(j) = exp(-j^2 / (2 sigma^2))``.
    """
    j = torch.arange(taps, dtype=torch.float64) - taps // 2
    ratios = torch.exp(-(2 * j - 1) / (2 * GAUSSIAN_SIGMA**2))
    return ratios.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=4)
def _bag_indices(bags: int, taps: int, device: torch.device) -> torch.Tensor:
    """``arange(bags * taps).view(bags, taps)``: bag ``i`` sums rows ``i T .. i T + T - 1``."""
    return torch.arange(bags * taps, device=device).view(bags, taps)


def _axis_window(source: torch.Tensor, n: int, taps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First pixel (long) of the window of ``taps`` pixels of each source point, and its weights.

    ``source`` is ``(N,)`` in ``[0, n - 1]``. The window is ``floor(s) + lo .. floor(s) + hi``
    (``GAUSSIAN_WINDOW``) moved inside the axis where it would cross the border (``taps = n`` when
    the axis is shorter): it then holds every pixel of the truncated window and more, so it is
    never less exact, and needs neither padding nor masks. With ``m = T // 2`` and ``e = s -
    first - m`` (exact, in ``[-m, T - 1 - m]``), the weight of pixel ``first + t`` is
    ``exp(-(t - m - e)^2 / (2 sigma^2)) = c(t - m) G^(t - m) x (a factor common to the
    window)``, with ``c(j) = exp(-j^2 / (2 sigma^2))`` and ``G = exp(e / sigma^2)``. The common
    factor cancels in the normalisation, so the returned ``(N, T)`` weights are ``c(t - m)
    G^(t - m) = exp((e^2 - (t - m - e)^2) / (2 sigma^2))``: the cumulative products of
    ``c(-m) G^(-m), G r_1, .., G r_(T-1)`` with ``r_t = c(t - m) / c(t - 1 - m)``, two ``exp``
    per point instead of one per tap. They lie between ``e^-48`` and ``e^21`` in float32
    (``T = 6``), ``e^-147`` and ``e^57`` in float64 (``T = 10``), so the product of the two
    axes' sums cannot overflow.
    """
    lo = GAUSSIAN_WINDOW[source.dtype][0]
    mid = taps // 2
    first = source.floor().add_(lo).clamp_(0, n - taps)  # integral, still floating
    offset = (source - first).sub_(mid)
    factors = torch.exp(offset * (1 / GAUSSIAN_SIGMA**2)).unsqueeze(1)
    factors = factors * _tap_ratios(taps, source.device, source.dtype)
    factors[:, 0] = torch.exp(
        offset * (-mid / GAUSSIAN_SIGMA**2) - mid**2 / (2 * GAUSSIAN_SIGMA**2)
    )
    return first.long(), factors.cumprod(1)


def _gaussian(x: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """``out(p) = sum_q g(q - s(p)) x(q) / sum_q g(q - s(p))`` with a truncated Gaussian ``g``.

    ``s(p) = p - u(p)`` is clamped to the image. On a CPU without autograd this is the native
    kernel of :mod:`diffeoprobe.perturb.native` when it could be built (the same window and
    weights, fused in C); otherwise, and on CUDA, the PyTorch formulation below. The batch runs in chunks of about
    ``_GAUSSIAN_CHUNK_PIXELS`` output pixels (see :func:`_gaussian_chunk`): the
    temporaries of a chunk stay in cache and are reused by the allocator instead of being mapped
    afresh (at 3 x 32 x 32 that was 20-40% faster than one pass over a batch of 256).
    """
    from diffeoprobe.perturb.native import gaussian_remap  # imports this module

    native = gaussian_remap(x, displacement)
    if native is not None:
        return native
    b = x.shape[0]
    displacement = displacement.expand(b, *displacement.shape[1:])
    chunk = max(1, _GAUSSIAN_CHUNK_PIXELS // math.prod(x.shape[2:]))
    if chunk >= b:
        return _gaussian_chunk(x, displacement)
    if torch.is_grad_enabled() and (x.requires_grad or displacement.requires_grad):
        # out= has no autograd: concatenate the chunks instead.
        parts = [
            _gaussian_chunk(x[i : i + chunk], displacement[i : i + chunk])
            for i in range(0, b, chunk)
        ]
        return torch.cat(parts)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for i in range(0, b, chunk):
        _gaussian_chunk(x[i : i + chunk], displacement[i : i + chunk], out=out[i : i + chunk])
    return out


def _gaussian_chunk(
    x: torch.Tensor, displacement: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`_gaussian` of one chunk, written into ``out`` when given.

    The 2D Gaussian factorises over the axes, so the dense normalised kernel is the product of
    per-axis windows (:func:`_axis_window`), each normalised by its own sum. With the image laid
    out channels last, a row of the table ``windows`` is ``T_W`` consecutive pixels of an image
    row (all channels). Per output pixel, one ``embedding_bag`` sums the ``T_H`` rows of its window
    weighted by the row weights, a second sums the ``T_W`` columns of that weighted by the column
    weights, and the division by the two weight sums normalises. 1D needs only the second step.
    No ``(B, C, H W, T^2)`` temporary is formed.
    """
    b, c = x.shape[:2]
    size = tuple(x.shape[2:])
    pixels = math.prod(size)
    lo, hi = GAUSSIAN_WINDOW[x.dtype]
    taps = [min(hi - lo + 1, n) for n in size]
    first, weights, weight_sums = [], [], []
    for k, n in enumerate(size):
        shape = [1] * len(size)
        shape[k] = n
        p = torch.arange(n, dtype=x.dtype, device=x.device).view(shape)
        source = (p - displacement[:, k]).clamp(0, n - 1).reshape(-1)
        start, weight = _axis_window(source, n, taps[k])
        first.append(start)
        weights.append(weight)
        weight_sums.append(weight @ torch.ones(taps[k], dtype=x.dtype, device=x.device))
    total = functools.reduce(torch.mul, weight_sums)  # the product over the axes
    xl = x.movedim(1, -1).contiguous()  # (B, *size, C)
    if len(size) == 1:
        # Bag p: pixels first .. first + T - 1 of its image.
        image = torch.arange(0, b * pixels, pixels, device=x.device)
        index = (first[0].view(b, pixels) + image[:, None]).view(-1, 1)
        index = index + torch.arange(taps[0], device=x.device)
        value = F.embedding_bag(index, xl.view(-1, c), mode="sum", per_sample_weights=weights[0])
    else:
        (h, w), (th, tw) = size, taps
        # Row (b, y, x) of the window table: pixels (y, x .. x + T_W - 1), x <= W - T_W.
        per_row = w - tw + 1
        windows = xl.as_strided((b, h, per_row, tw * c), (h * w * c, w * c, c, 1))
        image = torch.arange(0, b * h * per_row, h * per_row, device=x.device)
        start = first[0] * per_row + first[1]
        index = (start.view(b, pixels) + image[:, None]).view(-1, 1)
        index = index + torch.arange(0, th * per_row, per_row, device=x.device)
        rows = F.embedding_bag(
            index, windows.reshape(-1, tw * c), mode="sum", per_sample_weights=weights[0]
        )
        value = F.embedding_bag(
            _bag_indices(b * pixels, tw, x.device),
            rows.view(-1, c),
            mode="sum",
            per_sample_weights=weights[1],
        )
    value = value.view(b, *size, c).movedim(-1, 1)
    norm = total.view(b, 1, *size)
    if out is None:
        return (value / norm).contiguous()
    return torch.div(value, norm, out=out)


def remap(x: torch.Tensor, displacement: torch.Tensor, interp: str = "bilinear") -> torch.Tensor:
    """Deform ``x`` by a given displacement: ``out(p) = x(p - displacement(p))``.

    The source point is clamped to ``[0, n - 1]`` along each axis (border). Deterministic and
    differentiable in ``x`` (and in ``displacement`` for bilinear and gaussian). float16 and
    bfloat16 are computed in float32 and cast back.

    Args:
        x: ``(B, C, L)`` or ``(B, C, H, W)``, floating point, any device.
        displacement: ``(B, ndim, *size)`` or ``(1, ndim, *size)`` in pixels (component ``k``
            along spatial axis ``k``), as returned by :func:`sample_displacement`.
        interp: ``"bilinear"`` (1D: linear), ``"nearest"``, or ``"gaussian"`` (normalised
            Gaussian kernel of width ``GAUSSIAN_SIGMA`` pixel over the whole image, computed
            exactly through a truncated separable window).

    Returns:
        Tensor like ``x`` (shape, dtype, device).

    Example:
        >>> x = torch.arange(5.0).view(1, 1, 5)
        >>> remap(x, torch.ones(1, 1, 5)).tolist()  # the signal moves one pixel to the right
        [[[0.0, 0.0, 1.0, 2.0, 3.0]]]
    """
    check_signal(x)
    check_choice(interp, "interp", INTERPOLATIONS)
    size = tuple(x.shape[2:])
    expected = (len(size), *size)
    if (
        not isinstance(displacement, torch.Tensor)
        or not displacement.is_floating_point()
        or tuple(displacement.shape[1:]) != expected
        or displacement.shape[0] not in (1, x.shape[0])
    ):
        got = tuple(displacement.shape) if isinstance(displacement, torch.Tensor) else displacement
        raise DiffeoProbeError(
            f"displacement must be a floating tensor of shape ({x.shape[0]} or 1, {', '.join(map(str, expected))}), got {got!r}"
        )
    # One pass without a temporary (isfinite(u).all() cost a third of the Gaussian remap); a sum
    # that overflowed is told apart by the exact count.
    if not torch.isfinite(displacement.sum()):
        bad = int((~torch.isfinite(displacement)).sum())
        if bad:
            raise DiffeoProbeError(
                f"displacement must be finite (pixels), got {bad} NaN or infinite values"
            )
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    displacement = displacement.to(device=x.device, dtype=work)
    if interp == "gaussian":
        out = _gaussian(x.to(work), displacement)
    else:
        out = _grid_sample(x.to(work), _displacement_grid(displacement, size), interp)
    return out.to(x.dtype)


def deform(
    x: torch.Tensor,
    temperature: float,
    cut: int = 3,
    interp: str = "bilinear",
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply an independent random max-entropy diffeomorphism to every signal of a batch.

    Args:
        x: ``(B, C, L)`` or ``(B, C, H, W)``, floating point, any device.
        temperature: ``0 <= T <= MAX_TEMPERATURE`` (see :func:`temperature_for` to set it from a
            displacement in pixels). ``T = 0`` returns ``x.clone()`` without drawing from
            ``generator``.
        cut: integer frequency cut-off ``c >= 1``.
        interp: ``"bilinear"``, ``"nearest"`` or ``"gaussian"`` (see :func:`remap`).
        generator: random source for the fields (drawn on its device, then moved to ``x``'s).

    Returns:
        Tensor like ``x``: ``x(p - u(p))`` with ``u`` from :func:`sample_displacement` (float32,
        or float64 for a float64 ``x``).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.rand(8, 3, 32, 32)
        >>> deform(x, temperature_for(1.0, 32), cut=3, generator=g).shape
        torch.Size([8, 3, 32, 32])
    """
    check_signal(x)
    temperature = check_temperature(temperature)
    cut = check_cut(cut)
    check_choice(interp, "interp", INTERPOLATIONS)
    generator = check_generator(generator)
    if temperature == 0:
        return x.clone()
    _check_memory(x, cut, interp)
    size = tuple(x.shape[2:])
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    coeffs = _coefficients(x.shape[0], len(size), temperature, cut, generator, x.device, work)
    if interp == "gaussian":
        out = _gaussian(x.to(work), _field(coeffs, size))
    else:
        out = _grid_sample(x.to(work), _sampling_grid(coeffs, size), interp)
    return out.to(x.dtype)
