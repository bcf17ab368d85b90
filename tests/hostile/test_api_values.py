"""Hostile values for every parameter of the public API: one DiffeoProbeError naming it.

The cases are generated from two tables: ``CALLS`` (a valid call of each public function) and
``PARAMETERS`` (each parameter with the kind of value it takes); ``BAD`` lists the hostile values
of each kind (wrong type, out of range, NaN/inf, huge, empty, wrong rank and dtype). Sizes that
would allocate too much are ``tests/hostile/test_sizes.py``'s.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import diffeoprobe as dp
from diffeoprobe.config import MeasureConfig, TrainConfig, validate
from diffeoprobe.errors import DiffeoProbeError
from hostile.promise import (
    assert_api_refuses,
    assert_one_line,
    fake_sweep,
    time_limit,
    xfail_if,
)

NAN, INF = math.nan, math.inf


def images(*shape: int, dtype: torch.dtype = torch.float32, fill: float | None = None) -> Any:
    """A seeded batch (or a constant one with ``fill``)."""
    if fill is not None:
        return torch.full(shape, fill, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    return torch.rand(shape, generator=g).to(dtype)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128, 3))


def tiny_table() -> pd.DataFrame:
    return dp.measure(tiny_net(), images(16, 1, 8, 8), delta=1.0, probe_size=16, seed=0)


# A valid call of each public function: name -> (function, keyword arguments). Every case below
# replaces one argument by a hostile value.
CALLS: dict[str, tuple[Callable[[], Callable[..., Any]], Callable[[Path], dict[str, Any]]]] = {
    "temperature_for": (lambda: dp.temperature_for, lambda _: dict(delta=1.0, size=32, cut=3)),
    "typical_displacement": (
        lambda: dp.typical_displacement,
        lambda _: dict(temperature=1e-3, size=32, cut=3),
    ),
    "temperature_range": (lambda: dp.temperature_range, lambda _: dict(size=32, cut=3)),
    "sample_displacement": (
        lambda: dp.sample_displacement,
        lambda _: dict(batch=2, size=8, temperature=1e-3, cut=3),
    ),
    "deform": (
        lambda: dp.deform,
        lambda _: dict(x=images(2, 1, 8, 8), temperature=1e-3, cut=3, interp="bilinear"),
    ),
    "remap": (
        lambda: dp.remap,
        lambda _: dict(x=images(2, 1, 8, 8), displacement=torch.zeros(2, 2, 8, 8)),
    ),
    "matched_noise": (
        lambda: dp.matched_noise,
        lambda _: dict(x=images(2, 1, 8, 8), xt=images(2, 1, 8, 8).flip(-1)),
    ),
    "pixel_shift": (lambda: dp.pixel_shift, lambda _: dict(x=images(2, 1, 16), block=None)),
    "measure": (
        lambda: dp.measure,
        lambda _: dict(model=tiny_net(), data=images(16, 1, 8, 8), probe_size=16, batch_size=64),
    ),
    "models.build": (
        lambda: dp.models.build,
        lambda _: dict(name="simplecnn", in_channels=1, num_classes=2, input_size=8),
    ),
    "data.build": (
        lambda: dp.data.build,
        lambda _: dict(
            name="scale-detection", split="test", d=16, xi=4, train_size=40, test_size=10
        ),
    ),
    "theory.exact_sensitivities": (
        lambda: dp.theory.exact_sensitivities,
        lambda _: dict(depth=3),
    ),
    "theory.idealized_net": (lambda: dp.theory.idealized_net, lambda _: dict(depth=3)),
    "theory.power_laws": (lambda: dp.theory.power_laws, lambda _: dict()),
    "theory.receptive_field": (
        lambda: dp.theory.receptive_field,
        lambda _: dict(depth=3, filter_size=2, stride=2),
    ),
    "theory.theory_table": (lambda: dp.theory.theory_table, lambda _: dict(depth=3)),
    "theory.fit_exponent": (
        lambda: dp.theory.fit_exponent,
        lambda _: dict(k=[1.0, 2.0, 4.0, 8.0], values=[1.0, 0.5, 0.25, 0.125]),
    ),
    "probes.filter_spectrum": (
        lambda: dp.probes.filter_spectrum,
        lambda _: dict(model=tiny_net()),
    ),
    "probes.channel_shuffle": (
        lambda: dp.probes.channel_shuffle,
        lambda _: dict(model=tiny_net(), generator=torch.Generator().manual_seed(0)),
    ),
    "probes.laplacian_eigenbasis": (
        lambda: dp.probes.laplacian_eigenbasis,
        lambda _: dict(shape=3),
    ),
    "probes.shuffled_sensitivities": (
        lambda: dp.probes.shuffled_sensitivities,
        lambda _: dict(model=tiny_net(), data=images(16, 1, 8, 8), permutations=1, probe_size=16),
    ),
    "probes.pooling_shares": (
        lambda: dp.probes.pooling_shares,
        lambda _: dict(original=tiny_table(), shuffled=tiny_table()),
    ),
    "sweep.expand_grid": (
        lambda: dp.sweep.expand_grid,
        lambda _: dict(data={"train": {"dataset": "scale-detection"}}),
    ),
    "sweep.load_grid": (lambda: dp.sweep.load_grid, lambda tmp: dict(path=tmp / "grid.yaml")),
    "sweep.results.query": (
        lambda: importlib.import_module("diffeoprobe.sweep.results").query,
        lambda tmp: dict(root=tmp / "sweep"),
    ),
    "train": (
        lambda: dp.train,
        lambda tmp: dict(
            config=TrainConfig(model="simplecnn1d", dataset="scale-detection"), out=tmp / "run"
        ),
    ),
    "train_together": (
        lambda: dp.train_together,
        lambda tmp: dict(
            configs=[TrainConfig(model="simplecnn1d", dataset="scale-detection")],
            outs=[tmp / "run"],
        ),
    ),
    "reproduce": (
        lambda: dp.reproduce,
        lambda tmp: dict(preset="tiny", out=tmp / "out", train=False),
    ),
}

# The hostile values of each kind of parameter: (label, value or a factory of it).
FLOAT = [
    ("type", "abc"),
    ("none", None),
    ("nan", NAN),
    ("inf", INF),
    ("-inf", -INF),
    ("negative", -1.0),
    ("huge", 1e300),
]
COUNT = [("type", "abc"), ("float", 2.5), ("bool", True), ("zero", 0), ("negative", -1)]
SEED = [("type", "abc"), ("float", 2.5), ("negative", -1), ("huge", 2**70)]
SIZE = [("type", "abc"), ("float", 2.5), ("zero", 0), ("negative", -1), ("empty", ())]
NAME = [("type", 3), ("empty", ""), ("unknown", "nope")]
FLAG = [("type", "yes")]
SIGNAL = [
    ("type", lambda: [[0.0]]),
    ("rank", lambda: images(8)),
    ("dtype", lambda: images(2, 1, 8, 8, dtype=torch.int64)),
    ("empty", lambda: images(0, 1, 8, 8)),
    ("nan", lambda: images(2, 1, 8, 8, fill=NAN)),
    ("inf", lambda: images(2, 1, 8, 8, fill=INF)),
]
MODEL = [("type", "simplecnn"), ("none", None)]
GENERATOR = [("type", 3)]
DEVICE = [("type", 3), ("unknown", "nope")]
BAD: dict[str, list[tuple[str, Any]]] = {
    "float": FLOAT,
    "count": COUNT,
    "seed": SEED,
    "size": SIZE,
    "name": NAME,
    "flag": FLAG,
    "signal": SIGNAL,
    "model": MODEL,
    "generator": GENERATOR,
    "device": DEVICE,
    "only": [],  # just the parameter's own extra values
}

# (function, parameter, kind, extra hostile values of that parameter only)
PARAMETERS: list[tuple[str, str, str, list[tuple[str, Any]]]] = [
    ("temperature_for", "delta", "float", []),
    ("temperature_for", "size", "size", []),
    ("temperature_for", "cut", "count", [("huge", 10**30)]),
    ("typical_displacement", "temperature", "float", []),
    ("typical_displacement", "size", "size", []),
    ("typical_displacement", "cut", "count", []),
    ("temperature_range", "size", "size", []),
    ("temperature_range", "cut", "count", []),
    ("sample_displacement", "batch", "count", []),
    ("sample_displacement", "size", "size", []),
    ("sample_displacement", "temperature", "float", []),
    ("sample_displacement", "cut", "count", []),
    ("sample_displacement", "generator", "generator", []),
    ("sample_displacement", "device", "device", []),
    ("sample_displacement", "dtype", "flag", [("integer", torch.int64)]),
    ("deform", "x", "signal", []),
    ("deform", "temperature", "float", []),
    ("deform", "cut", "count", []),
    ("deform", "interp", "name", []),
    ("deform", "generator", "generator", []),
    ("remap", "x", "signal", []),
    (
        "remap",
        "displacement",
        "signal",
        [("shape", lambda: torch.zeros(2, 2, 4, 4)), ("channels", lambda: torch.zeros(2, 1, 8, 8))],
    ),
    ("remap", "interp", "name", []),
    ("matched_noise", "x", "signal", []),
    ("matched_noise", "xt", "signal", [("shape", lambda: images(2, 1, 4, 4))]),
    ("matched_noise", "generator", "generator", []),
    ("matched_noise", "rectified", "flag", []),
    ("pixel_shift", "x", "signal", []),
    ("pixel_shift", "block", "count", [("huge", 10**6)]),
    ("pixel_shift", "generator", "generator", []),
    ("measure", "model", "model", []),
    ("measure", "data", "signal", []),
    ("measure", "delta", "float", []),
    ("measure", "temperature", "float", []),
    ("measure", "cut", "count", []),
    ("measure", "interp", "name", []),
    ("measure", "diffeo", "name", []),
    ("measure", "noise", "name", []),
    ("measure", "layers", "flag", [("unknown", ["nope"]), ("empty", [])]),
    ("measure", "batch_size", "count", []),
    ("measure", "draws", "count", []),
    ("measure", "channel_mean", "flag", []),
    ("measure", "probe_size", "count", []),
    ("measure", "capture", "name", []),
    ("measure", "device", "device", []),
    ("measure", "seed", "seed", []),
    ("models.build", "name", "name", []),
    ("models.build", "in_channels", "count", []),
    ("models.build", "num_classes", "count", []),
    ("models.build", "input_size", "count", []),
    ("models.build", "depth", "count", []),
    ("models.build", "width", "count", []),
    ("models.build", "activation", "name", []),
    ("models.build", "bogus_option", "flag", []),
    ("data.build", "name", "name", []),
    ("data.build", "split", "name", []),
    ("data.build", "seed", "seed", []),
    ("data.build", "noise_norm", "float", []),
    ("data.build", "noise_mode", "name", []),
    ("data.build", "data_dir", "flag", [("missing", "/nonexistent/dir")]),
    ("data.build", "d", "count", []),
    ("data.build", "xi", "count", []),
    ("data.build", "test_size", "count", []),
    ("data.build", "bogus_option", "flag", []),
    ("theory.exact_sensitivities", "dim", "count", [("three", 3)]),
    ("theory.exact_sensitivities", "depth", "count", []),
    ("theory.exact_sensitivities", "filter_size", "count", []),
    ("theory.exact_sensitivities", "stride", "count", []),
    ("theory.exact_sensitivities", "activation", "name", []),
    ("theory.exact_sensitivities", "probe", "name", []),
    ("theory.exact_sensitivities", "noise", "name", []),
    ("theory.exact_sensitivities", "noise_scale", "float", []),
    ("theory.exact_sensitivities", "value", "float", []),
    ("theory.exact_sensitivities", "seed", "seed", []),
    ("theory.exact_sensitivities", "draws", "count", []),
    ("theory.idealized_net", "dim", "count", [("three", 3)]),
    ("theory.idealized_net", "depth", "count", []),
    ("theory.idealized_net", "filter_size", "count", []),
    ("theory.idealized_net", "stride", "count", []),
    ("theory.idealized_net", "activation", "name", []),
    ("theory.idealized_net", "channels", "count", []),
    ("theory.power_laws", "dim", "count", [("three", 3)]),
    ("theory.power_laws", "stride", "count", []),
    ("theory.power_laws", "filter_size", "count", []),
    ("theory.power_laws", "activation", "name", []),
    ("theory.receptive_field", "depth", "count", []),
    ("theory.receptive_field", "filter_size", "count", []),
    ("theory.receptive_field", "stride", "count", []),
    ("theory.theory_table", "depth", "count", []),
    ("theory.theory_table", "activation", "name", []),
    (
        "theory.fit_exponent",
        "k",
        "flag",
        [("empty", []), ("nan", [1.0, NAN, 4.0, 8.0]), ("length", [1.0, 2.0])],
    ),
    ("theory.fit_exponent", "values", "flag", [("empty", []), ("inf", [1.0, INF, 0.25, 0.1])]),
    ("theory.fit_exponent", "kind", "name", []),
    ("probes.filter_spectrum", "model", "model", []),
    ("probes.channel_shuffle", "model", "model", []),
    ("probes.channel_shuffle", "generator", "generator", []),
    ("probes.laplacian_eigenbasis", "shape", "size", []),
    ("probes.shuffled_sensitivities", "model", "model", []),
    ("probes.shuffled_sensitivities", "permutations", "count", []),
    ("probes.shuffled_sensitivities", "seed", "seed", []),
    ("probes.pooling_shares", "original", "model", [("empty", lambda: pd.DataFrame())]),
    ("sweep.expand_grid", "data", "flag", [("list", [1, 2]), ("unknown", {"nope": 1})]),
    ("sweep.expand_grid", "only", "flag", [("unknown", ["nope"])]),
    ("sweep.load_grid", "path", "flag", [("missing", "/nonexistent/grid.yaml")]),
    ("sweep.results.query", "root", "flag", [("missing", "/nonexistent/sweep")]),
    ("sweep.results.query", "where", "flag", [("syntax", "layer = = 1")]),
    ("sweep.results.query", "sql", "flag", [("syntax", "SELEC 1")]),
    ("sweep.results.query", "view", "name", []),
    ("train", "config", "model", [("dict", {"lr": 0.1})]),
    ("train", "measure", "flag", []),
    ("train_together", "configs", "model", [("empty", [])]),
    ("train_together", "outs", "model", [("length", ["a", "b"])]),
    ("reproduce", "preset", "name", []),
    ("reproduce", "only", "flag", [("unknown", ["nope"])]),
    ("reproduce", "executor", "only", [("unknown", "nope")]),  # ~3 s a case: two cases
    ("reproduce", "workers", "only", [("zero", 0)]),
]

# Other words a message may use for the parameter (the CLI's name of it, what it is).
ALIASES: dict[tuple[str, str], tuple[str, ...]] = {
    ("models.build", "name"): ("model",),
    ("data.build", "name"): ("dataset",),
    ("measure", "data"): ("probe",),
    ("sweep.expand_grid", "data"): ("grid",),
    ("sweep.load_grid", "path"): ("grid file",),
    ("sweep.results.query", "root"): ("not a directory",),
}
# Values that look hostile but are legitimate: the call may also succeed.
MAY_WORK = {
    "temperature_for-cut-huge",  # a formula: T for 10**30 modes is a tiny finite number
    "measure-temperature-none",  # the default: delta sets T
    "measure-seed-huge",  # numpy's SeedSequence takes any integer >= 0
    "probes.shuffled_sensitivities-seed-huge",
    "theory.exact_sensitivities-seed-huge",
    "theory.exact_sensitivities-probe-type",  # probe takes an int (an image index)
    "theory.receptive_field-depth-zero",  # the input itself: one pixel
    "pixel_shift-block-huge",  # a block past the signal constrains nothing, as block=None
}
# Cases that break the promise today (case id -> what happens); each is a strict xfail.
KNOWN: dict[str, str] = {}


def _cases() -> list[Any]:
    out = []
    for function, parameter, kind, extra in PARAMETERS:
        for label, value in [*BAD[kind], *extra]:
            case_id = f"{function}-{parameter}-{label}"
            out.append(
                pytest.param(
                    function,
                    parameter,
                    value,
                    case_id in MAY_WORK,
                    id=case_id,
                    marks=xfail_if(KNOWN, case_id),
                )
            )
    return out


def _setup(tmp_path: Path, function: str) -> None:
    """Files a valid call reads: a grid file, a sweep directory with no run."""
    (tmp_path / "grid.yaml").write_text("train:\n  dataset: scale-detection\n")
    fake_sweep(tmp_path / "sweep")


@pytest.mark.parametrize(("function", "parameter", "value", "may_work"), _cases())
def test_a_hostile_value_is_one_error_naming_the_parameter(
    tmp_path: Path, function: str, parameter: str, value: Any, may_work: bool
) -> None:
    _setup(tmp_path, function)
    get, base = CALLS[function]
    kwargs = base(tmp_path)
    kwargs[parameter] = value() if callable(value) else value
    names = (parameter, parameter.replace("_", "-"), *ALIASES.get((function, parameter), ()))
    if not may_work:
        assert_api_refuses(lambda: get()(**kwargs), names)
        return
    try:
        with time_limit():
            get()(**kwargs)
    except DiffeoProbeError as exc:
        assert_one_line(str(exc), names)


@pytest.mark.parametrize("function", sorted(CALLS))
def test_the_valid_call_of_each_table_row_works(tmp_path: Path, function: str) -> None:
    """The base calls are valid, so a refusal above is the hostile value's doing."""
    if function in ("train", "train_together", "reproduce", "probes.shuffled_sensitivities"):
        pytest.skip("trains or measures for seconds: covered by tests/test_*.py")
    _setup(tmp_path, function)
    get, base = CALLS[function]
    with time_limit():
        get()(**base(tmp_path))


