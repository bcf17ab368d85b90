"""dp.measure on real modules: exactness, independence of batching, reproducibility, layer capture."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import diffeoprobe as dp
from diffeoprobe.errors import DiffeoProbeError


def images(
    n: int = 24, shape: tuple[int, ...] = (1, 12, 12), seed: int = 0, dtype=torch.float32
) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def small_cnn(dim: int = 2) -> nn.Module:
    torch.manual_seed(0)
    conv, pool = (nn.Conv2d, nn.AvgPool2d) if dim == 2 else (nn.Conv1d, nn.AvgPool1d)
    return nn.Sequential(
        conv(1, 6, 3, padding=1),
        nn.ReLU(),
        pool(2),
        conv(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
    )


class Residual(nn.Module):
    """Functional ops in forward: invisible to module hooks, seen by torch.fx."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(x))
        h = self.act(self.conv2(h)) + h  # the shared ReLU fires twice
        h = F.relu(h)
        return self.head(h.mean((2, 3)))


class Untraceable(Residual):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(x))
        if h.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            h = h * 1.0
        return self.head(h.mean((2, 3)))


@pytest.mark.parametrize("capture", ["fx", "hooks"])
def test_identity_and_orthogonal_layers_give_r_exactly_one(capture: str) -> None:
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    rotate = nn.Linear(12, 12, bias=False).double()
    rotate.weight.data = q
    net = nn.Sequential(nn.Identity(), rotate, nn.Identity())
    tab = dp.measure(net, images(20, dtype=torch.float64), capture=capture, seed=3)
    assert list(tab["layer"]) == ["input", "0", "1", "output"]
    assert (tab["R"] - 1).abs().max() < 1e-12


def direct_measure(
    net: nn.Module, x: torch.Tensor, xt: torch.Tensor, xn: torch.Tensor
) -> list[dict]:
    """One layer at a time, one input kind at a time, with an explicit P x P distance matrix."""
    rows = []
    reps = {}
    for kind, batch in (("clean", x), ("diffeo", xt), ("noise", xn)):
        outs: list[torch.Tensor] = []
        hooks = [
            m.register_forward_hook(lambda _m, _i, o, outs=outs: outs.append(o.flatten(1)))
            for m in net
        ]
        with torch.no_grad():
            net(batch)
        for h in hooks:
            h.remove()
        reps[kind] = [batch.flatten(1), *outs]
    for k in range(len(reps["clean"])):
        a = reps["clean"][k]
        p = a.shape[0]
        z = torch.cdist(a, a).square().sum() / (p * (p - 1))
        d = (reps["diffeo"][k] - a).square().sum(1)
        g = (reps["noise"][k] - a).square().sum(1)
        rows.append(
            dict(D=(d.mean() / z).item(), G=(g.mean() / z).item(), R=(d.mean() / g.mean()).item())
        )
    return rows


def test_statistics_equal_direct_computation() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 5, 3), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(125, 4)
    ).double()
    x = images(30, dtype=torch.float64)
    made = {}

    def diffeo(batch, gen):
        made["xt"] = dp.deform(batch, dp.temperature_for(1.0, (12, 12), 3), 3, generator=gen)
        return made["xt"]

    def noise(batch, xt, gen):
        made["eta"] = dp.matched_noise(batch, xt, generator=gen)
        return made["eta"]

    tab = dp.measure(net, x, diffeo=diffeo, noise=noise, batch_size=1000)
    want = direct_measure(net, x, made["xt"], x + made["eta"])
    assert len(tab) == len(want)
    for (_, row), expected in zip(tab.iterrows(), want, strict=False):
        for key in "DGR":
            assert row[key] == pytest.approx(expected[key], rel=1e-10)


def test_results_do_not_depend_on_batch_size() -> None:
    net = small_cnn().double()
    x = images(300, dtype=torch.float64)  # more than one perturbation block
    big = dp.measure(net, x, batch_size=900, seed=5)
    small = dp.measure(net, x, batch_size=21, seed=5)
    pd.testing.assert_frame_equal(big, small, rtol=1e-10)


