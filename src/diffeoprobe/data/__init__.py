"""Data sets: real image files (idx) and the synthetic scale-detection tasks, by name."""

from .idx import load_idx_dataset, read_idx
from .registry import DATASETS, available_datasets, build_dataset
from .scale_detection import scale_detection

__all__ = [
    "DATASETS",
    "available_datasets",
    "build_dataset",
    "load_idx_dataset",
    "read_idx",
    "scale_detection",
]
