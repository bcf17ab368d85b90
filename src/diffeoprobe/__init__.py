"""diffeoprobe: how sensitive is each layer of a network to smooth deformations versus noise.

>>> import torch, diffeoprobe as dp
>>> x = torch.rand(8, 3, 32, 32)
>>> xt = dp.deform(x, temperature=dp.temperature_for(delta=1.0, size=32, cut=3), cut=3)
>>> eta = dp.matched_noise(x, xt)
>>> xt.shape == eta.shape == x.shape
True
"""

__version__ = "0.1.0"

import sys
import types
from typing import TYPE_CHECKING

from diffeoprobe.errors import DiffeoProbeError

# The public functions load on first use (PEP 562), so that `import diffeoprobe` and the command
# line's start do not import torch until a command needs it (the sweep command starts its worker
# processes first, see diffeoprobe.processes).
_LAZY = {
    "measure": "diffeoprobe.measure",
    "deform": "diffeoprobe.perturb",
    "matched_noise": "diffeoprobe.perturb",
    "pixel_shift": "diffeoprobe.perturb",
    "remap": "diffeoprobe.perturb",
    "sample_displacement": "diffeoprobe.perturb",
    "temperature_for": "diffeoprobe.perturb",
    "temperature_range": "diffeoprobe.perturb",
    "typical_displacement": "diffeoprobe.perturb",
}

if TYPE_CHECKING:
    from diffeoprobe.measure import measure
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


class _Package(types.ModuleType):
    """The package's module type: ``diffeoprobe.measure`` stays the function when the import
    system binds the subpackage of the same name (as the eager ``from ... import`` did)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'diffeoprobe' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DiffeoProbeError",
    "__version__",
    "deform",
    "matched_noise",
    "measure",
    "pixel_shift",
    "remap",
    "sample_displacement",
    "temperature_for",
    "temperature_range",
    "typical_displacement",
]
