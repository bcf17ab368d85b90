"""Pooling probes (docs/science.md section 5): grid-Laplacian filter spectrum, channel shuffling,
paired shuffled measurements and the channel/spatial decomposition of the stability."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import diffeoprobe as dp
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.probes import (
    channel_shuffle,
    filter_spectrum,
    laplacian_eigenbasis,
    pooling_shares,
    shuffled_sensitivities,
)

SHAPES = [1, 4, (3,), (1, 1), (3, 3), (2, 5), (5, 5), (6, 6)]


def grid_laplacian(shape: tuple[int, ...]) -> np.ndarray:
    """L = D - A of the 4-neighbour grid (path graph in 1D), free boundary, built edge by edge."""
    n = math.prod(shape)
    index = np.arange(n).reshape(shape)
    adjacency = np.zeros((n, n))
    for axis in range(len(shape)):
        a = np.moveaxis(index, axis, 0)
        for u, v in zip(a[:-1].ravel(), a[1:].ravel(), strict=True):
            adjacency[u, v] = adjacency[v, u] = 1.0
    return np.diag(adjacency.sum(1)) - adjacency


def images(n: int = 16, channels: int = 2, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def tiny_cnn(channels: int = 3, dim: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    conv, pool = (nn.Conv2d, nn.AvgPool2d) if dim == 2 else (nn.Conv1d, nn.AvgPool1d)
    return nn.Sequential(
        conv(channels, 4, 3, padding=1),
        nn.ReLU(),
        pool(2),
        conv(4, 5, (3, 2) if dim == 2 else 2),
        nn.ReLU(),
        nn.Flatten(),
    )


def labelled_weight(out: int, per_group: int, kernel: tuple[int, ...] = (1, 1)) -> torch.Tensor:
    """w[o, j] = 100 o + j + 1 everywhere in the kernel: the permutation is readable off the copy."""
    base = 100.0 * torch.arange(out)[:, None] + torch.arange(per_group)[None, :] + 1.0
    return base.view(out, per_group, *[1] * len(kernel)).expand(out, per_group, *kernel).clone()


def read_permutations(weight: torch.Tensor) -> torch.Tensor:
    out = weight.shape[0]
    return (weight.flatten(2)[:, :, 0] - 100.0 * torch.arange(out)[:, None] - 1.0).round().long()


# --------------------------------------------------------------------------- eigenbasis


@pytest.mark.parametrize("shape", SHAPES)
def test_eigenbasis_is_orthonormal(shape):
    lam, modes = laplacian_eigenbasis(shape)
    v = modes.reshape(len(lam), -1)
    assert v.shape == (len(lam), len(lam))
    np.testing.assert_allclose(v @ v.T, np.eye(len(lam)), atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_eigenbasis_diagonalises_the_neumann_grid_laplacian(shape):
    sides = (shape,) if isinstance(shape, int) else shape
    lam, modes = laplacian_eigenbasis(shape)
    v = modes.reshape(len(lam), -1)
    laplacian = grid_laplacian(sides)
    np.testing.assert_allclose(laplacian @ v.T, v.T * lam, atol=1e-12)
    np.testing.assert_allclose(lam, np.linalg.eigvalsh(laplacian), atol=1e-12)
    assert np.all(np.diff(lam) >= 0)


@pytest.mark.parametrize("shape", SHAPES)
def test_lowest_mode_is_the_constant_filter_with_eigenvalue_zero(shape):
    lam, modes = laplacian_eigenbasis(shape)
    assert lam[0] == 0.0
    np.testing.assert_allclose(modes[0], 1 / math.sqrt(modes[0].size))
    assert np.all(lam[1:] > 1e-6)


def test_3x3_eigenvalues_are_sums_of_path_eigenvalues():
    path = 2 - 2 * np.cos(np.pi * np.arange(3) / 3)  # 0, 1, 3
    expected = np.sort((path[:, None] + path[None, :]).ravel())
    lam, _ = laplacian_eigenbasis((3, 3))
    np.testing.assert_allclose(lam, expected, atol=1e-12)
    np.testing.assert_allclose(lam, [0, 1, 1, 2, 3, 3, 4, 4, 6], atol=1e-12)


def test_degenerate_eigenvalues_are_exactly_equal_and_ordered_by_wavenumber():
    lam, modes = laplacian_eigenbasis((6, 6))  # 2 = 1 + 1 = 0 + 2: an accidental degeneracy
    values, counts = np.unique(lam, return_counts=True)
    assert counts.sum() == 36 and counts.max() >= 3
    # the two lowest non-constant modes: (kh, kw) = (0, 1) varies along W, then (1, 0) along H
    assert np.allclose(modes[1][:, 0], modes[1][0, 0]) and np.allclose(modes[2][0], modes[2][0, 0])


def test_eigenbasis_is_cached_and_read_only():
    a = laplacian_eigenbasis((3, 3))
    assert laplacian_eigenbasis([3, 3])[1] is a[1]
    with pytest.raises(ValueError):
        a[1][0, 0, 0] = 1.0


@pytest.mark.parametrize("shape", [0, (3, 3, 3), "3", (2.0, 2)])
def test_eigenbasis_refuses_bad_shapes(shape):
    with pytest.raises(DiffeoProbeError, match="shape"):
        laplacian_eigenbasis(shape)


# --------------------------------------------------------------------------- filter spectrum


@pytest.mark.parametrize("conv", [nn.Conv2d(3, 4, 3), nn.Conv1d(3, 4, 5), nn.Conv2d(4, 4, (2, 3))])
def test_averaging_filters_have_all_their_energy_in_mode_zero(conv):
    w = conv.weight
    with torch.no_grad():  # one constant per (out, in) filter
        w.copy_(torch.randn(*w.shape[:2], *[1] * (w.dim() - 2)).expand_as(w))
    tab = filter_spectrum(conv)
    np.testing.assert_allclose(tab["energy_fraction"], np.eye(len(tab))[0], atol=1e-12)
    np.testing.assert_allclose(tab["mean_fraction"], np.eye(len(tab))[0], atol=1e-12)
    np.testing.assert_allclose(tab["energy_fraction_se"], 0, atol=1e-12)


def test_random_filters_spread_energy_evenly_over_modes():
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 32, 3)
    nn.init.normal_(conv.weight)
    tab = filter_spectrum(conv)
    assert len(tab) == 9
    assert tab["energy_fraction"].sum() == pytest.approx(1.0)
    z = (tab["energy_fraction"] - 1 / 9) / tab["energy_fraction_se"]
    assert (z.abs() < 4).all() and (tab["energy_fraction_se"] < 0.01).all()
    assert np.allclose(tab["mean_fraction"], 1 / 9, atol=5 * tab["mean_fraction_se"].max())


def test_energy_fraction_se_matches_the_spread_over_filters():
    torch.manual_seed(1)
    conv = nn.Conv1d(1, 400, 4)
    nn.init.normal_(conv.weight)
    full = filter_spectrum(conv)
    halves = []
    for part in conv.weight.detach().chunk(20):  # 20 sub-layers of 20 filters each
        sub = nn.Conv1d(1, 20, 4)
        sub.weight.data = part.clone()
        halves.append(filter_spectrum(sub)["energy_fraction"].to_numpy())
    spread = np.std(halves, axis=0, ddof=1) / math.sqrt(20)
    np.testing.assert_allclose(full["energy_fraction_se"], spread, rtol=0.5)


def test_group_degenerate_sums_modes_of_equal_eigenvalue():
    net = tiny_cnn()
    modes = filter_spectrum(net)
    grouped = filter_spectrum(net, group_degenerate=True)
    first = modes[modes["conv_index"] == 0]
    summed = first.groupby("eigenvalue", sort=True)["energy_fraction"].sum().to_numpy()
    g0 = grouped[grouped["conv_index"] == 0]
    np.testing.assert_allclose(g0["energy_fraction"], summed, atol=1e-12)
    assert g0["multiplicity"].tolist() == [1, 2, 1, 2, 2, 1]
    assert g0["mode"].tolist() == list(range(6))
    assert grouped.groupby("layer")["energy_fraction"].sum().round(12).eq(1).all()


def test_filter_spectrum_layout_follows_module_order():
    net = tiny_cnn()
    tab = filter_spectrum(net)
    assert list(tab.columns) == [
        "layer",
        "conv_index",
        "rel_depth",
        "module_index",
        "kernel",
        "filters",
        "mode",
        "eigenvalue",
        "multiplicity",
        "energy_fraction",
        "energy_fraction_se",
        "mean_fraction",
        "mean_fraction_se",
    ]
    per_layer = tab.drop_duplicates("layer")
    assert per_layer["layer"].tolist() == ["0", "3"]
    assert per_layer["module_index"].tolist() == [0, 3]
    assert per_layer["rel_depth"].tolist() == [0.5, 1.0]
    assert per_layer["kernel"].tolist() == ["3x3", "3x2"]
    assert per_layer["filters"].tolist() == [12, 20]
    assert tab.groupby("layer").size().tolist() == [9, 6]
    assert tab.groupby("layer")["energy_fraction"].sum().round(12).eq(1).all()
    assert set(filter_spectrum(tiny_cnn(dim=1))["kernel"]) == {"3", "2"}


def test_filter_spectrum_layer_names_match_measure():
    net = tiny_cnn()
    measured = set(dp.measure(net, images(8, 3), seed=0)["layer"])
    assert set(filter_spectrum(net)["layer"]) <= measured


def test_zero_filters_carry_no_distribution():
    conv = nn.Conv2d(1, 2, 3)
    with torch.no_grad():
        conv.weight.zero_()
    assert filter_spectrum(conv)["energy_fraction"].isna().all()
    with torch.no_grad():
        conv.weight[0].fill_(1.0)  # one averaging filter, one zero filter
    tab = filter_spectrum(conv)
    assert tab["energy_fraction"].iloc[0] == pytest.approx(1.0)
    assert tab["mean_fraction"].iloc[0] == pytest.approx(1.0)


@pytest.mark.parametrize("model", [nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), nn.ReLU(), "net"])
def test_probes_refuse_models_without_convolutions(model):
    with pytest.raises(DiffeoProbeError, match="model"):
        filter_spectrum(model)
    with pytest.raises(DiffeoProbeError, match="model"):
        channel_shuffle(model, generator=torch.Generator())


# --------------------------------------------------------------------------- channel shuffle


@pytest.mark.parametrize("per_filter", [True, False])
def test_shuffle_keeps_each_filters_multiset_of_weights(per_filter):
    net = tiny_cnn()
    shuffled = channel_shuffle(
        net, generator=torch.Generator().manual_seed(0), per_filter=per_filter
    )
    for index in (0, 3):
        before, after = net[index].weight.detach(), shuffled[index].weight.detach()
        assert after.shape == before.shape and not after.equal(before)
        assert after.flatten(1).sort(1).values.equal(before.flatten(1).sort(1).values)
        # the spatial filters themselves are kept: sorted over the input channels they match
        assert after.sort(1).values.equal(before.sort(1).values)
        assert shuffled[index].bias.equal(net[index].bias)


@pytest.mark.parametrize(
    ("groups", "per_filter"), [(1, True), (1, False), (2, True), (2, False), (8, True)]
)
def test_shuffle_permutes_input_channels_within_groups(groups, per_filter):
    conv = nn.Conv2d(8, 8, 3, groups=groups, bias=False)
    per_group = 8 // groups
    conv.weight.data = labelled_weight(8, per_group, (3, 3))
    shuffled = channel_shuffle(
        conv, generator=torch.Generator().manual_seed(1), per_filter=per_filter
    )
    perms = read_permutations(shuffled.weight.detach())
    assert perms.sort(1).values.equal(torch.arange(per_group).expand(8, -1))
    if per_group == 1:  # depthwise: nothing to permute
        assert shuffled.weight.equal(conv.weight)
        return
    filters_per_group = 8 // groups
    for g in range(groups):
        block = perms[g * filters_per_group : (g + 1) * filters_per_group]
        assert (block == block[0]).all() != per_filter  # shared per group iff not per_filter
    # filter o reads input channel perm_o[j] of its own group where it read channel j
    x = torch.rand(2, 8, 5, 5, generator=torch.Generator().manual_seed(2))
    y = shuffled(x)
    for o in range(8):
        offset = (o // filters_per_group) * per_group
        x_perm = x[:, offset + perms[o].argsort()]
        ref = nn.functional.conv2d(x_perm, conv.weight[o : o + 1])
        assert torch.allclose(y[:, o : o + 1], ref, rtol=1e-5)


def test_shuffle_changes_the_function_and_leaves_the_original_untouched():
    net = tiny_cnn()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = images(4, 3)
    y = net(x)
    shuffled = channel_shuffle(net, generator=torch.Generator().manual_seed(0))
    assert shuffled is not net
    assert not torch.allclose(shuffled(x), y)
    assert all(v.equal(net.state_dict()[k]) for k, v in state.items())
    assert torch.equal(net(x), y)


def test_shuffle_is_reproducible_with_the_same_generator():
    net = tiny_cnn()
    a = channel_shuffle(net, generator=torch.Generator().manual_seed(5))
    b = channel_shuffle(net, generator=torch.Generator().manual_seed(5))
    c = channel_shuffle(net, generator=torch.Generator().manual_seed(6))
    assert all(a.state_dict()[k].equal(v) for k, v in b.state_dict().items())
    assert not a[3].weight.equal(c[3].weight)


def test_shuffle_is_the_identity_on_a_single_input_channel():
    conv = nn.Conv2d(1, 6, 3)
    shuffled = channel_shuffle(conv, generator=torch.Generator().manual_seed(0))
    assert shuffled.weight.equal(conv.weight)


def test_shuffle_keeps_mode_and_permutes_a_tied_weight_once():
    plain = tiny_cnn().train()
    tied = tiny_cnn().train()
    tied.append(nn.Conv2d(4, 5, (3, 2)))
    tied[6].weight = tied[3].weight  # two modules, one parameter
    a = channel_shuffle(plain, generator=torch.Generator().manual_seed(0))
    b = channel_shuffle(tied, generator=torch.Generator().manual_seed(0))
    assert b.training and b[6].weight is b[3].weight
    assert b[3].weight.equal(a[3].weight)


def test_shuffle_changes_nothing_when_channels_carry_identical_weights():
    net = tiny_cnn()
    with torch.no_grad():
        for index in (0, 3):
            w = net[index].weight
            w.copy_(w[:, :1].expand_as(w))
    shuffled = channel_shuffle(net, generator=torch.Generator().manual_seed(0))
    x = images(16, 3)
    a, b = dp.measure(net, x, seed=3), dp.measure(shuffled, x, seed=3)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [(dict(generator=0), "generator"), (dict(generator=None), "generator")]
    + [(dict(generator=torch.Generator(), per_filter=1), "per_filter")],
)
def test_shuffle_refuses_bad_arguments(kwargs, name):
    with pytest.raises(DiffeoProbeError, match=name):
        channel_shuffle(tiny_cnn(), **kwargs)


# --------------------------------------------------------------------------- paired measurement


@pytest.mark.parametrize("permutations", [1, 3])
def test_shuffled_sensitivities_layout_and_pairing(permutations):
    net = tiny_cnn()
    x = images(16, 3)
    tab = shuffled_sensitivities(net, x, permutations=permutations, seed=2, delta=0.5)
    base = dp.measure(net, x, seed=2, delta=0.5)
    assert list(tab.columns) == ["variant", *base.columns, "permutations"]
    original = tab[tab["variant"] == "original"].drop(columns=["variant", "permutations"])
    pd.testing.assert_frame_equal(original.reset_index(drop=True), base, check_like=True)
    shuffled = tab[tab["variant"] == "shuffled"]
    assert shuffled["layer"].tolist() == base["layer"].tolist()
    assert shuffled["depth"].tolist() == base["depth"].tolist()
    assert (shuffled["permutations"] == permutations).all()
    assert tab.attrs["permutations"] == permutations and tab.attrs["per_filter"] is True
    # paired: identical probe draws, so the input rows agree up to the rounding of the mean over
    # permutations (a mean of equal floats need not return the float itself)
    for column in ("D", "R"):
        assert shuffled[column].iloc[0] == pytest.approx(base[column].iloc[0], rel=1e-14, abs=0)
    assert (shuffled["R_se"] >= 0).all()
    assert not np.allclose(shuffled["R"].iloc[1:], base["R"].iloc[1:])


def test_shuffled_rows_are_means_over_permutations():
    net = tiny_cnn()
    x = images(16, 3)
    tab = shuffled_sensitivities(net, x, permutations=2, seed=0)
    from diffeoprobe.probes import _shuffle_generator

    singles = [
        dp.measure(channel_shuffle(net, generator=_shuffle_generator(0, p)), x, seed=0)
        for p in range(2)
    ]
    shuffled = tab[tab["variant"] == "shuffled"]
    r = np.stack([s["R"] for s in singles])
    se = np.stack([s["R_se"] for s in singles])
    np.testing.assert_allclose(shuffled["R"], r.mean(0))
    np.testing.assert_allclose(shuffled["R_se"], np.sqrt(r.var(0, ddof=1) / 2 + se.mean(0) ** 2))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(permutations=0), "permutations"),
        (dict(permutations=1.5), "permutations"),
        (dict(seed=-1), "seed"),
    ],
)
def test_shuffled_sensitivities_refuses_bad_arguments(kwargs, name):
    with pytest.raises(DiffeoProbeError, match=name):
        shuffled_sensitivities(tiny_cnn(), images(8, 3), **kwargs)


def test_shuffled_sensitivities_refuses_one_shot_iterators():
    with pytest.raises(DiffeoProbeError, match="data"):
        shuffled_sensitivities(tiny_cnn(), iter([images(8, 3)]))


# --------------------------------------------------------------------------- decomposition


def table(values: dict[str, tuple[float, float]]) -> pd.DataFrame:
    rows = [
        dict(layer=name, module="", depth=i, rel_depth=i / (len(values) - 1), R=r, R_se=se)
        for i, (name, (r, se)) in enumerate(values.items())
    ]
    return pd.DataFrame(rows)


def test_pooling_shares_decomposes_the_stability():
    original = table({"input": (1.0, 0.0), "a": (0.5, 0.05), "b": (0.01, 0.001)})
    shuffled = table({"input": (1.0, 0.0), "a": (0.5, 0.05), "b": (0.1, 0.02)})
    shares = pooling_shares(original, shuffled)
    b = shares.set_index("layer").loc["b"]
    assert b["stability"] == pytest.approx(2.0)
    assert b["channel_pooling"] == pytest.approx(1.0)
    assert b["spatial_pooling"] == pytest.approx(1.0)
    assert b["channel_fraction"] == pytest.approx(0.5)
    np.testing.assert_allclose(
        shares["channel_pooling"] + shares["spatial_pooling"], shares["stability"]
    )
    ln10 = math.log(10)
    assert b["channel_pooling_se"] == pytest.approx(math.hypot(0.1, 0.2) / ln10)
    assert b["spatial_pooling_se"] == pytest.approx(0.2 / ln10)
    # f = (lb - la) / (0 - la); df/dla = lb / la^2 (r_in = 0), df/dlb = -1 / la
    la, lb = math.log10(0.01), math.log10(0.1)
    expected = math.hypot(lb / la**2 * 0.1 / ln10, 1 / la * 0.2 / ln10)
    assert b["channel_fraction_se"] == pytest.approx(expected)
    assert shares.set_index("layer").loc["a", "channel_pooling"] == 0.0


def test_pooling_shares_fraction_se_matches_monte_carlo():
    rng = np.random.default_rng(0)
    original = table({"input": (1.2, 0.01), "b": (0.02, 0.001)})
    shuffled = table({"input": (1.2, 0.01), "b": (0.1, 0.005)})
    shares = pooling_shares(original, shuffled).iloc[1]
    r_in = 1.2 * np.exp(rng.normal(0, 0.01 / 1.2, 200_000))
    r_o = 0.02 * np.exp(rng.normal(0, 0.001 / 0.02, 200_000))
    r_s = 0.1 * np.exp(rng.normal(0, 0.005 / 0.1, 200_000))
    fraction = np.log10(r_s / r_o) / np.log10(r_in / r_o)
    assert shares["channel_fraction_se"] == pytest.approx(fraction.std(), rel=0.05)


def test_pooling_shares_on_measured_tables():
    net = tiny_cnn()
    x = images(16, 3)
    tab = shuffled_sensitivities(net, x, permutations=2, seed=0)
    cm = dp.measure(net, x, seed=0, channel_mean=True)
    shares = pooling_shares(tab, channel_mean_table=cm)
    assert shares["layer"].tolist() == tab[tab["variant"] == "original"]["layer"].tolist()
    assert shares.iloc[0][["stability", "channel_pooling", "spatial_pooling"]].abs().max() < 1e-6
    assert {"spatial_channel_mean", "spatial_channel_mean_se"} <= set(shares.columns)
    assert shares["spatial_channel_mean"].iloc[0] == 0.0
    assert np.isfinite(shares[["stability_se", "channel_pooling_se"]].to_numpy()).all()
    split = pooling_shares(tab[tab["variant"] == "original"], tab[tab["variant"] == "shuffled"], cm)
    pd.testing.assert_frame_equal(shares, split)


def test_pooling_shares_refuses_bad_tables():
    good = table({"input": (1.0, 0.0), "a": (0.5, 0.05)})
    with pytest.raises(DiffeoProbeError, match="original"):
        pooling_shares(good.drop(index=0), good)  # no input row
    with pytest.raises(DiffeoProbeError, match="shuffled"):
        pooling_shares(good, good.drop(columns="R"))
    with pytest.raises(DiffeoProbeError, match="shuffled"):
        pooling_shares(good)  # no variant column and no shuffled table
    with pytest.raises(DiffeoProbeError, match="original"):
        pooling_shares(pd.concat([good, good]), good)  # several seeds stacked
    with pytest.raises(DiffeoProbeError, match="shuffled"):
        pooling_shares(good, table({"input": (1.0, 0.0), "z": (1.0, 0.0)}).iloc[1:])
