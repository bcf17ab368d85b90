"""Frozen dataclasses: the one place that holds every default (with its unit).

The CLI's ``train`` options and (later) grid files are derived from these fields, never
re-declared. :func:`from_dict` builds a config from plain values (a YAML file, ``KEY=VALUE`` pairs)
and refuses unknown keys with the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from diffeoprobe.errors import DiffeoProbeError

C = TypeVar("C")


@dataclass(frozen=True)
class MeasureConfig:
    """Settings of the layer-wise measurement (science.md section 4)."""

    probe_size: int = 500  # P, test images used as probes
    delta: float = 1.0  # typical diffeo displacement, pixels (ignored if temperature is set)
    temperature: float | None = None  # ensemble temperature T, overrides delta
    cut: int = 3  # ensemble frequency cut-off c
    interp: str = "bilinear"  # bilinear | nearest | gaussian
    diffeo: str = "auto"  # max-entropy | pixel-shift | auto (pixel-shift on scale-detection)
    noise: str = "matched"  # matched | rectified
    draws: int = 1  # diffeo/noise draws per probe image
    channel_mean: bool = False  # average representations over channels first
    batch_size: int = 256  # images per forward pass, all copies counted


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, model, optimiser, schedule, checkpoints (science.md sections 6, 8)."""

    model: str = "simplecnn"  # zoo name or module.path:factory
    model_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"depth": 6}
    dataset: str = "fashionmnist"
    dataset_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"xi": 14, "noise_norm": 1.0}
    data_dir: str | None = None
    train_size: int | None = None  # P: use this many training points (a seeded subset); None = all
    test_size: int | None = None  # evaluate on this many test points; None = all
    epochs: int = 10  # upper bound on the number of passes over the training set
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.1
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine (to zero at the last step) | constant
    loss: str = "cross-entropy"  # cross-entropy | hinge
    alpha: float = 1.0  # output scale: logits = alpha * f(x), loss / alpha^2 (feature vs lazy)
    stop_at_zero_error: bool = False  # stop after the first epoch with zero training error
    augment: bool = False  # random crop (padding 4) + horizontal flip, 2D only
    checkpoints: int = 10  # log-spaced checkpoints between step 1 and the end (plus init)
    measure: bool = False  # run the layer-wise measurement at every checkpoint
    seed: int = 0  # initialisation, data order, augmentation, subset and measurement draws
    device: str = "cpu"
    compile: bool = False  # torch.compile the model
    channels_last: bool = False  # channels-last memory format (2D)


def from_dict(cls: type[C], values: dict[str, Any], *, where: str = "") -> C:
    """``cls(**values)`` with unknown keys refused (naming the closest valid key)."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
            raise DiffeoProbeError(f"{where}{key}: unknown setting{hint}")
    return cls(**values)


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type annotation of every field of a config dataclass."""
    return typing.get_type_hints(cls)


def to_dict(config: object) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)
