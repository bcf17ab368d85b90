"""Max-entropy diffeomorphisms: sampling, temperatures, remap, deform (kornia's per-op list)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.perturb import (
    deform,
    diffeo,
    native,
    remap,
    sample_displacement,
    temperature_for,
    temperature_range,
    typical_displacement,
)
from diffeoprobe.perturb.diffeo import GAUSSIAN_SIGMA, GAUSSIAN_WINDOW, _mean_square_displacement
from diffeoprobe.validate import MAX_TEMPERATURE

SIZES = [(17,), (16, 16), (12, 20)]
INTERPS = ["bilinear", "nearest", "gaussian"]
DTYPES = [torch.float16, torch.float32, torch.float64]


def _gen(device: torch.device, seed: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _image(size: tuple[int, ...], batch: int = 3, channels: int = 2, **kw) -> torch.Tensor:
    return torch.rand(batch, channels, *size, generator=torch.Generator().manual_seed(1), **kw)


def _dense_gaussian(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The reference's definition: a normalised Gaussian over all pixels of the image."""
    size = x.shape[2:]
    axes = [torch.arange(n, dtype=x.dtype) for n in size]
    grid = torch.meshgrid(*axes, indexing="ij")
    src = [(p - u[:, k]).clamp(0, n - 1) for k, (p, n) in enumerate(zip(grid, size, strict=False))]
    d2 = sum(
        (q.reshape(-1)[None, None, :] - s.reshape(len(u), -1, 1)) ** 2
        for q, s in zip(grid, src, strict=False)
    )
    kernel = torch.exp(-d2 / (2 * GAUSSIAN_SIGMA**2))
    kernel = kernel / kernel.sum(-1, keepdim=True)  # (B, P_out, P_in)
    return torch.einsum("bpq,bcq->bcp", kernel, x.flatten(2)).view_as(x)


# --- sample_displacement ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, *SIZES, (1, 1), (1,)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_displacement_shape_dtype_device(size, dtype, device):
    u = sample_displacement(5, size, 1e-3, generator=_gen(device), device=device, dtype=dtype)
    dims = (size,) if isinstance(size, int) else size
    assert u.shape == (5, len(dims), *dims)
    assert u.dtype == dtype and u.device.type == device.type
    assert torch.isfinite(u).all()


@pytest.mark.parametrize("size", SIZES)
def test_sample_displacement_vanishes_on_border(size):
    u = sample_displacement(8, size, 1e-2, cut=5, generator=_gen("cpu"), dtype=torch.float64)
    for axis in range(len(size)):
        assert u.select(axis + 2, 0).abs().max() < 1e-12
        assert u.select(axis + 2, size[axis] - 1).abs().max() < 1e-12
    assert u[:, :, 1:-1].abs().max() > 0