# Every field of the two configs (what dp.train, the CLI and grid files check with validate).
FIELD_BAD = {
    int: [("type", "abc"), ("float", 2.5), ("negative", -1)],
    float: [("type", "abc"), ("nan", NAN), ("inf", INF), ("negative", -1.0)],
    str: [("type", 3), ("unknown", "nope")],
    bool: [("type", "yes")],
    dict: [("type", [1])],
}
FIELD_OK = {  # values a field accepts although they look hostile
    ("TrainConfig", "model", "unknown"),  # checked by check_options against the registry
    ("TrainConfig", "dataset", "unknown"),
    ("TrainConfig", "data_dir", "unknown"),
    ("TrainConfig", "weight_decay", "negative"),
}
KNOWN_FIELDS: dict[str, str] = {}


def _field_cases() -> list[Any]:
    import typing

    out = []
    for cls in (MeasureConfig, TrainConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            base = next(
                (t for t in (bool, int, float, str, dict) if t in typing.get_args(hint)), hint
            )
            base = dict if typing.get_origin(hint) is dict else base
            for label, value in FIELD_BAD.get(base, []):
                if (cls.__name__, f.name, label) in FIELD_OK:
                    continue
                case_id = f"{cls.__name__}.{f.name}-{label}"
                out.append(
                    pytest.param(
                        cls, f.name, value, id=case_id, marks=xfail_if(KNOWN_FIELDS, case_id)
                    )
                )
    return out


@pytest.mark.parametrize(("cls", "field", "value"), _field_cases())
def test_a_hostile_config_field_is_one_error_naming_it(cls: type, field: str, value: Any) -> None:
    assert_api_refuses(lambda: validate(cls(**{field: value})), (field,))


# Property-based: any float, int or text for the scalar parameters of the perturbation helpers
# either gives a finite answer or one DiffeoProbeError naming the parameter.
HOSTILE_SCALARS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
)
SCALAR_CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("temperature_for", "delta", dict(size=16, cut=3)),
    ("temperature_for", "cut", dict(delta=1.0, size=16)),
    ("typical_displacement", "temperature", dict(size=16, cut=3)),
    ("typical_displacement", "cut", dict(temperature=1e-3, size=16)),
    ("temperature_range", "cut", dict(size=16)),
    ("deform", "temperature", dict(cut=3)),
]
KNOWN_SCALARS: dict[str, str] = {}


