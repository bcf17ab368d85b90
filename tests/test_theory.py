"""The idealised pooling nets of docs/science.md section 7: construction, exact values, power laws."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import diffeoprobe as dp
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.theory import (
    MOVES_2D,
    Law,
    _lattice,
    exact_sensitivities,
    fit_exponent,
    idealized_net,
    power_laws,
    receptive_field,
    theory_table,
)


@pytest.fixture(autouse=True)
def one_thread():
    """These nets push many tiny tensors; intra-op threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def autocorrelations(depth: int, filter_size: int) -> list[np.ndarray]:
    """``c_k(m) = sum_x b_k(x) b_k(x + m)``, ``b_k`` the stride-1 response to a unit pixel."""
    box = np.full(filter_size, 1 / filter_size)
    b, out = np.ones(1), []
    for _ in range(depth + 1):
        out.append(np.correlate(b, b, "full"))  # lag m at index len(b) - 1 + m
        b = np.convolve(b, box)
    return out


def relu_kernel(rho: np.ndarray) -> np.ndarray:
    """``E[relu(X) relu(Y)]``, X, Y standard normal with correlation rho."""
    return (np.sqrt(1 - rho**2) + rho * (np.pi - np.arccos(rho))) / (2 * np.pi)


def infinite_size_stride1(depth: int, filter_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form D_k, G_k (k = 1..depth) of the 1D stride-1 ReLU net for an infinite signal.

    After the first ReLU everything is non-negative, so the net is linear from there on: with
    per-pixel noise variance s2 and c_k the autocorrelations,
    ``D_k = 1 - c_k(1) / c_k(0)`` and ``G_k = [mu^2 + sum_m Cov_u(m) c_{k-1}(m)] / (s2 c_k(0))``,
    u the first layer's rectified noise: ``mu^2 = s2 / (2 pi F)``,
    ``Cov_u(m) = s2 / F (kappa(rho_m) - 1 / (2 pi))``, ``rho_m = (F - |m|) / F``.
    """
    c = autocorrelations(depth, filter_size)
    lags = np.arange(-(filter_size - 1), filter_size)
    cov = (relu_kernel((filter_size - np.abs(lags)) / filter_size) - 1 / (2 * np.pi)) / filter_size
    d, g = [], []
    for k in range(1, depth + 1):
        centre = len(c[k]) // 2
        d.append(1 - c[k][centre + 1] / c[k][centre])
        prev = c[k - 1]
        mid = len(prev) // 2
        window = [prev[mid + m] if abs(m) <= mid else 0.0 for m in lags]
        g.append((1 / (2 * np.pi * filter_size) + cov @ np.array(window)) / c[k][centre])
    return np.array(d), np.array(g)


# --- the net -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize(("filter_size", "stride"), [(2, 1), (3, 1), (2, 2), (3, 2), (1, 2)])
def test_net_has_constant_filters_no_bias_and_readable_names(
    dim: int, filter_size: int, stride: int
) -> None:
    net = idealized_net(dim=dim, depth=3, filter_size=filter_size, stride=stride, channels=2)
    names = [name for name, _ in net.named_modules()]
    assert {"layer1.conv", "layer1.act", "layer3.conv", "layer3.act"} <= set(names)
    assert ("layer1.pad" in names) == (filter_size > stride)
    for k in (1, 2, 3):
        conv = net.get_submodule(f"layer{k}.conv")
        c_in = 1 if k == 1 else 2
        assert conv.bias is None
        assert conv.weight.shape == (2, c_in, *([filter_size] * dim))
        assert torch.all(conv.weight == (stride / filter_size) ** dim / c_in)
        assert conv.stride == (stride,) * dim


@pytest.mark.parametrize("dim", [1, 2])
def test_net_keeps_mass_and_is_periodic(dim: int) -> None:
    net = idealized_net(dim=dim, depth=3, filter_size=2, stride=2, activation="identity")
    x = torch.rand(4, 1, *([32] * dim), generator=torch.Generator().manual_seed(0))
    out = net(x)
    assert out.shape[2:] == (4,) * dim
    assert torch.allclose(out.flatten(1).sum(1), x.flatten(1).sum(1), rtol=1e-5)
    shifted = net(torch.roll(x, (8,) * dim, dims=tuple(range(2, 2 + dim))))
    assert torch.allclose(shifted, torch.roll(out, (1,) * dim, dims=tuple(range(2, 2 + dim))))


def test_channels_carry_the_same_map() -> None:
    x = torch.rand(3, 1, 64, generator=torch.Generator().manual_seed(1)) - 0.5
    one = idealized_net(depth=4, filter_size=3, stride=1)(x)
    many = idealized_net(depth=4, filter_size=3, stride=1, channels=5)(x)
    assert torch.allclose(many, one.expand_as(many), atol=1e-6)


@pytest.mark.parametrize(
    ("depth", "filter_size", "stride"),
    [(1, 2, 1), (5, 2, 1), (4, 3, 1), (5, 2, 2), (3, 3, 2), (3, 3, 3), (4, 4, 2), (3, 1, 2)],
)
def test_receptive_field_found_by_probing_single_pixels(
    depth: int, filter_size: int, stride: int
) -> None:
    field = receptive_field(depth, filter_size, stride)
    period = stride**depth
    size = period * math.ceil(2 * (field + 1) / period)
    net = idealized_net(depth=depth, filter_size=filter_size, stride=stride)
    with torch.no_grad():
        seen = net(torch.eye(size).unsqueeze(1))[:, 0, 0] > 0  # does pixel p reach unit 0?
    assert int(seen.sum()) == field
    assert seen[:field].all()  # unit 0 reads the pixels 0 .. field - 1
    # docs/science.md's F + (F - 1) sum_{l=1..L} s^l with L = depth - 1
    assert field == filter_size + (filter_size - 1) * sum(stride**i for i in range(1, depth))


# --- exact values --------------------------------------------------------------------------------


def test_stride1_matches_infinite_size_closed_form() -> None:
    depth = 32
    tab = exact_sensitivities(depth=depth, stride=1, filter_size=2, draws=4, seed=1)
    d_inf, g_inf = infinite_size_stride1(depth, 2)
    k = np.arange(1, depth + 1)
    assert list(tab["layer"]) == ["input", *(f"layer{i}.act" for i in k)]
    assert np.allclose(tab["D"][1:], 1 / (k + 1), rtol=1e-5)  # D_k = 1 / (k + 1) for F = 2
    assert np.allclose(tab["D"][1:], d_inf, rtol=1e-5)
    assert np.all(np.abs(tab["G"][1:] - g_inf) < 4 * tab["G_se"][1:] + 0.01 * g_inf)
    assert tab["D"][0] == pytest.approx(1) and tab["G"][0] == pytest.approx(1)


def test_stride_equal_filter_matches_closed_form() -> None:
    depth = 6
    tab = exact_sensitivities(depth=depth, stride=2, filter_size=2, size=64 * 2**depth, draws=2)
    laws = power_laws(stride=2, filter_size=2)
    k = tab["depth"][1:].to_numpy()
    z = tab["Z"][1:] / 2  # Z_k / (2 a^2): 1 for an infinite signal
    assert np.allclose(tab["D"][1:] * z, 2.0**-k, rtol=1e-5)  # the numerator is exact
    assert np.all(np.abs(tab["G"][1:] - laws.G(k) / z) < 4 * tab["G_se"][1:] + 0.01 * laws.G(k))
    r_theory = laws.D(k) / laws.G(k)  # R is free of Z: only the noise's sampling error remains
    assert np.all(np.abs(tab["R"][1:] - r_theory) < 4 * tab["R_se"][1:] + 0.005 * r_theory)


@pytest.mark.parametrize(("stride", "filter_size"), [(1, 2), (2, 2)])
def test_2d_diffeo_moves_match_pixel_shift_law(stride: int, filter_size: int) -> None:
    tab = exact_sensitivities(dim=2, depth=3, stride=stride, filter_size=filter_size)
    k = tab["depth"][1:].to_numpy()
    if stride == 1:  # rho = c(1) / c(0) per axis: axis moves 1 - rho, diagonals 1 - rho^2
        eps = 1 / (k + 1)
        expected = 4 / 3 * eps - eps**2 / 3
    else:  # a move changes the unit when it crosses an edge of a 2^k block on either axis
        expected = 4 / 3 * 2.0**-k - 4.0**-k / 3
    if stride == 1:  # lattice responses never overlap: Z is the infinite-size value
        assert np.allclose(tab["D"][1:], expected, rtol=1e-5)
    else:  # the numerator D Z / (2 a^2) is exact; Z carries the finite-size factor
        assert np.allclose(tab["D"][1:] * tab["Z"][1:] / 2, expected, rtol=1e-5)


@pytest.mark.parametrize("probe", ["all", 20])
def test_other_probe_sets(probe: str | int) -> None:
    tab = exact_sensitivities(depth=3, stride=2, filter_size=2, size=32, probe=probe)
    assert tab.attrs["probes"] == (32 if probe == "all" else probe)
    assert tab["D"].notna().all() and tab["G"].notna().all()
    if probe == "all":  # every position: the crossing probability is exactly 2^-k
        assert np.allclose(tab["D"][1:] * tab["Z"][1:] / 2, 2.0 ** -np.arange(1, 4), rtol=1e-5)


@pytest.mark.parametrize(("dim", "stride"), [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)])
def test_lattice_moves_average_pixel_shift_directions_exactly(dim: int, stride: int) -> None:
    """The one (1D) or three (2D) moves per lattice probe give the mean over pixel_shift's moves."""
    depth, filter_size = 3, 3 if stride == 3 else 2
    period = stride**depth
    size = period * math.ceil(max(16, 2 * receptive_field(depth, filter_size, stride)) / period)
    axis = _lattice(size, period, receptive_field(depth, filter_size, stride))
    grids = np.meshgrid(*([axis] * dim), indexing="ij")
    net = idealized_net(dim=dim, depth=depth, filter_size=filter_size, stride=stride)
    x = torch.zeros(len(grids[0].ravel()), 1, *([size] * dim))
    x[(torch.arange(x.shape[0]), 0, *(torch.from_numpy(g.ravel()) for g in grids))] = 1.0
    if dim == 1:
        moves, weights = [(1,), (-1,)], [0.5, 0.5]
        ours = [(1,)]
    else:
        moves = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)]
        weights = [1 / 12 if a and b else 1 / 6 for a, b in moves]
        ours = list(MOVES_2D)
    dims = tuple(range(2, 2 + dim))

    def distance(move: tuple[int, ...]) -> torch.Tensor:
        return (net(torch.roll(x, move, dims)) - net(x)).square().flatten(1).sum(1).mean()

    with torch.no_grad():
        law = sum(w * distance(m) for m, w in zip(moves, weights, strict=True))
        mine = sum(distance(m) for m in ours) / len(ours)
    assert mine == pytest.approx(float(law), rel=1e-5)


