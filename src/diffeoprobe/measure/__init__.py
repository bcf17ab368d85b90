"""Layer-wise measurement: capture every layer in one forward pass, stream float64 sums."""

from diffeoprobe.measure.capture import CAPTURE_MODES, plan_capture, run_captured
from diffeoprobe.measure.core import measure
from diffeoprobe.measure.stats import Sensitivity, SensitivitySums

__all__ = [
    "CAPTURE_MODES",
    "Sensitivity",
    "SensitivitySums",
    "measure",
    "plan_capture",
    "run_captured",
]
