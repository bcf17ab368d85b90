"""Unbounded sizes are refused before any allocation (issue 14), by the API and the command line.

Each refusal is one DiffeoProbeError (on the command line: exit code 2, one line on stderr
starting 'error: ') naming the parameter, the estimate, the limit and the environment variable
that raises it, and comes at once: well under a second and with no growth of the process's peak
memory (the work it refuses would need gigabytes to terabytes).
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml

import diffeoprobe.measurement  # noqa: F401 (imported now, not inside a timed call)
import diffeoprobe.sweep.driver  # noqa: F401
from diffeoprobe import limits, models
from diffeoprobe.cli import main
from diffeoprobe.data import build as build_data
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.measurement import measure
from diffeoprobe.perturb import deform, sample_displacement
from diffeoprobe.sweep.grid import expand_grid, load_grid
from diffeoprobe.theory import exact_sensitivities, idealized_net, theory_table

FAST_S = 1.0  # a refusal takes well under this (the refused work: minutes to never)
PEAK_GROWTH = 256 * 2**20  # bytes the peak resident memory may grow by during a refusal


@pytest.fixture(autouse=True)
def _default_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts from the documented defaults, whatever the caller's environment says."""
    monkeypatch.delenv(limits.MEMORY_ENV, raising=False)
    monkeypatch.delenv(limits.RUNS_ENV, raising=False)
    yield


def _peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def refused(call: Callable[[], object], *names: str) -> str:
    """Run ``call``, which must refuse at once; return its message, checked for ``names``."""
    before, start = _peak_bytes(), time.perf_counter()
    with pytest.raises(DiffeoProbeError) as info:
        call()
    elapsed = time.perf_counter() - start
    assert elapsed < FAST_S, f"took {elapsed:.2f} s to refuse"
    assert _peak_bytes() - before < PEAK_GROWTH, "allocated before refusing"
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert name in message, (name, message)
    return message


def memory_refusal(call: Callable[[], object], *names: str) -> str:
    message = refused(call, *names)
    assert "memory limit of " + limits.format_bytes(limits.memory_limit()) in message, message
    assert "DIFFEOPROBE_MEMORY_LIMIT" in message, message
    assert " would need " in message, message
    return message


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> str:
    """Run the command line in this process; it must exit with code 2 at once. Returns stderr."""
    monkeypatch.setattr(sys, "argv", ["diffeoprobe", *args])
    start = time.perf_counter()
    with pytest.raises(SystemExit) as info:
        main()
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert info.value.code == 2, (out, err)
    assert elapsed < 5 * FAST_S, f"took {elapsed:.2f} s to refuse"  # data set and model included
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- the limits themselves -------------------------------------------------------------------------


def test_defaults_are_documented_values() -> None:
    assert limits.MAX_GRID_RUNS == 100_000
    assert limits.max_grid_runs() == 100_000
    assert 0 < limits.DEFAULT_MEMORY_LIMIT_BYTES <= 16 * 2**30
    assert limits.memory_limit() == limits.MEMORY_LIMIT_BYTES


def test_environment_variables_raise_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFEOPROBE_MEMORY_LIMIT", "64GB")
    assert limits.memory_limit() == 64 * 10**9
    monkeypatch.setenv("DIFFEOPROBE_MEMORY_LIMIT", "1.5 TiB")
    assert limits.memory_limit() == int(1.5 * 2**40)
    monkeypatch.setenv("DIFFEOPROBE_MAX_RUNS", "2000000")
    assert limits.max_grid_runs() == 2_000_000


def test_a_raised_limit_lets_the_work_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """A size refused under a small limit passes once the variable raises it (and is refused
    again under the default when it is far past it)."""
    monkeypatch.setenv("DIFFEOPROBE_MEMORY_LIMIT", "1MB")
    memory_refusal(lambda: models.build("simplecnn", 1, 10, depth=6), "depth", "1 MB")
    monkeypatch.setenv("DIFFEOPROBE_MEMORY_LIMIT", "1GB")
    assert isinstance(models.build("simplecnn", 1, 10, depth=6), torch.nn.Module)
    monkeypatch.setenv("DIFFEOPROBE_MAX_RUNS", "2")
    grid = {"train": {"model": "simplecnn1d", "dataset": "scale-detection"}}
    grid["axes"] = {"seed": [0, 1, 2]}
    assert "DIFFEOPROBE_MAX_RUNS" in refused(lambda: expand_grid(grid), "axes", "3 runs", "2 runs")
    monkeypatch.setenv("DIFFEOPROBE_MAX_RUNS", "3")
    assert len(expand_grid(grid)) == 3


