"""Frozen dataclasses: the one place that holds every default (with its unit) and every rule.

The CLI's options, grid files and presets are derived from these fields, never re-declared.
:func:`from_dict` builds a config from plain values (a YAML file, ``KEY=VALUE`` pairs) and refuses
unknown keys with the closest valid one; :func:`coerce` turns a plain value into a field's type;
:func:`validate` checks every field (one error naming the field) and :func:`check_options` the
model's and data set's options against their factories. Every entry point (the API's ``train``,
the CLI, grid files, presets) calls these. Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from diffeoprobe.errors import DiffeoProbeError

__all__ = [
    "DIFFEOS",
    "INTERPOLATIONS",
    "LOSSES",
    "NOISES",
    "OPTIMIZERS",
    "SCHEDULES",
    "MeasureConfig",
    "TrainConfig",
    "check_options",
    "coerce",
    "field_types",
    "from_dict",
    "measure_arguments",
    "to_dict",
    "validate",
]

C = TypeVar("C")

DIFFEOS = ("max-entropy", "pixel-shift")  # the measurement's diffeo (or "auto")
NOISES = ("matched", "rectified")  # its noise
INTERPOLATIONS = ("bilinear", "nearest", "gaussian")  # how a deformed image is resampled
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
LOSSES = ("cross-entropy", "hinge")
MAX_LR = 1e30  # float32 holds up to 3.4e38: torch's optimisers cannot take a larger lr
MAX_ALPHA = 1e15  # the output scale: alpha^2 divides the loss and must fit a float32


@dataclass(frozen=True)
class MeasureConfig:
    """Settings of the layer-wise measurement (docs/science.md section 4)."""

    probe_size: int = field(default=500, metadata={"help": "P, test images used as probes"})
    delta: float = field(
        default=1.0,
        metadata={"help": "typical diffeo displacement, pixels (ignored if temperature is set)"},
    )
    temperature: float | None = field(
        default=None, metadata={"help": "ensemble temperature T, overrides delta"}
    )
    cut: int = field(default=3, metadata={"help": "ensemble frequency cut-off c"})
    interp: str = field(default="bilinear", metadata={"help": "bilinear | nearest | gaussian"})
    diffeo: str = field(
        default="auto",
        metadata={"help": "max-entropy | pixel-shift | auto (pixel-shift on scale-detection)"},
    )
    noise: str = field(default="matched", metadata={"help": "matched | rectified"})
    draws: int = field(default=1, metadata={"help": "diffeo/noise draws per probe image"})
    channel_mean: bool = field(
        default=False, metadata={"help": "average representations over channels first"}
    )
    batch_size: int = field(
        default=256, metadata={"help": "images per forward pass, all copies counted"}
    )


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, model, optimiser, schedule, checkpoints (docs/science.md sections 6, 8)."""

    model: str = field(default="simplecnn", metadata={"help": "zoo name or module.path:factory"})
    model_options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": 'e.g. {"depth": 6}', "short": "-m"}
    )
    dataset: str = "fashionmnist"
    dataset_options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": 'e.g. {"xi": 14, "noise_norm": 1.0}', "short": "-d"}
    )
    data_dir: str | None = None
    train_size: int | None = field(
        default=None,
        metadata={"help": "P: use this many training points (a seeded subset); None = all"},
    )
    test_size: int | None = field(
        default=None, metadata={"help": "evaluate on this many test points; None = all"}
    )
    epochs: int = field(
        default=10, metadata={"help": "upper bound on the number of passes over the training set"}
    )
    batch_size: int = 128
    optimizer: str = field(default="sgd", metadata={"help": "sgd | adam"})
    lr: float = 0.1
    momentum: float = field(default=0.9, metadata={"help": "SGD only"})
    weight_decay: float = 5e-4
    schedule: str = field(
        default="cosine", metadata={"help": "cosine (to zero at the last step) | constant"}
    )
    loss: str = field(default="cross-entropy", metadata={"help": "cross-entropy | hinge"})
    alpha: float = field(
        default=1.0,
        metadata={"help": "output scale: logits = alpha * f(x), loss / alpha^2 (feature vs lazy)"},
    )
    stop_at_zero_error: bool = field(
        default=False, metadata={"help": "stop after the first epoch with zero training error"}
    )
    augment: bool = field(
        default=False, metadata={"help": "random crop (padding 4) + horizontal flip, 2D only"}
    )
    checkpoints: int = field(
        default=10,
        metadata={"help": "log-spaced checkpoints between step 1 and the end (plus init)"},
    )
    measure: bool = field(
        default=False, metadata={"help": "run the layer-wise measurement at every checkpoint"}
    )
    seed: int = field(
        default=0,
        metadata={"help": "initialisation, data order, augmentation, subset and measurement draws"},
    )
    device: str = "cpu"
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    channels_last: bool = field(
        default=False, metadata={"help": "channels-last memory format (2D)"}
    )


