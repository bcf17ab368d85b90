"""Reader for SVHN's official cropped-digits files (http://ufldl.stanford.edu/housenumbers/, "Format 2").

``train_32x32.mat`` (73257 images) and ``test_32x32.mat`` (26032) are MATLAB v5 files holding ``X``,
uint8 of shape ``(32, 32, 3, N)`` (height, width, RGB channel, image), and ``y``, of shape ``(N, 1)``
with labels ``1..10`` where ``10`` stands for the digit 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import scipy.io
import torch
from torch.utils.data import TensorDataset

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.validate import check_choice

from .download import RemoteFile, fetch, missing_files_error

__all__ = ["SVHN_REMOTE", "load_svhn", "read_svhn_mat"]

_BASE_URL = "http://ufldl.stanford.edu/housenumbers/"
#: split -> the official file and its md5 (as published with torchvision's ``SVHN.split_list``).
SVHN_REMOTE: Mapping[str, RemoteFile] = {
    "train": RemoteFile(
        "train_32x32.mat", (f"{_BASE_URL}train_32x32.mat",), "e26dedcc434d2e4c54c9b2d4a06d8373"
    ),
    "test": RemoteFile(
        "test_32x32.mat", (f"{_BASE_URL}test_32x32.mat",), "eb5a983be6a315427106f1b164d9cef3"
    ),
}
_SIDE, _CHANNELS = 32, 3
_ZERO_LABEL = 10  # SVHN writes the digit 0 as class 10
_PIXEL_MAX = 255.0


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one SVHN ``.mat`` file.

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` (RGB) and int64 ``(N,)`` in ``0..9``, the file's
        label 10 mapped to 0.

    Raises:
        DiffeoProbeError: the file cannot be read as a MATLAB v5 file (corrupt, truncated, v7.3/HDF5),
            lacks ``X`` or ``y``, or they have the wrong type, shape or label values; the message
            names the path.
    """
    path = Path(path)
    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
    except NotImplementedError as err:  # scipy's answer to a v7.3 (HDF5) file
        raise DiffeoProbeError(f"cannot read {path}: {err}; SVHN's files are MATLAB v5") from None
    except (
        Exception
    ) as err:  # a corrupt file fails in many ways (ValueError, OSError, TypeError...)
        raise DiffeoProbeError(
            f"corrupt or truncated SVHN file {path}: {type(err).__name__}: {err}; delete it and "
            "download it again"
        ) from None
    if "X" not in mat or "y" not in mat:
        raise DiffeoProbeError(
            f"{path} is not an SVHN file: it must hold variables X and y, has "
            f"{', '.join(sorted(k for k in mat if not k.startswith('__'))) or 'neither'}"
        )
    images, labels = mat["X"], mat["y"]
    if (
        images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[:3] != (_SIDE, _SIDE, _CHANNELS)
    ):
        raise DiffeoProbeError(
            f"{path}: X must be uint8 of shape ({_SIDE}, {_SIDE}, {_CHANNELS}, N), got "
            f"{images.dtype} of shape {images.shape}"
        )
    n = images.shape[3]
    if labels.shape != (n, 1) or labels.dtype.kind not in "iuf":
        raise DiffeoProbeError(
            f"{path}: y must be numbers of shape ({n}, 1), one per image, got {labels.dtype} of "
            f"shape {labels.shape}"
        )
    labels = labels[:, 0]
    if labels.size and (
        labels.min() < 1 or labels.max() > _ZERO_LABEL or np.any(labels != np.round(labels))
    ):
        raise DiffeoProbeError(
            f"{path}: y must hold integers in 1..{_ZERO_LABEL} ({_ZERO_LABEL} for the digit 0), got "
            f"values from {labels.min()} to {labels.max()}"
        )
    labels = labels.astype(np.int64) % _ZERO_LABEL
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), labels


def load_svhn(data_dir: str | Path, split: str, *, download: bool = False) -> TensorDataset:
    """Load one split of SVHN (cropped digits) from ``data_dir/{train,test}_32x32.mat``.

    Args:
        data_dir: the directory holding the official ``.mat`` files.
        split: ``"train"`` (73257 images) or ``"test"`` (26032); the ``extra`` set is not offered.
        download: fetch the split's official file into ``data_dir`` when it is missing.

    Returns:
        ``TensorDataset(images, labels)``: images float32 ``(N, 3, 32, 32)`` (RGB) in ``[0, 1]``,
        labels int64 ``(N,)`` in ``0..9`` (the digit shown).

    Raises:
        DiffeoProbeError: the file is missing (what to put where, or ``download=True``), corrupt, or
            of the wrong shape.
    """
    split = check_choice(split, "split", tuple(SVHN_REMOTE))
    data_dir = Path(data_dir).expanduser()
    remote = SVHN_REMOTE[split]
    path = data_dir / remote.name
    if not path.is_file():
        if not download:
            raise missing_files_error("svhn", data_dir, [remote])
        fetch(data_dir, [remote])
    images, labels = read_svhn_mat(path)
    x = torch.from_numpy(images).to(torch.float32).div_(_PIXEL_MAX)
    return TensorDataset(x, torch.from_numpy(labels))