def test_assigning_the_module_constant_sets_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MEMORY_LIMIT_BYTES", 10**6)
    assert limits.memory_limit() == 10**6
    monkeypatch.setattr(limits, "MAX_GRID_RUNS", 7)
    assert limits.max_grid_runs() == 7


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DIFFEOPROBE_MEMORY_LIMIT", "lots"), ("DIFFEOPROBE_MEMORY_LIMIT", "0"),
     ("DIFFEOPROBE_MEMORY_LIMIT", "12XB"), ("DIFFEOPROBE_MAX_RUNS", "many"),
     ("DIFFEOPROBE_MAX_RUNS", "0")],
)  # fmt: skip
def test_a_malformed_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    check = limits.memory_limit if variable.endswith("LIMIT") else limits.max_grid_runs
    with pytest.raises(DiffeoProbeError, match=variable):
        check()


# --- idealised nets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        dict(stride=5, filter_size=2, depth=12),  # the 24 GB: side 2 * 5^12
        dict(stride=2, filter_size=100_000, depth=12),  # receptive field 4e8
        dict(stride=2, filter_size=2, depth=10**6),  # stride^depth is never computed
        dict(stride=1, filter_size=2, depth=10**9),  # a side of 8e9 at stride 1
        dict(dim=2, stride=2, filter_size=2, depth=20),
    ],
)
def test_theory_refuses_an_input_that_grows_like_stride_to_the_depth(options: dict) -> None:
    message = memory_refusal(lambda: exact_sensitivities(**options), "depth")
    assert "stride" in message
    memory_refusal(lambda: theory_table(**options), "depth")


def test_theory_names_an_explicit_size() -> None:
    memory_refusal(lambda: exact_sensitivities(stride=1, depth=2, size=10**10), "size")


def test_idealized_net_refuses_its_parameters_before_building() -> None:
    memory_refusal(lambda: idealized_net(dim=2, depth=3, filter_size=100_000), "filter_size")
    memory_refusal(lambda: idealized_net(depth=4, channels=10**6), "channels")


def test_reasonable_theory_sizes_still_run() -> None:
    """The presets' nets (depth 256 at stride 1, depth 10 at stride 2) stay far below the limit
    (their estimate is checked here; tests/test_theory.py measures them)."""
    from diffeoprobe.theory import _check_memory, _check_size, _lattice_count, receptive_field

    for stride, depth in ((1, 256), (2, 10)):
        size = _check_size(None, 1, depth, 2, stride)
        period, field = stride**depth, receptive_field(depth, 2, stride)
        assert _lattice_count(size, period, field) >= 8
        _check_memory("depth", "lattice", 1, size, period, field, 4)


def test_theory_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    for args in (["--stride", "5", "--filter", "2"], ["--filter", "100000"]):
        line = run_cli(monkeypatch, capsys, "theory", *args)
        assert "depth, filter_size and stride" in line and "DIFFEOPROBE_MEMORY_LIMIT" in line


# --- models -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "parameter"),
    [
        ("simplecnn", dict(depth=1000), "depth"),  # default widths double: 2^500 channels
        ("simplecnn", dict(depth=10**9, width=8), "depth"),  # no list of 1e9 widths either
        ("simplecnn1d", dict(width=10**6), "width"),
        ("simplecnn", dict(depth=3, width=[8, 8, 8], filter_size=[3, 3, 10**5]), "filter_size"),
        ("scalecnn1d", dict(width=10**6), "width"),
        ("scalecnn1d", dict(depth=10**9), "depth"),
        ("fc4", dict(width=10**6), "width"),
        ("fc2", dict(input_size=10**6), "input_size"),
        ("lenet", dict(input_size=10**6), "input_size"),
    ],
)
def test_models_refuse_their_parameter_count_before_building(
    name: str, options: dict, parameter: str
) -> None:
    memory_refusal(lambda: models.build(name, 3, 10, **options), parameter, "parameters")


@pytest.mark.parametrize("name", ["vgg11", "vgg19bn", "alexnet", "efficientnetb0", "resnet18"])
def test_fixed_architectures_refuse_huge_channel_and_class_counts(name: str) -> None:
    memory_refusal(lambda: models.build(name, 3, 10**10), "num_classes")
    memory_refusal(lambda: models.build(name, 10**9, 10), "in_channels")


def test_resnet_refuses_a_stage_of_a_million_blocks() -> None:
    from diffeoprobe.models.resnet import ResNet

    memory_refusal(lambda: ResNet(3, 10, layers=(10**6, 1, 1, 1)), "layers")


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("scalecnn1d", dict(width=1000)),  # the paper's width-1000 1D CNN
        ("simplecnn1d", dict(depth=7, width=1000)),
        ("vgg19bn", {}),
        ("resnet50", {}),
        ("fc6", dict(width=1024)),
    ],
)
def test_reasonable_models_still_build(name: str, options: dict) -> None:
    assert isinstance(models.build(name, 3, 10, **options), torch.nn.Module)


# --- the diffeo ensemble and measure ----------------------------------------------------------------