def from_dict(cls: type[C], values: dict[str, Any], *, where: str = "") -> C:
    """``cls(**values)`` with unknown keys refused (naming the closest valid key)."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]  # C: a dataclass
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
            raise DiffeoProbeError(f"{where}{key}: unknown setting{hint}")
    return cls(**values)


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type annotation of every field of a config dataclass."""
    return typing.get_type_hints(cls)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)


def coerce(value: object, hint: object, where: str) -> object:
    """``value`` as a field of type ``hint`` (an int where a float is wanted becomes a float).

    Raises a :class:`DiffeoProbeError` starting with ``where`` for a value of another type.

    >>> coerce(1, float, "lr")
    1.0
    >>> coerce("x", int | None, "seed")
    Traceback (most recent call last):
    ...
    diffeoprobe.errors.DiffeoProbeError: seed: expected an integer or null, got 'x'
    """
    optional = ""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        optional = " or null"
    if typing.get_origin(hint) is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise DiffeoProbeError(f"{where}: expected a mapping KEY: VALUE{optional}, got {value!r}")
    is_int = isinstance(value, int) and not isinstance(value, bool)
    accepted: dict[object, tuple[bool, str]] = {
        bool: (isinstance(value, bool), "true or false"),
        int: (is_int, "an integer"),
        float: (is_int or isinstance(value, float), "a number"),
        str: (isinstance(value, str), "a string"),
    }
    if hint not in accepted:
        return value
    ok, expected = accepted[hint]
    if not ok:
        raise DiffeoProbeError(f"{where}: expected {expected}{optional}, got {value!r}")
    return float(value) if hint is float else value  # type: ignore[arg-type]


def validate(config: C, *, flags: bool = False) -> C:
    """Check every field of a :class:`MeasureConfig` or :class:`TrainConfig`, before any work.

    The one home of the configs' rules: ranges, choices, model and data set names, the device's
    spelling (whether CUDA is present is checked where the run starts). ``flags`` names fields as
    command-line options (``--probe-size``) instead of as fields (``probe_size``).

    >>> validate(MeasureConfig(cut=0))
    Traceback (most recent call last):
    ...
    diffeoprobe.errors.DiffeoProbeError: cut must be an integer >= 1, got 0
    """
    name: Callable[[str], str] = (lambda f: "--" + f.replace("_", "-")) if flags else (lambda f: f)
    if isinstance(config, MeasureConfig):
        _validate_measure(config, name)
    elif isinstance(config, TrainConfig):
        _validate_train(config, name)
    else:
        raise TypeError(f"validate takes a MeasureConfig or a TrainConfig, got {type(config)}")
    return config


def _validate_measure(config: MeasureConfig, name: Callable[[str], str]) -> None:
    from diffeoprobe.validate import (
        check_choice,
        check_cut,
        check_int,
        check_positive,
        check_temperature,
    )

    check_int(config.probe_size, name("probe_size"), minimum=2)
    check_positive(config.delta, name("delta"), allow_zero=True)
    if config.temperature is not None:
        check_temperature(config.temperature, name("temperature"))
    check_cut(config.cut, name("cut"))
    check_choice(config.interp, name("interp"), INTERPOLATIONS)
    check_choice(config.diffeo, name("diffeo"), ("auto", *DIFFEOS))
    check_choice(config.noise, name("noise"), NOISES)
    check_int(config.draws, name("draws"), minimum=1)
    check_int(config.batch_size, name("batch_size"), minimum=1)
    _check_bool(config.channel_mean, name("channel_mean"))


