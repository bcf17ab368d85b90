"""The configs' one home of rules: validation, coercion, option checks, and the public entry points."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from diffeoprobe.config import (
    MeasureConfig,
    TrainConfig,
    check_options,
    coerce,
    measure_arguments,
    validate,
)
from diffeoprobe.errors import DiffeoProbeError

BAD_MEASURE = [
    ("probe_size", 1, "probe_size"),
    ("delta", -1.0, "delta"),
    ("temperature", -0.5, "temperature"),
    ("cut", 0, "cut"),
    ("interp", "cubic", "interp"),
    ("diffeo", "warp", "diffeo"),
    ("noise", "pink", "noise"),
    ("draws", 0, "draws"),
    ("batch_size", 0, "batch_size"),
    ("channel_mean", "yes", "channel_mean"),
]
BAD_TRAIN = [
    ("model", "resnet5", "unknown model"),
    ("dataset", "imagenet", "unknown dataset"),
    ("epochs", 0, "epochs"),
    ("batch_size", 0, "batch_size"),
    ("checkpoints", -1, "checkpoints"),
    ("seed", -1, "seed"),
    ("train_size", 0, "train_size"),
    ("lr", 0.0, "lr"),
    ("momentum", -0.1, "momentum"),
    ("weight_decay", -1.0, "weight_decay"),
    ("alpha", 0.0, "alpha"),
    ("optimizer", "rmsprop", "optimizer"),
    ("schedule", "step", "schedule"),
    ("loss", "mse", "loss"),
    ("augment", 1, "augment"),
    ("device", "tpu:x", "device"),
]


@pytest.mark.parametrize(("field", "value", "named"), BAD_MEASURE)
def test_every_measure_field_is_checked_by_name(field: str, value: object, named: str) -> None:
    with pytest.raises(DiffeoProbeError, match=named):
        validate(dataclasses.replace(MeasureConfig(), **{field: value}))


@pytest.mark.parametrize(("field", "value", "named"), BAD_TRAIN)
def test_every_train_field_is_checked_by_name(field: str, value: object, named: str) -> None:
    with pytest.raises(DiffeoProbeError, match=named):
        validate(dataclasses.replace(TrainConfig(), **{field: value}))


def test_flags_name_the_command_line_option() -> None:
    with pytest.raises(DiffeoProbeError, match="--probe-size"):
        validate(MeasureConfig(probe_size=1), flags=True)
    assert validate(MeasureConfig()) == MeasureConfig()  # valid: returned as it is


def test_coerce_takes_the_fields_type_and_refuses_others() -> None:
    assert coerce(2, float, "lr") == 2.0 and isinstance(coerce(2, float, "lr"), float)
    assert coerce(None, int | None, "seed") is None
    for value, hint in [(True, int), ("1", int), (1, bool), (1, str), ([1], dict[str, int])]:
        with pytest.raises(DiffeoProbeError, match="^where: expected"):
            coerce(value, hint, "where")


def test_options_are_checked_against_the_factories() -> None:
    check_options(TrainConfig(model="simplecnn", model_options={"depth": 3}))
    with pytest.raises(DiffeoProbeError, match="model_options.dept: .*did you mean 'depth'"):
        check_options(TrainConfig(model_options={"dept": 3}))
    with pytest.raises(DiffeoProbeError, match="dataset_options.xii: .*did you mean 'xi'"):
        check_options(TrainConfig(dataset="scale-detection", dataset_options={"xii": 3}))
    check_options(TrainConfig(dataset="scale-detection", dataset_options={"noise_norm": 1.0}))


def test_measure_arguments_pick_the_datasets_diffeo() -> None:
    config = MeasureConfig(cut=5, draws=2)
    images = measure_arguments(config, dataset="fashionmnist", dataset_options={})
    signals = measure_arguments(config, dataset="scale-detection", dataset_options={})
    assert images["diffeo"] == "max-entropy" and images["cut"] == 5 and images["draws"] == 2
    assert signals["diffeo"] != "max-entropy"


def test_public_entry_points_are_reachable_from_the_package() -> None:
    code = (
        "import sys, diffeoprobe as dp\n"
        "assert 'torch' not in sys.modules\n"
        "assert 'lenet' in dp.models.available() and 'fashionmnist' in dp.data.available()\n"
        "net = dp.models.build('lenet', in_channels=1, num_classes=10, input_size=28)\n"
        "assert type(net).__name__ == 'LeNet'\n"
        "assert callable(dp.train) and dp.train.__module__ == 'diffeoprobe.training'\n"
        "assert callable(dp.measure) and callable(dp.train_together)\n"
        "assert dp.TrainConfig().model == 'simplecnn' and callable(dp.sweep.run_sweep)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_no_module_shares_its_name_with_a_public_function() -> None:
    """``dp.measure`` and ``dp.train`` are functions: no submodule may be called like them."""
    import pkgutil

    import diffeoprobe

    modules = {m.name for m in pkgutil.iter_modules(diffeoprobe.__path__)}
    functions = {name for name, (_, attribute) in diffeoprobe._LAZY.items() if attribute}
    assert not modules & functions, modules & functions
    assert {"measurement", "training"} <= modules
