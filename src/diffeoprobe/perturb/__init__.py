"""Perturbations of inputs: max-entropy diffeomorphisms, matched noise, pixel shifts."""

from diffeoprobe.perturb.diffeo import (
    deform,
    remap,
    sample_displacement,
    temperature_for,
    temperature_range,
    typical_displacement,
)
from diffeoprobe.perturb.noise import matched_noise
from diffeoprobe.perturb.shifts import pixel_shift

__all__ = [
    "deform",
    "matched_noise",
    "pixel_shift",
    "remap",
    "sample_displacement",
    "temperature_for",
    "temperature_range",
    "typical_displacement",
]