def _validate_train(config: TrainConfig, name: Callable[[str], str]) -> None:
    from diffeoprobe.validate import check_choice, check_int, check_positive, check_seed

    for mapping in ("model_options", "dataset_options"):
        value = getattr(config, mapping)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise DiffeoProbeError(f"{name(mapping)} must be a mapping KEY: VALUE, got {value!r}")
    if config.data_dir is not None and not isinstance(config.data_dir, str):
        raise DiffeoProbeError(
            f"{name('data_dir')} must be a path or null, got {config.data_dir!r}"
        )
    if ":" not in str(config.model):  # module.path:factory and timm:NAME are checked when built
        from diffeoprobe.models import MODELS

        MODELS.get(config.model)
    from diffeoprobe.data import DATASETS

    DATASETS.get(config.dataset)
    check_int(config.epochs, name("epochs"), minimum=1)
    check_int(config.batch_size, name("batch_size"), minimum=1)
    check_int(config.checkpoints, name("checkpoints"), minimum=0)
    check_seed(config.seed, name("seed"))
    for size in ("train_size", "test_size"):
        if getattr(config, size) is not None:
            check_int(getattr(config, size), name(size), minimum=1)
    check_positive(config.lr, name("lr"))
    check_positive(config.momentum, name("momentum"), allow_zero=True)
    check_positive(config.weight_decay, name("weight_decay"), allow_zero=True)
    check_positive(config.alpha, name("alpha"))
    for field_name, top in (("lr", MAX_LR), ("momentum", 1.0), ("alpha", MAX_ALPHA)):
        if getattr(config, field_name) > top:
            raise DiffeoProbeError(
                f"{name(field_name)} must be <= {top:g}, got {getattr(config, field_name)!r}"
            )
    check_choice(config.optimizer, name("optimizer"), OPTIMIZERS)
    check_choice(config.schedule, name("schedule"), SCHEDULES)
    check_choice(config.loss, name("loss"), LOSSES)
    for flag in ("stop_at_zero_error", "augment", "measure", "compile", "channels_last"):
        _check_bool(getattr(config, flag), name(flag))
    _check_device(config.device, name("device"))


def _check_bool(value: object, name: str) -> None:
    if not isinstance(value, bool):
        raise DiffeoProbeError(f"{name} must be true or false, got {value!r}")


def _check_device(value: object, name: str) -> None:
    import torch

    try:
        torch.device(str(value))
    except RuntimeError:
        raise DiffeoProbeError(f"{name} must be cpu, cuda or cuda:N, got {value!r}") from None


def check_options(config: TrainConfig) -> None:
    """The model's and the data set's options checked against their factories' signatures.

    A misspelt option names the closest accepted one and lists them all. Models given as
    ``module.path:factory`` or ``timm:NAME`` are checked when they are built.
    """
    from diffeoprobe.data import DATASETS, WRAPPER_OPTIONS
    from diffeoprobe.models import MODELS

    if ":" not in config.model:
        MODELS.check_options(config.model, config.model_options, where="model_options")
    DATASETS.check_options(
        config.dataset, config.dataset_options, where="dataset_options", extra=WRAPPER_OPTIONS
    )


def measure_arguments(
    measure: MeasureConfig, *, dataset: str, dataset_options: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments of :func:`diffeoprobe.measure` that ``measure`` sets, for probes of
    ``dataset``: ``diffeo="auto"`` becomes the data set's own (the pixel shift on
    scale-detection, kept inside Task 2's blocks; the max-entropy ensemble elsewhere).
    ``probe_size`` is left to the caller (who picks the probe images).
    """
    from diffeoprobe.perturb.shifts import task_diffeo

    return dict(
        delta=measure.delta,
        temperature=measure.temperature,
        cut=measure.cut,
        interp=measure.interp,
        diffeo=task_diffeo(measure.diffeo, dataset, dataset_options),
        noise=measure.noise,
        draws=measure.draws,
        channel_mean=measure.channel_mean,
        batch_size=measure.batch_size,
    )