def test_wrapped_move_is_pixel_shift_away_from_the_border() -> None:
    x = torch.zeros(64, 1, 16)
    x[:, 0, 7] = 2.0
    moved = dp.pixel_shift(x, generator=torch.Generator().manual_seed(0))
    outcomes = {int(row.nonzero()[0, 1]) for row in moved}
    assert outcomes == {6, 8}
    assert torch.equal(torch.roll(x[:1], 1, 2)[0, 0].nonzero(), torch.tensor([[8]]))


# --- power laws ----------------------------------------------------------------------------------


@pytest.mark.parametrize("filter_size", [2, 3])
def test_stride1_exponents(filter_size: int) -> None:
    tab = exact_sensitivities(depth=256, stride=1, filter_size=filter_size, draws=4)
    laws = power_laws(stride=1, filter_size=filter_size)
    k = tab["depth"].to_numpy(float)
    d = fit_exponent(k, tab["D"], k_min=32)
    assert d.exponent == pytest.approx(-1, abs=0.02)  # D ~ A / k
    assert d.prefactor == pytest.approx(laws.D.prefactor, rel=0.1)
    g = fit_exponent(k, tab["G"], offset=True, k_min=16)
    assert g.exponent == pytest.approx(0.5, abs=0.02)  # G ~ B k^(1/2) + C
    assert g.prefactor == pytest.approx(laws.G.prefactor, rel=0.05)
    assert g.offset == pytest.approx(laws.G.offset, abs=0.03)
    # the plain log-log slope is pulled down by the offset C (docs/theory.md)
    assert 0.35 < fit_exponent(k, tab["G"], k_min=16).exponent < 0.45
    r = tab["R"].iloc[-1] / (laws.D(256) / laws.G(256))
    assert r == pytest.approx(1, abs=0.03)