@pytest.mark.parametrize(
    ("function", "parameter", "others"),
    [
        pytest.param(f, p, o, id=f"{f}-{p}", marks=xfail_if(KNOWN_SCALARS, f"{f}-{p}"))
        for f, p, o in SCALAR_CALLS
    ],
)
@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=HOSTILE_SCALARS)
def test_any_scalar_gives_a_finite_answer_or_one_error(
    function: str, parameter: str, others: dict[str, Any], value: Any
) -> None:
    kwargs = {**others, parameter: value}
    if function == "deform":
        kwargs["x"] = images(1, 1, 8, 8)
    call = getattr(dp, function)
    try:
        with time_limit():
            result = call(**kwargs)
    except DiffeoProbeError as exc:
        assert_one_line(str(exc), (parameter,))
        return
    values = result if isinstance(result, tuple) else (result,)
    for v in values:
        finite = bool(torch.isfinite(v).all()) if isinstance(v, torch.Tensor) else math.isfinite(v)
        assert finite, f"{function}({kwargs}) = {result}: not finite and not refused"


# Property-based: any rank, shape (empty sides included) and dtype for the image arguments.
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.bool]
HOSTILE_TENSORS = st.builds(
    lambda shape, dtype: torch.zeros(shape, dtype=dtype),
    st.lists(st.integers(min_value=0, max_value=5), min_size=0, max_size=5),
    st.sampled_from(DTYPES),
)