def test_same_seed_gives_bit_identical_tables_and_other_seeds_differ() -> None:
    net = small_cnn()
    x = images(40)
    one = dp.measure(net, x, seed=7, draws=2)
    two = dp.measure(net, x, seed=7, draws=2)
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    other = dp.measure(net, x, seed=8, draws=2)
    assert not one["D"].equals(other["D"])


def test_tensor_dataset_and_dataloader_give_the_same_table() -> None:
    net = small_cnn()
    x = images(50)
    labels = torch.zeros(50, dtype=torch.long)
    from_tensor = dp.measure(net, x, seed=1)
    from_dataset = dp.measure(net, TensorDataset(x, labels), seed=1)
    from_loader = dp.measure(net, DataLoader(TensorDataset(x, labels), batch_size=9), seed=1)
    pd.testing.assert_frame_equal(from_tensor, from_dataset, check_exact=True)
    pd.testing.assert_frame_equal(from_tensor, from_loader, check_exact=True)


def test_functional_ops_are_layers_with_fx_and_shared_modules_are_named_by_call() -> None:
    tab = dp.measure(Residual(), images(16), seed=0)
    assert tab.attrs["capture"] == "fx"
    assert list(tab["layer"]) == [
        "input",
        "conv1",
        "act",
        "conv2",
        "act:1",
        "add",
        "relu",
        "mean",
        "output",
    ]
    assert list(tab["module"]) == ["", "conv1", "act", "conv2", "act", "", "", "", "head"]
    assert list(tab["depth"]) == list(range(9))
    assert tab["rel_depth"].iloc[-1] == 1.0


def test_hooks_see_modules_only_and_name_repeated_calls() -> None:
    tab = dp.measure(Residual(), images(16), capture="hooks", seed=0)
    assert list(tab["layer"]) == ["input", "conv1", "act", "conv2", "act:1", "output"]


def test_auto_capture_falls_back_to_hooks_when_tracing_fails() -> None:
    tab = dp.measure(Untraceable(), images(16), seed=0)
    assert tab.attrs["capture"] == "hooks"
    assert list(tab["layer"]) == ["input", "conv1", "act", "output"]
    with pytest.raises(DiffeoProbeError, match="capture='fx'"):
        dp.measure(Untraceable(), images(16), capture="fx")


def test_selected_layers_and_non_leaf_modules() -> None:
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU()), nn.Flatten(), nn.Linear(300, 2)
    )
    tab = dp.measure(net, images(16), layers=["0", "output"])
    assert list(tab["layer"]) == ["0", "output"]
    assert tab.attrs["capture"] == "hooks"


def test_channel_mean_averages_over_channels() -> None:
    tab = dp.measure(small_cnn(), images(16), channel_mean=True)
    by_layer = tab.set_index("layer")["features"]
    assert by_layer["0"] == 12 * 12 and by_layer["input"] == 12 * 12


def test_one_dimensional_signals() -> None:
    x = images(20, (1, 32))
    tab = dp.measure(small_cnn(dim=1), x, seed=0)
    assert (tab["n"] == 20).all()
    assert tab["R"].iloc[0] == pytest.approx(1.0, rel=1e-5)


def test_pixel_shift_and_rectified_noise_are_pluggable() -> None:
    x = torch.zeros(20, 1, 32)
    x[torch.arange(20), 0, torch.arange(20)] = 1.0
    x[torch.arange(20), 0, torch.arange(20) + 8] = 1.0
    tab = dp.measure(small_cnn(dim=1), x, diffeo="pixel-shift", noise="rectified", seed=0)
    assert tab.attrs["diffeo"] == "pixel-shift"
    assert (tab["D"] > 0).all()


def test_training_mode_restored_and_hooks_removed() -> None:
    net = small_cnn().train()
    dp.measure(net, images(8), capture="hooks")
    assert net.training
    assert all(not m._forward_hooks for m in net.modules())