@pytest.mark.parametrize("size", SIZES)
def test_sample_displacement_same_seed_same_field_bitwise(size, device):
    a = sample_displacement(64, size, 1e-3, generator=_gen(device, 7), device=device)
    b = sample_displacement(64, size, 1e-3, generator=_gen(device, 7), device=device)
    assert torch.equal(a, b)
    c = sample_displacement(64, size, 1e-3, generator=_gen(device, 7), dtype=torch.float64)
    torch.testing.assert_close(a.cpu(), c.float().cpu(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", SIZES)
def test_sample_displacement_fields_independent_across_batch(size):
    u = sample_displacement(2000, size, 1e-3, generator=_gen("cpu"), dtype=torch.float64)
    assert not torch.equal(u[0], u[1])
    centre = tuple(n // 2 for n in size)
    v = u[(slice(None), slice(None), *centre)]  # (B, ndim)
    # Pairs of neighbouring samples, and the two components of one sample, are uncorrelated.
    pairs = [(v[0::2, 0], v[1::2, 0])] + ([(v[:, 0], v[:, 1])] if len(size) == 2 else [])
    for a, b in pairs:
        corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
        assert corr.abs() < 5 / math.sqrt(len(a))


@pytest.mark.parametrize("size", SIZES)
def test_empirical_mean_square_displacement_matches_mode_sum(size):
    temperature, cut, fields = 2e-3, 3, 4000
    u = sample_displacement(
        fields, size, temperature, cut, generator=_gen("cpu", 3), dtype=torch.float64
    )
    exact = _mean_square_displacement(size, temperature, cut)
    # Whole-image mean of u_k^2: one number per field, compared with its standard error.
    per_field = u.pow(2).flatten(2).mean(2)  # (B, ndim)
    error = per_field.mean(0) - exact.flatten(1).mean(1)
    assert (error.abs() < 5 * per_field.std(0) / math.sqrt(fields)).all()
    # Pixel by pixel (interior), a looser bound for the maximum over pixels.
    inner = (slice(None),) + tuple(slice(1, n - 1) for n in size)
    square = u.pow(2)[(slice(None), *inner)]
    bound = 6 * square.std(0) / math.sqrt(fields)
    assert ((square.mean(0) - exact[inner]).abs() < bound).all()


# --- temperatures ----------------------------------------------------------------------------------


def test_paper_temperature_numbers_for_32_pixels_cut_3():
    t_min, t_max = temperature_range(32, cut=3)
    assert t_min == pytest.approx(1 / (math.pi * 32**2 * math.log(3)), rel=1e-12)
    assert t_max == pytest.approx(4 / (math.pi**3 * 9 * math.log(3)), rel=1e-12)
    # docs/science.md quotes 2.83e-4, 1.31e-2 (the exact value is 1.3047e-2) and 1.13e-3.
    assert t_min == pytest.approx(2.83e-4, rel=2e-3)
    assert t_max == pytest.approx(1.31e-2, rel=5e-3)
    assert temperature_for(1.0, 32, cut=3) == pytest.approx(1.13e-3, rel=2e-3)


def test_int_size_is_square_2d_and_tuple_of_one_is_1d():
    assert temperature_for(1.0, 32) == temperature_for(1.0, (32, 32))
    s_3 = 1 + 1 / 4 + 1 / 9
    assert temperature_for(1.0, (32,)) == pytest.approx(2 / (32**2 * s_3), rel=1e-12)
    lo, hi = temperature_range((32,), cut=3)
    assert lo == pytest.approx(1 / (2 * 32**2 * s_3), rel=1e-12)
    assert hi == pytest.approx(2 / (math.pi**2 * 9 * s_3), rel=1e-12)


def test_non_square_uses_rms_side():
    n_eff = math.sqrt((24**2 + 40**2) / 2)
    expected = 4 / (math.pi * n_eff**2 * math.log(3))
    assert temperature_for(1.0, (24, 40)) == pytest.approx(expected, rel=1e-12)
    assert temperature_for(1.0, (24, 40)) == temperature_for(1.0, (40, 24))


@pytest.mark.parametrize("size", [32, (32,), (24, 40), (100,)])
@pytest.mark.parametrize("cut", [2, 3, 7])
def test_t_max_is_where_displacement_times_top_wavenumber_is_one(size, cut):
    _, t_max = temperature_range(size, cut)
    sides = (size, size) if isinstance(size, int) else size
    n = math.sqrt(sum(s**2 for s in sides) / len(sides))
    assert typical_displacement(t_max, size, cut) * math.pi * cut / n == pytest.approx(1, rel=1e-12)
    assert typical_displacement(temperature_range(size, cut)[0], size, cut) == pytest.approx(0.5)


@settings(max_examples=40, deadline=None)
@given(
    delta=st.floats(0, 50),
    size=st.one_of(
        st.integers(2, 512),
        st.tuples(st.integers(1, 512)),
        st.tuples(st.integers(1, 512), st.integers(1, 512)),
    ),
    cut=st.integers(2, 20),
)
def test_temperature_for_and_typical_displacement_are_inverses(delta, size, cut):
    t = temperature_for(delta, size, cut)
    assert typical_displacement(t, size, cut) == pytest.approx(delta, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("length,cut", [(17, 3), (64, 5), (33, 1)])
def test_1d_typical_displacement_is_exact_mode_sum(length, cut):
    # On the grid u_p = p / (L - 1) the pixel mean of sin^2 is (L - 1) / (2 L), not 1/2.
    t = 1e-3
    exact = _mean_square_displacement((length,), t, cut).mean().item()
    assert exact == pytest.approx(
        typical_displacement(t, (length,), cut) ** 2 * (length - 1) / length
    )


def test_2d_asymptotic_formula_against_exact_mode_sum_at_32_cut_3():
    # docs/perturbations.md: at T(delta = 1) the exact rms displacement is 0.816 pixel.
    t = temperature_for(1.0, 32, cut=3)
    exact = _mean_square_displacement((32, 32), t, 3).sum(0).mean().sqrt().item()
    modes = 1 / 2 + 2 / 5 + 1 / 8 + 2 / 10  # sum of 1 / (i^2 + j^2) over i^2 + j^2 < 3.5^2
    assert exact == pytest.approx(math.sqrt(modes / (math.pi / 2 * math.log(3))) * 31 / 32)
    assert exact == pytest.approx(0.816, abs=1e-3)


def test_2d_formulas_need_cut_at_least_2_but_1d_does_not():
    with pytest.raises(DiffeoProbeError, match="cut"):
        temperature_for(1.0, 32, cut=1)
    with pytest.raises(DiffeoProbeError, match="cut"):
        temperature_range((8, 9), cut=1)
    assert temperature_for(1.0, (32,), cut=1) > 0


# --- remap -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("interp", ["bilinear", "nearest"])
def test_remap_zero_displacement_is_identity(size, interp):
    x = _image(size, dtype=torch.float64)
    u = torch.zeros(1, len(size), *size, dtype=torch.float64)
    torch.testing.assert_close(remap(x, u, interp), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_bilinear_with_integer_displacement_is_a_shift_away_from_border(size, dtype, tol):
    x = _image(size, batch=2, dtype=dtype)
    shifts = [(2, -1), (-3, 1)] if len(size) == 2 else [(2,), (-3,)]
    u = (
        torch.tensor(shifts, dtype=dtype)
        .view(2, len(size), *([1] * len(size)))
        .expand(2, len(size), *size)
    )
    out = remap(x, u.contiguous())
    for b, shift in enumerate(shifts):
        # Output pixel p reads x(p - shift): compare where p - shift is inside the image.
        out_sl = tuple(slice(max(s, 0), n + min(s, 0)) for s, n in zip(shift, size, strict=False))
        in_sl = tuple(slice(max(-s, 0), n + min(-s, 0)) for s, n in zip(shift, size, strict=False))
        torch.testing.assert_close(
            out[(b, slice(None), *out_sl)], x[(b, slice(None), *in_sl)], rtol=0, atol=tol
        )


@pytest.mark.parametrize("size", SIZES)
def test_nearest_returns_values_of_the_input(size):
    x = _image(size, batch=2)
    u = 3 * torch.randn(2, len(size), *size, generator=torch.Generator().manual_seed(2))
    out = remap(x, u, "nearest")
    for b in range(2):
        for c in range(x.shape[1]):
            assert torch.isin(out[b, c], x[b, c]).all()


@pytest.mark.parametrize(
    "size", [(1,), (2,), (23,), (1, 1), (5, 1), (9, 14), (16, 16), (10, 10), (11, 31)]
)
@pytest.mark.parametrize("scale", [0.3, 2.0, 20.0])
def test_gaussian_truncated_equals_dense_kernel(size, scale, gaussian_path):
    x = _image(size, batch=2, dtype=torch.float64)
    u = scale * torch.randn(
        2, len(size), *size, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    torch.testing.assert_close(remap(x, u, "gaussian"), _dense_gaussian(x, u), rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [(23,), (9, 14), (6, 6), (5, 40)])
def test_gaussian_float32_window_is_exact_to_float32(size, gaussian_path):
    x = _image(size, batch=2, dtype=torch.float64)
    u = 2 * torch.randn(
        2, len(size), *size, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    out = remap(x.float(), u.float(), "gaussian")
    torch.testing.assert_close(out.double(), _dense_gaussian(x, u), rtol=0, atol=2e-6)


def test_gaussian_truncated_equals_dense_on_sampled_fields(gaussian_path):
    x = _image((12, 20), batch=4, dtype=torch.float64)
    _, t_max = temperature_range((12, 20), 3)
    u = sample_displacement(4, (12, 20), 4 * t_max, generator=_gen("cpu"), dtype=torch.float64)
    torch.testing.assert_close(remap(x, u, "gaussian"), _dense_gaussian(x, u), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "dtype,window,omitted",
    [(torch.float32, (-2, 3), 1.7e-9), (torch.float64, (-4, 5), 4e-25)],
)
def test_gaussian_window_omits_weights_below_unit_roundoff(dtype, window, omitted):
    lo, hi = GAUSSIAN_WINDOW[dtype]
    assert (lo, hi) == window
    unit_roundoff = torch.finfo(dtype).eps / 2
    # The nearest omitted pixel is 1 - lo (left, s = floor(s)) or > hi (right) pixels away.
    reach = min(1 - lo, hi)
    assert math.exp(-(reach**2) / (2 * GAUSSIAN_SIGMA**2)) < min(omitted, unit_roundoff)
    # One pixel less would not do.
    assert math.exp(-((reach - 1) ** 2) / (2 * GAUSSIAN_SIGMA**2)) > unit_roundoff


@pytest.mark.parametrize("size", [(40,), (6, 7)])
def test_gaussian_chunks_match_one_pass_and_dense(size, monkeypatch):
    """The PyTorch formulation (the native kernel has no chunks)."""
    monkeypatch.setattr(native, "gaussian_remap", lambda x, u: None)
    x = _image(size, batch=5, dtype=torch.float64)
    u = 3 * torch.randn(
        5, len(size), *size, generator=torch.Generator().manual_seed(6), dtype=torch.float64
    )
    whole = remap(x, u, "gaussian")
    monkeypatch.setattr(diffeo, "_GAUSSIAN_CHUNK_PIXELS", 1)  # one image per chunk
    chunked = remap(x, u, "gaussian")
    with_grad = remap(x.clone().requires_grad_(), u, "gaussian")  # the autograd path
    assert torch.equal(with_grad.detach(), chunked)
    # Vectorised loops treat a tensor's tail elements apart, hence last-bit differences only.
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-15)
    torch.testing.assert_close(whole, _dense_gaussian(x, u), rtol=0, atol=1e-12)


def test_gaussian_gradcheck_in_displacement():
    x = _image((5, 6), batch=2, dtype=torch.float64)
    u = 1.5 * torch.randn(
        2, 2, 5, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64
    )
    assert torch.autograd.gradcheck(lambda u: remap(x, u, "gaussian"), (u.requires_grad_(),))


def test_gaussian_keeps_a_channels_last_layout_and_values(gaussian_path):
    x = _image((9, 11), batch=3, channels=3)
    u = 2 * torch.randn(3, 2, 9, 11, generator=torch.Generator().manual_seed(8))
    out = remap(x.contiguous(memory_format=torch.channels_last), u, "gaussian")
    torch.testing.assert_close(out, remap(x, u, "gaussian"), rtol=0, atol=1e-6)


@pytest.mark.parametrize("interp", INTERPS)
def test_remap_broadcasts_a_single_field_over_the_batch(interp):
    x = _image((9, 11), batch=3)
    u = 2 * torch.randn(1, 2, 9, 11, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(remap(x, u, interp), remap(x, u.expand(3, -1, -1, -1), interp))


@pytest.mark.parametrize("size", [(7,), (5, 6)])
@pytest.mark.parametrize("interp", ["bilinear", "gaussian"])
def test_remap_gradcheck(size, interp):
    x = _image(size, batch=2, dtype=torch.float64).requires_grad_()
    u = 1.5 * torch.randn(
        2, len(size), *size, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    assert torch.autograd.gradcheck(lambda x: remap(x, u, interp), (x,))


@pytest.mark.parametrize(
    "displacement",
    [
        torch.zeros(3, 2, 8, 8),
        torch.zeros(3, 1, 8, 9),
        torch.zeros(2, 2, 8, 9),
        torch.zeros(3, 2, 8, 9, dtype=torch.long),
    ],
)
def test_remap_refuses_a_mismatched_displacement(displacement):
    with pytest.raises(DiffeoProbeError, match="displacement"):
        remap(torch.zeros(3, 1, 8, 9), displacement)


# --- deform ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("interp", INTERPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_deform_keeps_shape_dtype_device(size, interp, dtype, device):
    x = _image(size, dtype=dtype).to(device)
    out = deform(x, 1e-3, interp=interp, generator=_gen(device))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert torch.isfinite(out).all()


def test_deform_float16_matches_float32():
    x = _image((16, 16))
    a = deform(x.half(), 5e-3, generator=_gen("cpu"))
    b = deform(x, 5e-3, generator=_gen("cpu"))
    torch.testing.assert_close(a.float(), b, rtol=0, atol=2e-3)


@settings(max_examples=25, deadline=None)
@given(
    size=st.one_of(
        st.tuples(st.integers(1, 20)), st.tuples(st.integers(1, 12), st.integers(1, 12))
    ),
    batch=st.integers(1, 3),
    dtype=st.sampled_from(DTYPES),
    interp=st.sampled_from(INTERPS),
)
def test_deform_at_zero_temperature_is_identity(size, batch, dtype, interp):
    x = torch.randn(batch, 2, *size).to(dtype)
    out = deform(x, 0.0, interp=interp)
    assert out.dtype == x.dtype and torch.equal(out, x)


@pytest.mark.parametrize("interp", INTERPS)
def test_deform_same_seed_same_output(interp, device):
    x = _image((16, 16), batch=8).to(device)
    a = deform(x, 2e-3, interp=interp, generator=_gen(device, 11))
    b = deform(x, 2e-3, interp=interp, generator=_gen(device, 11))
    assert torch.equal(a, b)
    assert not torch.equal(a, x)


def test_deform_moves_each_sample_differently():
    x = _image((16, 16), batch=1).expand(6, -1, -1, -1)
    out = deform(x, 5e-3, generator=_gen("cpu"))
    assert all(not torch.equal(out[0], out[b]) for b in range(1, 6))


@pytest.mark.parametrize("size", [(17,), (12, 20), (1, 6)])
@pytest.mark.parametrize("interp", INTERPS)
def test_deform_matches_remap_of_sample_displacement(size, interp):
    x = _image(size)
    u = sample_displacement(3, size, 2e-3, 4, generator=_gen("cpu", 9))
    out = deform(x, 2e-3, 4, interp, generator=_gen("cpu", 9))
    torch.testing.assert_close(out, remap(x, u, interp))


def test_deform_gradcheck():
    x = _image((6, 7), batch=2, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: deform(x, 1e-2, generator=_gen("cpu")), (x,))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"temperature": -1e-3}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"cut": 0}, "cut"),
        ({"cut": 2.5}, "cut"),
        ({"interp": "cubic"}, "interp"),
        ({"x": torch.zeros(4, 4)}, "x"),
        ({"x": torch.zeros(1, 1, 4, 4, dtype=torch.int64)}, "x"),
    ],
)
def test_deform_refuses_bad_input(kwargs, name):
    args = {"x": torch.zeros(1, 1, 4, 4), "temperature": 1e-3} | kwargs
    with pytest.raises(DiffeoProbeError, match=name):
        deform(**args)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"batch": 0}, "batch"),
        ({"size": (4, 4, 4)}, "size"),
        ({"size": 0}, "size"),
        ({"temperature": -1.0}, "temperature"),
        ({"cut": 0}, "cut"),
        ({"dtype": torch.int32}, "dtype"),
    ],
)
def test_sample_displacement_refuses_bad_input(kwargs, name):
    args = {"batch": 2, "size": (4, 4), "temperature": 1e-3} | kwargs
    with pytest.raises(DiffeoProbeError, match=name):
        sample_displacement(**args)


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: temperature_for(-1.0, 32), "delta"),
        (lambda: typical_displacement(float("inf"), 32), "temperature"),
        (lambda: temperature_range((0, 4)), "size"),
        (lambda: temperature_range(32, cut=1.5), "cut"),
    ],
)
def test_temperature_functions_refuse_bad_input(call, name):
    with pytest.raises(DiffeoProbeError, match=name):
        call()


