"""diffeoprobe: how sensitive is each layer of a network to smooth deformations versus noise.

>>> import torch, diffeoprobe as dp
>>> x = torch.rand(8, 3, 32, 32)
>>> xt = dp.deform(x, temperature=dp.temperature_for(delta=1.0, size=32, cut=3), cut=3)
>>> eta = dp.matched_noise(x, xt)
>>> xt.shape == eta.shape == x.shape
True
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from diffeoprobe.errors import DiffeoProbeError

# The public names load on first use (PEP 562), so that `import diffeoprobe` and the command
# line's start do not import torch until a command needs it (the sweep command starts its worker
# processes first, see diffeoprobe.processes). name -> (module, attribute; None: the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    # the measurement and its perturbations
    "measure": ("diffeoprobe.measurement", "measure"),
    "deform": ("diffeoprobe.perturb", "deform"),
    "matched_noise": ("diffeoprobe.perturb", "matched_noise"),
    "pixel_shift": ("diffeoprobe.perturb", "pixel_shift"),
    "remap": ("diffeoprobe.perturb", "remap"),
    "sample_displacement": ("diffeoprobe.perturb", "sample_displacement"),
    "temperature_for": ("diffeoprobe.perturb", "temperature_for"),
    "temperature_range": ("diffeoprobe.perturb", "temperature_range"),
    "typical_displacement": ("diffeoprobe.perturb", "typical_displacement"),
    # models, data, configs, training
    "models": ("diffeoprobe.models", None),
    "data": ("diffeoprobe.data", None),
    "MeasureConfig": ("diffeoprobe.config", "MeasureConfig"),
    "TrainConfig": ("diffeoprobe.config", "TrainConfig"),
    "train": ("diffeoprobe.training", "train"),
    "train_together": ("diffeoprobe.ensemble", "train_together"),
    # the probes of pooling and the theory of idealised nets
    "probes": ("diffeoprobe.probes", None),
    "theory": ("diffeoprobe.theory", None),
    # sweeps and the papers' experiments
    "sweep": ("diffeoprobe.sweep", None),
    "reproduce": ("diffeoprobe.experiments", "reproduce"),
}

if TYPE_CHECKING:
    from diffeoprobe import data, models, probes, sweep, theory
    from diffeoprobe.config import MeasureConfig, TrainConfig
    from diffeoprobe.ensemble import train_together
    from diffeoprobe.experiments import reproduce
    from diffeoprobe.measurement import measure
    from diffeoprobe.perturb import (
        deform,
        matched_noise,
        pixel_shift,
        remap,
        sample_displacement,
        temperature_for,
        temperature_range,
        typical_displacement,
    )
    from diffeoprobe.training import train


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'diffeoprobe' has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DiffeoProbeError",
    "MeasureConfig",
    "TrainConfig",
    "__version__",
    "data",
    "deform",
    "matched_noise",
    "measure",
    "models",
    "pixel_shift",
    "probes",
    "remap",
    "reproduce",
    "sample_displacement",
    "sweep",
    "temperature_for",
    "temperature_range",
    "theory",
    "train",
    "train_together",
    "typical_displacement",
]