class FailsLater(nn.Module):
    """Passes the probe batch measure sends first, then fails inside the measured forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("failed in the measured forward")
        return self.conv(x)


def test_hooks_removed_when_the_forward_fails() -> None:
    net = FailsLater()
    with pytest.raises(RuntimeError, match="measured forward"):
        dp.measure(net, images(8), capture="hooks")
    assert all(not m._forward_hooks for m in net.modules())


class Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - must never run
        raise AssertionError("the model ran although the input was invalid")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=1e300), r"temperature must be .*\[0, 1e\+06\]"),
        (dict(temperature=2e6), r"temperature must be .*\[0, 1e\+06\]"),
        (dict(delta=1e300), "delta must be in"),
        (dict(delta=1e6), "delta must be in"),
        (dict(cut=0), "cut"),
        (dict(cut=2.5), "cut"),
        (dict(layers=["nope"]), "nope"),
        (dict(draws=0), "draws"),
        (dict(batch_size=0), "batch_size"),
        (dict(interp="cubic"), "interp"),
        (dict(delta=-1.0), "delta"),
        (dict(capture="magic"), "capture"),
        (dict(diffeo="twirl"), "diffeo"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(kwargs: dict, match: str) -> None:
    with pytest.raises(DiffeoProbeError, match=match):
        dp.measure(
            Exploding(), images(4, (1, 8, 8)), capture=kwargs.pop("capture", "hooks"), **kwargs
        )


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (torch.zeros(0, 1, 8, 8), "empty"),
        (torch.zeros(4, 8), "rank"),
        (torch.zeros(2, 1, 4, 4, 4), "rank"),
        (torch.zeros(4, 1, 8, 8, dtype=torch.int64), "floating"),
        ("images.png", "data"),
    ],
)
def test_bad_probe_sets_are_refused_before_any_work(data: object, match: str) -> None:
    with pytest.raises(DiffeoProbeError, match=match):
        dp.measure(Exploding(), data, capture="hooks")


class LogOf(nn.Module):
    """``log(x - shift)``: NaN wherever ``x < shift``."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x - self.shift)


def test_a_layer_with_non_finite_values_is_named_instead_of_a_nan_table() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), LogOf(10.0), nn.Flatten(), nn.Linear(400, 2))
    with pytest.raises(DiffeoProbeError, match=r"layer\(s\) \['1', '2', 'output'\] are not finite"):
        dp.measure(net, images(8), capture="hooks")


def test_a_custom_diffeo_with_non_finite_values_is_refused_at_the_input() -> None:
    def broken(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return x * float("inf")

    with pytest.raises(DiffeoProbeError, match="diffeo: the deformed images .*NaN or infinite"):
        dp.measure(small_cnn(), images(8), diffeo=broken, capture="hooks")


def test_the_largest_temperature_measures_finite_numbers() -> None:
    table = dp.measure(small_cnn(), images(16), temperature=1e6, capture="hooks")
    assert table[["D", "G", "R", "Z"]].notna().all().all()
    assert (table[["D", "G", "R"]] > 0).all().all()


class _ReturnsMapping(torch.nn.Module):
    """A user model whose forward returns a dict (as Hugging Face models return a ModelOutput),
    with an inner layer returning a tuple (as attention blocks do)."""

    def __init__(self) -> None:
        super().__init__()
        self.block = _TupleBlock()
        self.head = torch.nn.Flatten()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        hidden, _ = self.block(x)
        return {"loss": None, "logits": self.head(hidden)}


class _TupleBlock(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.sum() > 1e9:  # data-dependent control flow: fx cannot trace it (hooks are used)
            x = x * 2
        return x * 3.0, x.mean()


def test_models_returning_dicts_and_tuples_are_measured_exactly() -> None:
    """Norm-preserving maps up to a scale: R = 1 at every layer, whatever the output's form."""
    x = torch.rand(8, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    table = dp.measure(_ReturnsMapping(), x, seed=0)
    assert list(table["layer"]) == ["input", "block", "output"]  # head's output is the logits
    np.testing.assert_allclose(table["R"].to_numpy(), 1.0, rtol=1e-6)


def test_layers_take_glob_patterns_and_refuse_a_pattern_that_matches_nothing() -> None:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 3), torch.nn.ReLU()
    )
    x = torch.rand(8, 1, 9, 9, generator=torch.Generator().manual_seed(1))
    table = dp.measure(net, x, layers=["input", "[02]", "output"], seed=0)
    assert list(table["layer"]) == ["input", "0", "2", "output"]
    with pytest.raises(DiffeoProbeError, match=r"pattern 'encoder\.\*' matches no layer"):
        dp.measure(net, x, layers=["encoder.*"], seed=0)
