"""SimpleCNN and the model registry: shapes, layer names, per-layer options, refused configs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.models import MODELS, SimpleCNN, available, build
from diffeoprobe.models.simple_cnn import ACTIVATIONS, PADDINGS


@pytest.mark.parametrize(
    ("name", "shape", "options"),
    [
        ("simplecnn", (2, 1, 28, 28), {}),
        ("simplecnn", (2, 3, 32, 32), {}),
        ("simplecnn1d", (2, 1, 128), {}),
        ("simplecnn", (2, 1, 28, 28), dict(depth=7, width=8)),  # pools down to 1 x 1, then passes
        ("simplecnn", (2, 3, 32, 32), dict(batch_norm=True, pooling="avg", pool_every=2)),
        ("simplecnn", (1, 2, 9, 12), dict(depth=3, width=4, stride=2, pooling=None)),
        (
            "simplecnn1d",
            (3, 1, 128),
            dict(depth=7, width=6, filter_size=2, stride=2, pooling=None, padding="valid"),
        ),
        ("simplecnn1d", (2, 4, 33), dict(depth=3, width=5, padding="circular", activation="tanh")),
        ("simplecnn", (2, 1, 16, 16), dict(depth=2, width=4, padding="reflect", bias=False)),
    ],
)
def test_output_is_logits_per_example(name, shape, options):
    net = build(name, shape[1], 5, **options)
    out = net(torch.randn(shape))
    assert out.shape == (shape[0], 5)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("padding", sorted(set(PADDINGS) - {"valid"}))
@pytest.mark.parametrize("dim", [1, 2])
def test_padding_keeps_the_size_for_odd_filters(padding, dim):
    conv = SimpleCNN(1, 2, dim=dim, depth=1, width=3, filter_size=5, padding=padding).block1.conv
    x = torch.randn(2, 1, *(11,) * dim)
    assert conv(x).shape[2:] == x.shape[2:]


def test_valid_padding_shrinks_by_filter_size_minus_one():
    conv = SimpleCNN(1, 2, dim=1, depth=1, width=3, filter_size=5, padding="valid").block1.conv
    assert conv(torch.randn(1, 1, 20)).shape[-1] == 16


def test_circular_padding_makes_the_conv_shift_equivariant():
    torch.manual_seed(0)
    conv = SimpleCNN(1, 2, dim=1, depth=1, width=3, padding="circular").block1.conv
    x = torch.randn(1, 1, 16)
    torch.testing.assert_close(conv(x.roll(3, -1)), conv(x).roll(3, -1))


def test_pooling_halves_sides_rounding_up_and_stops_at_one():
    pool = SimpleCNN(1, 2, depth=1, width=1).block1.pool
    sizes = [28]
    x = torch.randn(1, 1, 28, 28)
    for _ in range(6):
        x = pool(x)
        sizes.append(x.shape[-1])
    assert sizes == [28, 14, 7, 4, 2, 1, 1]


def test_layer_names_are_readable_module_paths():
    net = SimpleCNN(1, 10, depth=2, width=4, batch_norm=True, pool_every=2)
    leaves = [name for name, m in net.named_modules() if not list(m.children())]
    assert leaves == [
        "block1.conv", "block1.norm", "block1.act",
        "block2.conv", "block2.norm", "block2.act", "block2.pool",
        "gap", "readout",
    ]  # fmt: skip


def test_per_layer_lists_set_each_block():
    net = SimpleCNN(3, 4, depth=3, width=[5, 6, 7], filter_size=[1, 3, 5], stride=[1, 2, 1])
    convs = [net[i].conv for i in range(3)]
    assert [c.out_channels for c in convs] == [5, 6, 7]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (5, 5)]
    assert [c.stride for c in convs] == [(1, 1), (2, 2), (1, 1)]
    assert [c.in_channels for c in convs] == [3, 5, 6]
    assert net.readout.in_features == 7


def test_default_widths_double_every_second_block():
    net = SimpleCNN(1, 2, depth=6)
    assert [net[i].conv.out_channels for i in range(6)] == [32, 64, 64, 128, 128, 256]


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_parameter_count_matches_the_architecture(dim, batch_norm, bias):
    widths, filters = [4, 6, 8], [3, 2, 5]
    net = SimpleCNN(
        2, 7, dim=dim, depth=3, width=widths, filter_size=filters, batch_norm=batch_norm, bias=bias
    )
    expected, channels = 0, 2
    for out, size in zip(widths, filters, strict=True):
        weights, biases, norm = channels * out * size**dim, out * bias, 2 * out * batch_norm
        expected += weights + biases + norm
        channels = out
    expected += channels * 7 + 7
    assert sum(p.numel() for p in net.parameters()) == expected


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_is_its_own_module(activation):
    net = SimpleCNN(1, 2, depth=2, width=3, activation=activation)
    assert net.block1.act is not net.block2.act
    assert isinstance(net.block1.act, ACTIVATIONS[activation])
    assert net(torch.randn(1, 1, 8, 8)).isfinite().all()


def test_same_seed_gives_the_same_weights():
    torch.manual_seed(3)
    first = build("simplecnn", 1, 10)
    torch.manual_seed(3)
    second = build("simplecnn", 1, 10)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        (dict(depth=0), "depth"),
        (dict(depth=2.0), "depth"),
        (dict(dim=3), "dim"),
        (dict(width=0), "width"),
        (dict(depth=3, width=[4, 4]), "width"),
        (dict(depth=2, width=[4, 0]), r"width\[1\]"),
        (dict(filter_size=0), "filter_size"),
        (dict(depth=2, filter_size=[3, 3, 3]), "filter_size"),
        (dict(stride=0), "stride"),
        (dict(depth=1, stride=[1.5]), r"stride\[0\]"),
        (dict(activation="swish"), "activation.*'relu'"),
        (dict(pooling="median"), "pooling.*'max'"),
        (dict(pool_every=0), "pool_every"),
        (dict(padding="mirror"), "padding.*'circular'"),
        (dict(batch_norm="yes"), "batch_norm"),
        (dict(bias=1), "bias"),
        (dict(head="flatten"), "head"),
    ],
)
def test_bad_config_is_refused_naming_the_parameter(options, parameter):
    with pytest.raises(DiffeoProbeError, match=parameter):
        SimpleCNN(1, 10, **options)


@pytest.mark.parametrize(("args", "parameter"), [((0, 10), "in_channels"), ((1, 0), "num_classes")])
def test_bad_channel_counts_are_refused(args, parameter):
    with pytest.raises(DiffeoProbeError, match=parameter):
        build("simplecnn", *args)


def test_registry_lists_the_models_and_unknown_names_list_them():
    assert {"simplecnn", "simplecnn1d"} <= set(available())
    assert available() == MODELS.available()
    with pytest.raises(DiffeoProbeError, match="available: .*simplecnn, simplecnn1d"):
        build("resnet19", 3, 10)


def test_registry_refuses_unknown_options_listing_the_accepted():
    with pytest.raises(
        DiffeoProbeError,
        match="does not take 'widht'; did you mean 'width'. it takes: dim, depth, width",
    ):
        build("simplecnn", 1, 10, widht=3)


@pytest.mark.parametrize(
    ("name", "dim"), [("simplecnn", 2), ("simplecnn1d", 1), ("SimpleCNN1D", 1)]
)
def test_registered_names_fix_the_dimension(name, dim):
    net = build(name, 1, 2)
    assert net.dim == dim
    assert isinstance(net.block1.conv, (nn.Conv1d, nn.Conv2d)[dim - 1])
    assert math.prod(net.block1.conv.kernel_size) == 3**dim