def test_stride2_exponents() -> None:
    depth = 8
    tab = exact_sensitivities(depth=depth, stride=2, filter_size=2, size=32 * 2**depth)
    k = tab["depth"].to_numpy(float)
    ln2 = math.log(2)
    d = fit_exponent(k, tab["D"], "exponential", k_min=1)
    assert d.exponent == pytest.approx(-ln2, abs=0.01)  # D ~ 2^-k
    assert d.prefactor == pytest.approx(1, rel=0.05)
    assert fit_exponent(k, tab["G"], "exponential", k_min=6).exponent == pytest.approx(
        ln2, abs=0.03
    )  # G ~ 2^k
    g = fit_exponent(k, tab["G"], "exponential", offset=True, k_min=1)
    assert g.exponent == pytest.approx(ln2, abs=0.01)
    assert g.prefactor == pytest.approx(1 / (4 * math.pi), rel=0.05)
    r = fit_exponent(k, tab["R"], "exponential", k_min=6)
    assert r.exponent == pytest.approx(-2 * ln2, abs=0.05)  # R ~ 4^-k


def test_default_size_lowers_z_in_the_last_layers() -> None:
    """At stride 2 the last layer has 8 units: Z_k falls, D and G rise alike, R is untouched."""
    tab = exact_sensitivities(depth=7, stride=2, filter_size=2)
    assert tab.attrs["size"] == 8 * 2**7
    z_last = tab["Z"].iloc[-1] / 2
    assert 0.8 < z_last < 0.9
    assert tab["D"].iloc[-1] == pytest.approx(2.0**-7 / z_last, rel=1e-5)


