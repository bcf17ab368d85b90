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
