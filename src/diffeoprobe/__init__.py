"""diffeoprobe: how sensitive is each layer of a network to smooth deformations versus noise.

>>> import torch, diffeoprobe as dp
>>> x = torch.rand(8, 3, 32, 32)
>>> xt = dp.deform(x, temperature=dp.temperature_for(delta=1.0, size=32, cut=3), cut=3)
>>> eta = dp.matched_noise(x, xt)
>>> xt.shape == eta.shape == x.shape
True
"""

__version__ = "0.1.0"

from diffeoprobe.errors import DiffeoProbeError
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
