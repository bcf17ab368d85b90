"""The model zoo: every registered model on 28 x 28 and 32 x 32 inputs, parameter counts, layer
names, fx traceability, the scale-detection CNN's parametrisation, refused options, timm names."""

from __future__ import annotations

import functools
import math
import operator
import sys

import pytest
import torch
from torch import fx, nn

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.models import ScaleCNN1d, available, build
from diffeoprobe.models.lenet import LeNet
from diffeoprobe.models.resnet import ResNet
from diffeoprobe.models.scale_cnn import ScaledConv1d
from diffeoprobe.models.vgg import VGG

ZOO = [
    "alexnet", "efficientnetb0", "fc2", "fc4", "fc6", "lenet", "resnet18", "resnet34", "resnet50",
    "scalecnn1d", "vgg11", "vgg11bn", "vgg13bn", "vgg16bn", "vgg19bn",
]  # fmt: skip
ONE_D = {"scalecnn1d", "simplecnn1d"}
INPUTS = [(1, 28), (3, 32)]  # (channels, image side): MNIST-like and CIFAR-like
SMALL = {"scalecnn1d": dict(width=16), "fc2": dict(width=32), "fc4": dict(width=32), "fc6": dict(width=32)}  # fmt: skip
NEEDS_INPUT_SIZE = {"lenet", "fc2", "fc4", "fc6"}
HEAVY = {"resnet34", "resnet50", "efficientnetb0"}  # a forward pass takes seconds on 2 CPU cores


def _names(names: list[str]) -> list[object]:
    """``names`` as test parameters, the heavy models marked slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in names]


@functools.cache
def _model(name: str, channels: int, size: int, num_classes: int = 10) -> nn.Module:
    """A seeded model for ``(channels, size)`` inputs, in eval mode (built once per session)."""
    options = dict(SMALL.get(name, {}))
    if name in NEEDS_INPUT_SIZE:
        options["input_size"] = size
    torch.manual_seed(0)
    return build(name, channels, num_classes, **options).eval()


def _input(name: str, channels: int, size: int, batch: int = 2) -> torch.Tensor:
    """Images ``(B, C, size, size)``, or signals ``(B, C, 4 * size)`` for the 1D models."""
    shape = (batch, channels, 4 * size) if name in ONE_D else (batch, channels, size, size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


def test_available_lists_the_whole_zoo():
    assert set(ZOO) | {"simplecnn", "simplecnn1d"} == set(available())


@pytest.mark.parametrize(("channels", "size"), INPUTS)
@pytest.mark.parametrize("name", _names(available()))
def test_every_model_gives_finite_logits_per_example(name, channels, size):
    with torch.no_grad():
        out = _model(name, channels, size)(_input(name, channels, size))
    assert out.shape == (2, 10)
    assert out.isfinite().all()


@pytest.mark.parametrize("name", _names(available()))
def test_every_model_runs_in_training_mode(name):
    """Dropout, stochastic depth and BatchNorm's batch statistics: the training-only paths."""
    net = _model(name, 1, 28)
    try:
        with torch.no_grad():
            out = net.train()(_input(name, 1, 28))
    finally:
        net.eval()
    assert out.shape == (2, 10)
    assert out.isfinite().all()


# 3 x 32 x 32 inputs, 10 classes. VGG and ResNet: the usual CIFAR versions (as in the papers'
# code); EfficientNet-B0: the same count as torchvision's B0 with 10 classes.
PARAMETERS = {
    "vgg11": 9_225_610,
    "vgg11bn": 9_231_114,
    "vgg13bn": 9_416_010,
    "vgg16bn": 14_728_266,
    "vgg19bn": 20_040_522,
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    "resnet50": 23_520_842,
    "alexnet": 23_272_266,
    "lenet": 62_006,
    "efficientnetb0": 4_020_358,
}


@pytest.mark.parametrize(("name", "expected"), sorted(PARAMETERS.items()))
def test_parameter_count_matches_the_published_architecture(name, expected):
    assert sum(p.numel() for p in _model(name, 3, 32).parameters()) == expected


@pytest.mark.parametrize(("depth", "name"), [(2, "fc2"), (4, "fc4"), (6, "fc6")])
def test_fully_connected_depth_counts_linear_layers(depth, name):
    net = build(name, 3, 10, input_size=8, width=5)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == depth
    assert linears[0].in_features == 3 * 8 * 8
    count = (3 * 64 * 5 + 5) + (depth - 2) * (5 * 5 + 5) + (5 * 10 + 10)
    assert sum(p.numel() for p in net.parameters()) == count


@pytest.mark.parametrize("name", _names(available()))
def test_fx_trace_reproduces_the_model(name):
    net = _model(name, 3, 32)
    x = _input(name, 3, 32)
    traced = fx.symbolic_trace(net)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), net(x))