# --- temperatures too large for a finite field ------------------------------------------------------


@pytest.mark.parametrize("temperature", [1e300, 1e80, MAX_TEMPERATURE * 1.0001])
@pytest.mark.parametrize(
    "call",
    [
        lambda t: sample_displacement(2, 8, t),
        lambda t: sample_displacement(2, (8, 8), t, dtype=torch.float64),
        lambda t: deform(torch.zeros(1, 1, 4, 4), t),
        lambda t: typical_displacement(t, 32),
    ],
)
def test_a_temperature_past_the_maximum_is_refused_naming_the_range(call, temperature):
    with pytest.raises(DiffeoProbeError, match=r"temperature must be .*\[0, 1e\+06\]"):
        call(temperature)


@pytest.mark.parametrize("size", [(8,), (257,), (8, 8), (96, 128)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_largest_temperature_gives_a_finite_field_and_image(size, dtype):
    u = sample_displacement(8, size, MAX_TEMPERATURE, cut=10, generator=_gen("cpu"), dtype=dtype)
    assert torch.isfinite(u).all() and u.abs().max() > 1
    x = torch.rand(8, 2, *size, generator=_gen("cpu", 1), dtype=dtype)
    for interp in ("bilinear", "nearest", "gaussian"):
        out = deform(x, MAX_TEMPERATURE, cut=10, interp=interp, generator=_gen("cpu", 2))
        assert torch.isfinite(out).all(), interp


def test_temperature_for_refuses_a_delta_past_the_maximum_without_overflow():
    largest = typical_displacement(MAX_TEMPERATURE, 32)
    assert temperature_for(largest, 32) == pytest.approx(MAX_TEMPERATURE)
    for delta in (largest * 1.001, 1e200, 1e300):  # 1e300 ** 2 would raise OverflowError
        with pytest.raises(DiffeoProbeError, match=r"delta must be in \[0, 29724\.7\] pixels"):
            temperature_for(delta, 32)
