"""Layer-wise measurement: capture every layer in one forward pass, stream float64 sums."""

from diffeoprobe.measurement.capture import CAPTURE_MODES, plan_capture, run_captured
from diffeoprobe.measurement.core import measure
from diffeoprobe.measurement.fit import check_model_fits
from diffeoprobe.measurement.stats import Sensitivity, SensitivitySums

__all__ = [
    "CAPTURE_MODES",
    "Sensitivity",
    "SensitivitySums",
    "check_model_fits",
    "measure",
    "plan_capture",
    "run_captured",
]