# --- tanh and the noise ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stride", "depths"), [(1, (8, 32, 128)), (2, (2, 4, 7))], ids=["stride1", "stride2"]
)
def test_tanh_noise_does_not_pile_up_but_relu_does(stride: int, depths: tuple[int, ...]) -> None:
    deepest = max(depths)
    size, draws = (None, 4) if stride == 1 else (32 * 2**deepest, 1)
    kwargs = dict(depth=deepest, stride=stride, filter_size=2, size=size, value=0.1, draws=draws)
    tanh = exact_sensitivities(activation="tanh", **kwargs)
    relu = exact_sensitivities(activation="relu", **kwargs)
    g_tanh = tanh["G"].iloc[list(depths)].to_numpy()
    g_relu = relu["G"].iloc[list(depths)].to_numpy()
    assert np.all(np.abs(g_tanh - 1) < 0.1)  # small amplitude: the linear value G = 1
    assert g_tanh[-1] < 1.1 * g_tanh[0]
    assert np.all(np.diff(g_relu) > 0) and g_relu[-1] > 2 * g_relu[0]


def test_tanh_at_unit_amplitude_grows_through_z_not_through_noise() -> None:
    kwargs = dict(depth=64, stride=1, filter_size=2, draws=4)
    tanh = exact_sensitivities(activation="tanh", **kwargs)
    linear = exact_sensitivities(activation="identity", **kwargs)
    assert tanh["G"].iloc[-1] > 1.5  # G grows ...
    numerator = tanh["G"] * tanh["Z"] / (linear["G"] * linear["Z"])
    assert np.allclose(numerator[1:], 1, atol=0.06)  # ... but the noise averages out as if linear
    assert tanh["Z"].iloc[-1] < 0.6 * linear["Z"].iloc[-1]  # tanh squashes the signal


def test_rectified_noise_piles_up_even_without_relu() -> None:
    tab = exact_sensitivities(
        depth=64, stride=1, filter_size=2, activation="tanh", noise="rectified", value=0.1
    )
    assert tab["G"].iloc[64] > 2 * tab["G"].iloc[8]


