"""Reader for the idx format of MNIST and Fashion-MNIST (gzip-compressed or plain).

The format (http://yann.lecun.com/exdb/mnist/, section "FILE FORMATS"): a 4-byte magic number
``00 00 TT NN`` where ``TT`` is the element type code and ``NN`` the number of dimensions, then ``NN``
big-endian unsigned 32-bit sizes, then the ``prod(sizes)`` elements, big-endian, in C order.

The files are found by their official names (``train-images-idx3-ubyte`` and so on), each plain or
with ``.gz`` appended; a file that starts with the gzip magic ``1f 8b`` is decompressed whatever its
name.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.validate import check_choice

from .download import RemoteFile

__all__ = [
    "BASE_URLS",
    "FASHION_MNIST_DIR",
    "IDX_FILES",
    "MD5",
    "MIRRORS",
    "URLS",
    "idx_remote_files",
    "load_idx_dataset",
    "read_idx",
]

#: Where ``apt-get install dataset-fashion-mnist`` puts the four Fashion-MNIST files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: split -> (images file, labels file), official names without the optional ``.gz``.
IDX_FILES: Mapping[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: dataset -> the official site the four ``.gz`` files are downloaded from.
BASE_URLS: Mapping[str, str] = {
    "fashionmnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "mnist": "http://yann.lecun.com/exdb/mnist/",
}
#: dataset -> further sites holding the same ``.gz`` files, tried after the official one (the MNIST
#: site often refuses scripted downloads; PyTorch's mirror is the one torchvision uses first).
MIRRORS: Mapping[str, tuple[str, ...]] = {
    "fashionmnist": (),
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",),
}
_GZ_NAMES = [f"{name}.gz" for pair in IDX_FILES.values() for name in pair]

#: dataset -> {file name: official download URL}.
URLS: Mapping[str, Mapping[str, str]] = {
    dataset: {name: base + name for name in _GZ_NAMES} for dataset, base in BASE_URLS.items()
}

#: dataset -> {file name: md5 of the official ``.gz`` download} (as published by the datasets'
#: authors and used by torchvision). Repackaged copies, such as Debian's dataset-fashion-mnist,
#: are recompressed and have other checksums while holding the same data.
MD5: Mapping[str, Mapping[str, str]] = {
    "fashionmnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
}


def idx_remote_files(dataset: str, split: str) -> list[RemoteFile]:
    """The two official ``.gz`` files of one split of ``"mnist"`` or ``"fashionmnist"``."""
    sites = (BASE_URLS[dataset], *MIRRORS[dataset])
    names = [f"{name}.gz" for name in IDX_FILES[split]]
    return [
        RemoteFile(name, tuple(site + name for site in sites), MD5[dataset][name]) for name in names
    ]


#: idx type code -> big-endian numpy dtype.
_IDX_DTYPES: Mapping[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"
_IMAGE_SIDE = 28  # MNIST and Fashion-MNIST images are 28 x 28 pixels
_NUM_CLASSES = 10
_PIXEL_MAX = 255.0  # ubyte pixels are scaled to [0, 1] by this


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (plain or gzip) into an array of its declared shape and type.

    Args:
        path: the file; gzip compression is detected from its first two bytes, not its name.

    Returns:
        An array of shape ``dims`` from the header, in the file's element type converted to native
        byte order (``uint8`` for MNIST images and labels).

    Raises:
        DiffeoProbeError: the file is missing, is a corrupt gzip, has a bad magic number, or its
            payload is not exactly ``prod(dims) * itemsize`` bytes (the message names the path and
            the expected and actual sizes).

    >>> import tempfile, pathlib
    >>> header = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "tiny-idx2-ubyte"
    ...     _ = path.write_bytes(header + bytes(range(6)))
    ...     read_idx(path).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DiffeoProbeError(f"cannot read idx file {path}: {err.strerror or err}") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DiffeoProbeError(f"corrupt gzip file {path}: {err}") from None

    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        codes = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise DiffeoProbeError(
            f"{path} is not an idx file: its magic number must be 00 00 TT NN with type code TT in "
            f"{{{codes}}}, got {raw[:4].hex(' ') or 'an empty file'}"
        )
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DiffeoProbeError(
            f"truncated idx file {path}: the header of {ndim} dimensions needs {header_size} bytes, "
            f"the file has {len(raw)}"
        )
    dims = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(dims) * dtype.itemsize
    actual = len(raw) - header_size
    if actual != expected:
        problem = "truncated" if actual < expected else "over-long"
        raise DiffeoProbeError(
            f"{problem} idx file {path}: dimensions {dims} of {dtype.itemsize}-byte elements need "
            f"{expected} payload bytes, the file has {actual}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # native order; the copy is writable


def _find(data_dir: Path, name: str, how_to_get: str) -> Path:
    """The plain or ``.gz`` file ``name`` in ``data_dir``, or an error saying how to get it."""
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    where = (
        f"in {data_dir}"
        if data_dir.is_dir()
        else f"because the directory {data_dir} does not exist"
    )
    hint = f"; {how_to_get}" if how_to_get else ""
    raise DiffeoProbeError(f"missing idx file {name}[.gz]: not found {where}{hint}")


def load_idx_dataset(
    data_dir: str | Path,
    split: str,
    *,
    names: Mapping[str, tuple[str, str]] = IDX_FILES,
    how_to_get: str = "",
) -> TensorDataset:
    """Load one split of an MNIST-format data set as ``(images, labels)`` tensors.

    Args:
        data_dir: directory holding the idx files, each plain or ``.gz``.
        split: ``"train"`` or ``"test"``.
        names: split -> (images file, labels file) without ``.gz``; the official names by default.
        how_to_get: appended to the error when a file is missing (where to download it).

    Returns:
        ``TensorDataset(images, labels)``: images float32 of shape ``(N, 1, 28, 28)`` with pixel
        values in ``[0, 1]`` (the ubyte value / 255), labels int64 of shape ``(N,)`` in ``0..9``.

    Raises:
        DiffeoProbeError: a missing file (which one, where it looked, ``how_to_get``), an unreadable
            file, images that are not ubyte ``N x 28 x 28``, labels that are not 1-D with the same
            ``N`` or that leave ``0..9``.
    """
    split = check_choice(split, "split", tuple(names))
    data_dir = Path(data_dir)
    images_path, labels_path = (_find(data_dir, name, how_to_get) for name in names[split])
    images, labels = read_idx(images_path), read_idx(labels_path)

    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (_IMAGE_SIDE,) * 2:
        raise DiffeoProbeError(
            f"{images_path} must hold ubyte images of shape (N, {_IMAGE_SIDE}, {_IMAGE_SIDE}), "
            f"got {images.dtype} of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DiffeoProbeError(
            f"{labels_path} must hold one label per image of {images_path} ({images.shape[0]}), "
            f"got shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= _NUM_CLASSES):
        raise DiffeoProbeError(
            f"{labels_path} must hold labels in 0..{_NUM_CLASSES - 1}, "
            f"got values from {labels.min()} to {labels.max()}"
        )
    x = torch.from_numpy(images).unsqueeze(1).to(torch.float32).div_(_PIXEL_MAX)
    y = torch.from_numpy(labels).to(torch.int64)
    return TensorDataset(x, y)