@pytest.mark.parametrize(
    ("name", "adds", "muls"),
    [("resnet18", 8, 0), ("resnet34", 16, 0), ("resnet50", 16, 0), ("efficientnetb0", 9, 16)],
)  # tracing does not run the model: fast even for the heavy ones
def test_residual_additions_and_gates_are_fx_nodes(name, adds, muls):
    graph = fx.symbolic_trace(_model(name, 3, 32)).graph
    targets = [n.target for n in graph.nodes if n.op == "call_function"]
    assert targets.count(operator.add) == adds
    assert targets.count(operator.mul) == muls


@pytest.mark.parametrize("name", _names(ZOO))
def test_every_leaf_module_runs_once_so_layer_names_are_unique(name):
    net = _model(name, 1, 28)
    calls: dict[str, int] = {}
    leaves = {n: m for n, m in net.named_modules() if n and not list(m.children())}
    handles = [
        m.register_forward_hook(lambda *_, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
        for n, m in leaves.items()
    ]
    try:
        with torch.no_grad():
            net(_input(name, 1, 28))
    finally:
        for handle in handles:
            handle.remove()
    assert calls == dict.fromkeys(leaves, 1)


@pytest.mark.parametrize(
    ("name", "names"),
    [
        ("vgg11", ["features.0", "features.1", "features.2", "avgpool", "classifier"]),
        ("vgg11bn", ["features.0", "features.1", "features.2", "features.3", "classifier"]),
        ("resnet18", ["conv1", "layer1.0.conv1", "layer1.0.relu1", "layer1.0.relu2", "fc"]),
        ("resnet18", ["layer2.0.shortcut.0", "layer2.0.shortcut.1", "layer4.1.relu2"]),
        ("resnet50", ["layer1.0.conv3", "layer1.0.relu3", "layer1.0.shortcut.0", "layer4.2.bn3"]),
        ("alexnet", ["features.0", "features.12", "avgpool", "classifier.6"]),
        ("lenet", ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "fc1", "fc3"]),
        ("efficientnetb0", ["stem_conv", "blocks.0.se.gate", "blocks.15.project_bn", "classifier"]),
        ("fc4", ["fc1", "relu1", "fc2", "relu2", "fc3", "relu3", "readout"]),
        (
            "scalecnn1d",
            ["block1.conv", "block1.act", "block7.conv", "block7.act", "gap", "readout"],
        ),
    ],
)
def test_layers_have_readable_module_paths(name, names):
    paths = {n for n, _ in _model(name, 3, 32).named_modules()}
    assert set(names) <= paths


@pytest.mark.parametrize(("name", "side"), [("vgg11", 1), ("vgg19bn", 1), ("alexnet", 2)])
@pytest.mark.parametrize("size", [28, 32])
def test_ceil_pooling_brings_28_and_32_to_the_classifier_size(name, side, size):
    features = _model(name, 1, size).features(torch.zeros(1, 1, size, size))
    assert features.shape[-2:] == (side, side)


@pytest.mark.parametrize(
    ("size", "padding", "side"), [(28, 2, 5), (32, 0, 5), (30, 1, 5), (40, 0, 7)]
)
def test_lenet_pads_small_images_to_its_32_pixel_field(size, padding, side):
    net = LeNet(1, 10, input_size=size)
    assert net.conv1.padding == (padding, padding)
    assert net.fc1.in_features == 16 * side * side
    assert net(torch.zeros(2, 1, size, size)).shape == (2, 10)


def _conv_lengths(net: nn.Module, x: torch.Tensor) -> list[int]:
    lengths: list[int] = []
    convs = [m for m in net.modules() if isinstance(m, ScaledConv1d)]
    handles = [
        c.register_forward_hook(lambda _m, _i, y: lengths.append(y.shape[-1])) for c in convs
    ]
    try:
        net(x)
    finally:
        for handle in handles:
            handle.remove()
    return lengths


def test_scalecnn1d_halves_128_down_to_1_in_seven_layers():
    net = ScaleCNN1d(1, 1, width=4)
    assert _conv_lengths(net, torch.randn(2, 1, 128)) == [64, 32, 16, 8, 4, 2, 1]


@pytest.mark.parametrize(
    ("length", "lengths"),
    [(100, [50, 25, 13, 7, 4, 2, 1]), (300, [150, 75, 38, 19, 10, 5, 3]), (1, [1] * 7)],
)
def test_scalecnn1d_takes_other_lengths_rounding_up(length, lengths):
    net = ScaleCNN1d(2, 3, width=4)
    assert _conv_lengths(net, torch.randn(2, 2, length)) == lengths
    assert net(torch.randn(2, 2, length)).shape == (2, 3)


@pytest.mark.parametrize(("channels", "filter_size", "stride"), [(1, 2, 2), (3, 2, 2), (2, 5, 1)])
def test_scalecnn1d_first_preactivation_has_unit_variance(channels, filter_size, stride):
    torch.manual_seed(0)
    net = ScaleCNN1d(channels, 1, depth=1, width=512, filter_size=filter_size, stride=stride)
    pre = net.block1.conv(torch.randn(64, channels, 128))
    # 512 * channels * filter_size weights set the variance: relative error ~ 1 / sqrt(256)
    assert pre.var().item() == pytest.approx(1.0, abs=0.2)