def _zero_field(x: torch.Tensor) -> torch.Tensor:
    """A zero displacement that fits ``x`` when ``x`` is a batch of signals or images."""
    if x.dim() in (3, 4):
        return torch.zeros(x.shape[0], x.dim() - 2, *x.shape[2:])
    return torch.zeros(1, 1, 4)


TENSOR_CALLS: dict[str, Callable[[torch.Tensor], object]] = {
    "deform": lambda x: dp.deform(x, temperature=1e-3, cut=2),
    "deform-gaussian": lambda x: dp.deform(x, temperature=1e-3, cut=2, interp="gaussian"),
    "remap": lambda x: dp.remap(x, _zero_field(x)),
    "matched_noise": lambda x: dp.matched_noise(x, x),
    "pixel_shift": lambda x: dp.pixel_shift(x),
}
KNOWN_TENSORS: dict[str, str] = {}


@pytest.mark.parametrize(
    "function",
    [pytest.param(f, id=f, marks=xfail_if(KNOWN_TENSORS, f)) for f in TENSOR_CALLS],
)
@settings(max_examples=40, derandomize=True, database=None, deadline=None)
@given(x=HOSTILE_TENSORS)
def test_any_tensor_gives_a_result_of_its_shape_or_one_error(
    function: str, x: torch.Tensor
) -> None:
    try:
        with time_limit():
            out = TENSOR_CALLS[function](x)
    except DiffeoProbeError as exc:
        assert_one_line(str(exc), ("x", "displacement"))
        return
    assert isinstance(out, torch.Tensor) and out.shape == x.shape and out.dtype == x.dtype
