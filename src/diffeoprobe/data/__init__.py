"""Data sets by name (CIFAR-10, SVHN, MNIST, Fashion-MNIST, scale detection), their download, the
noisy-training wrapper and batched augmentation.
"""

from .cifar import load_cifar10
from .download import download
from .idx import load_idx_dataset, read_idx
from .noisy import NoisyDataset
from .registry import (
    DATASETS,
    SPLITS,
    WRAPPER_OPTIONS,
    available,
    build,
    default_data_dir,
    missing_files,
)
from .scale_detection import scale_detection
from .svhn import load_svhn
from .transforms import NORMALIZATION, augment, horizontal_flip, normalize, random_crop

__all__ = [
    "DATASETS",
    "NORMALIZATION",
    "SPLITS",
    "WRAPPER_OPTIONS",
    "NoisyDataset",
    "augment",
    "available",
    "build",
    "default_data_dir",
    "download",
    "horizontal_flip",
    "load_cifar10",
    "load_idx_dataset",
    "load_svhn",
    "missing_files",
    "normalize",
    "random_crop",
    "read_idx",
    "scale_detection",
]