def test_deform_refuses_a_cut_whose_sine_basis_would_not_fit() -> None:
    x = torch.rand(8, 3, 32, 32)
    memory_refusal(lambda: deform(x, 1e-3, cut=100_000), "cut", "cut 100000")
    memory_refusal(lambda: sample_displacement(8, (32, 32), 1e-3, cut=100_000), "cut")
    memory_refusal(lambda: sample_displacement(10**6, (1000, 1000), 1e-3), "batch and size")


def test_measure_refuses_cut_and_draws() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
    x = torch.rand(16, 1, 28, 28)
    memory_refusal(lambda: measure(net, x, cut=100_000), "cut")
    memory_refusal(lambda: measure(net, x, draws=10**9), "draws", "1000000000 deformed")


def test_reasonable_measurements_still_run() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    table = measure(net, torch.rand(8, 3, 32, 32), cut=3, draws=4)
    assert len(table) >= 3 and table["D"].notna().all()


def test_measure_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    small = ["--probe-size", "40", "-d", "d=32", "-d", "xi=8", "-d", "train_size=100"]
    small += ["-d", "test_size=60"]
    line = run_cli(monkeypatch, capsys, "measure", *small, "--draws", "1000000000")
    assert "draws" in line and "DIFFEOPROBE_MEMORY_LIMIT" in line
    images = ["-d", "dim=2", "-d", "d=16", "-d", "xi=4", "-d", "train_size=100"]
    images += ["-d", "test_size=60", "--probe-size", "40"]
    images += ["--diffeo", "max-entropy"]  # scale-detection's own is the pixel shift
    line = run_cli(monkeypatch, capsys, "measure", *images, "--cut", "100000")
    assert "cut" in line and "DIFFEOPROBE_MEMORY_LIMIT" in line
    line = run_cli(monkeypatch, capsys, "measure", *small, "-m", "width=1000000")
    assert "width" in line and "parameters" in line
    line = run_cli(monkeypatch, capsys, "measure", "-d", "d=100000")
    assert "d: " in line and "pairs" in line and "DIFFEOPROBE_MEMORY_LIMIT" in line


# --- the scale-detection data set -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        (dict(d=100_000), "d: "),
        (dict(dim=2, d=2000, xi=4), "d: "),
        (dict(d=60_000, xi=4, train_size=1000), "d: "),
    ],
)
def test_scale_detection_refuses_its_pairs_before_listing_them(
    options: dict, parameter: str
) -> None:
    memory_refusal(lambda: build_data("scale-detection", split="train", **options), parameter)


def test_scale_detection_refuses_the_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pairs fit, the chosen signals do not: the size that chose them is named."""
    monkeypatch.setenv("DIFFEOPROBE_MEMORY_LIMIT", "300MB")
    memory_refusal(
        lambda: build_data("scale-detection", split="train", d=1000, xi=4, train_size=400_000),
        "train_size",
    )


def test_reasonable_scale_detection_sets_still_build() -> None:
    assert len(build_data("scale-detection", split="train", dim=2, d=28, xi=14, gap=2)) == 1024


# --- grids ------------------------------------------------------------------------------------------


def _grid_of(axes: dict) -> dict:
    return {"train": {"model": "simplecnn1d", "dataset": "scale-detection"}, "axes": axes}


def test_a_grid_of_a_million_runs_is_refused_before_expanding() -> None:
    axes = {
        "seed": list(range(32)),
        "epochs": list(range(1, 33)),
        "batch_size": list(range(1, 33)),
        "model_options.depth": list(range(1, 33)),
    }
    message = refused(lambda: expand_grid(_grid_of(axes)), "axes", "1,048,576 runs")
    assert "100,000 runs" in message and "DIFFEOPROBE_MAX_RUNS" in message


def test_one_long_axis_is_refused_before_its_values_are_checked() -> None:
    refused(lambda: expand_grid(_grid_of({"seed": list(range(10**6))})), "axes.seed", "runs")


def test_sub_grids_add_up(tmp_path: Path) -> None:
    """Eleven sub-grids of 10,000 runs each: each is under the limit, together they are not."""
    grid = _grid_of({"seed": list(range(100)), "epochs": list(range(1, 101))})
    grid["grids"] = {f"g{i}": {"train": {"lr": 0.01 * (i + 1)}} for i in range(11)}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    refused(lambda: load_grid(path), "axes", "110,000 runs")


def test_sweep_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    axes = {name: list(range(1, 33)) for name in ("seed", "epochs", "batch_size")}
    axes["model_options.depth"] = list(range(1, 33))
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(_grid_of(axes)))
    line = run_cli(
        monkeypatch, capsys, "sweep", str(path), "--out", str(tmp_path / "o"), "--dry-run"
    )
    assert "1,048,576 runs" in line and "DIFFEOPROBE_MAX_RUNS" in line
    assert not (tmp_path / "o").exists()