def test_scalecnn1d_is_ntk_parametrised_with_a_mean_field_readout():
    torch.manual_seed(0)
    net = ScaleCNN1d(1, 2, depth=2, width=300)
    conv = net.block2.conv
    assert conv.weight.std().item() == pytest.approx(1.0, abs=0.05)
    assert conv.scale == pytest.approx(1 / math.sqrt(300 * 2))
    assert net.readout.scale == pytest.approx(1 / 300)
    assert net.readout.weight.std().item() == pytest.approx(1.0, abs=0.1)
    assert conv.bias is None and net.readout.bias is None
    h = torch.rand(3, 300)
    torch.testing.assert_close(net.readout(h), h @ net.readout.weight.T / 300)
    with_bias = ScaleCNN1d(1, 2, depth=2, width=4, bias=True)
    assert not with_bias.block1.conv.bias.any() and not with_bias.readout.bias.any()


@pytest.mark.parametrize(
    ("filter_size", "stride", "shift"), [(2, 2, 2), (3, 1, 1), (4, 2, 6), (2, 1, 3)]
)
def test_scaled_conv_pads_circularly_so_it_commutes_with_shifts(filter_size, stride, shift):
    torch.manual_seed(0)
    conv = ScaledConv1d(2, 3, filter_size, stride)
    x = torch.randn(2, 2, 16)
    torch.testing.assert_close(conv(x.roll(shift, -1)), conv(x).roll(shift // stride, -1))
    assert conv(x).shape[-1] == 16 // stride


@pytest.mark.parametrize("activation", ["tanh", "identity"])
def test_scalecnn1d_takes_simplecnn_activations(activation):
    net = build("scalecnn1d", 1, 1, width=4, activation=activation)
    assert net.block3.act is not net.block4.act
    assert net(torch.randn(2, 1, 128)).shape == (2, 1)


def test_same_seed_gives_the_same_zoo_weights():
    torch.manual_seed(5)
    first = build("resnet18", 1, 2)
    torch.manual_seed(5)
    second = build("resnet18", 1, 2)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("name", "options", "parameter"),
    [
        ("scalecnn1d", dict(depth=0), "depth"),
        ("scalecnn1d", dict(width=2.5), "width"),
        ("scalecnn1d", dict(filter_size=0), "filter_size"),
        ("scalecnn1d", dict(stride=0), "stride"),
        ("scalecnn1d", dict(activation="swish"), "activation.*'relu'"),
        ("scalecnn1d", dict(bias=1), "bias"),
        ("fc4", dict(width=0), "width"),
        ("fc4", dict(input_size=0), "input_size"),
        ("lenet", dict(input_size="28"), "input_size"),
        ("vgg11", dict(batch_norm=True), "does not take 'batch_norm'; it takes no options"),
        ("resnet18", dict(layers=(1, 1, 1, 1)), "does not take 'layers'"),
        (
            "fc2",
            dict(depth=3),
            "does not take 'depth'; did you mean 'width'. it takes: input_size, width",
        ),
    ],
)
def test_bad_options_are_refused_naming_the_option(name, options, parameter):
    with pytest.raises(DiffeoProbeError, match=parameter):
        build(name, 1, 10, **options)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize(("args", "parameter"), [((0, 10), "in_channels"), ((1, 0), "num_classes")])
def test_bad_channel_counts_are_refused(name, args, parameter):
    with pytest.raises(DiffeoProbeError, match=parameter):
        build(name, *args)


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda: VGG(3, 10, config="vgg12"), "config.*'vgg11'"),
        (lambda: VGG(3, 10, batch_norm="yes"), "batch_norm"),
        (lambda: ResNet(3, 10, block="wide"), "block.*'basic'"),
        (lambda: ResNet(3, 10, layers=(2, 2)), "layers must be 4 integers"),
        (lambda: ResNet(3, 10, layers=(2, 0, 2, 2)), r"layers\[1\]"),
    ],
)
def test_bad_class_arguments_are_refused(make, parameter):
    with pytest.raises(DiffeoProbeError, match=parameter):
        make()


def test_unknown_names_list_the_zoo():
    with pytest.raises(DiffeoProbeError, match="did you mean 'resnet18'.*available: alexnet, "):
        build("resnet19", 3, 10)


def test_timm_names_need_the_optional_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(DiffeoProbeError, match="timm:resnet18.*pip install timm"):
        build("timm:resnet18", 3, 10)


def test_timm_models_build_when_installed():
    pytest.importorskip("timm")
    net = build("timm:resnet18", 1, 7)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    with pytest.raises(DiffeoProbeError, match="timm:no_such_net"):
        build("timm:no_such_net", 1, 7)