def test_relu_noise_scale_enters_g_squared() -> None:
    kwargs = dict(depth=16, stride=1, filter_size=2, draws=2)
    base = exact_sensitivities(**kwargs)
    double = exact_sensitivities(noise_scale=2.0, **kwargs)
    assert np.allclose(double["G"][1:], 4 * base["G"][1:], rtol=0.01)
    assert np.allclose(double["D"], base["D"])


# --- fitting, table, errors ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["power", "exponential"])
@pytest.mark.parametrize("offset", [0.0, 0.7])
def test_fit_exponent_recovers_a_law(kind: str, offset: float) -> None:
    law = Law(kind, 0.5 if kind == "power" else -0.3, 2.5, offset)
    k = np.arange(1.0, 40.0)
    fit = fit_exponent(k, law(k), kind, offset=bool(offset))
    assert fit.exponent == pytest.approx(law.exponent, abs=1e-3)
    assert fit.prefactor == pytest.approx(law.prefactor, rel=1e-2)
    assert fit.offset == pytest.approx(law.offset, abs=1e-2)


def test_theory_table_puts_exact_and_laws_side_by_side() -> None:
    one = theory_table(depth=4, stride=1, filter_size=2)
    two = theory_table(depth=3, stride=2, filter_size=3)  # overlapping strided pooling: no law
    assert list(one.columns[:8]) == [
        "depth", "layer", "D", "D_theory", "G", "G_theory", "R", "R_theory"
    ]  # fmt: skip
    assert np.isnan(one["D_theory"][0]) and np.allclose(one["D_theory"][1:], 1 / np.arange(1, 5))
    assert two["D_theory"].isna().all() and two.attrs["theory"].startswith("no law")
    both = pd.concat([one, two], ignore_index=True)
    assert set(both.groupby(["stride", "filter_size"])["depth_total"].max()) == {4, 3}


@pytest.mark.parametrize(
    ("function", "kwargs", "name"),
    [
        (idealized_net, dict(depth=0), "depth"),
        (idealized_net, dict(depth=2, filter_size=0), "filter_size"),
        (idealized_net, dict(depth=2, stride=0), "stride"),
        (idealized_net, dict(depth=2, dim=3), "dim"),
        (idealized_net, dict(depth=2, activation="swish"), "activation"),
        (idealized_net, dict(depth=2, channels=0), "channels"),
        (exact_sensitivities, dict(depth=3, size=12), "size"),  # not a multiple of 2^3
        (exact_sensitivities, dict(depth=3, size=8), "size"),  # one unit in the last layer
        (exact_sensitivities, dict(depth=4, stride=1, size=4), "size"),  # below the field 5
        (exact_sensitivities, dict(depth=2, probe="some"), "probe"),
        (exact_sensitivities, dict(depth=2, probe=1), "probe"),
        (exact_sensitivities, dict(depth=2, size=16, probe=17), "probe"),
        (exact_sensitivities, dict(depth=2, noise="pink"), "noise"),
        (exact_sensitivities, dict(depth=2, noise_scale=-1.0), "noise_scale"),
        (exact_sensitivities, dict(depth=2, value=0.0), "value"),
        (exact_sensitivities, dict(depth=2, draws=0), "draws"),
        (power_laws, dict(stride=2, filter_size=3), "stride"),
        (power_laws, dict(filter_size=1), "filter_size"),
        (power_laws, dict(activation="gelu"), "activation"),
        (fit_exponent, dict(k=[1, 2], values=[1, 2], kind="linear"), "kind"),
        (fit_exponent, dict(k=[0, 1, 2], values=[1, 2, 3]), "k"),
        (fit_exponent, dict(k=[1, 2, 3], values=[1, -2, 3]), "values"),
        (fit_exponent, dict(k=[1, 2], values=[1, 2], offset=True), "values"),
        (fit_exponent, dict(k=[1, 2], values=[1, 2, 3]), "k and values"),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(function, kwargs: dict, name: str) -> None:
    with pytest.raises(DiffeoProbeError, match=rf"^{name}\b"):
        function(**kwargs)
