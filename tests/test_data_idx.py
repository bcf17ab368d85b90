"""The idx reader and the MNIST-format loader, on small files written in the real format."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from diffeoprobe.data import build, load_idx_dataset, read_idx
from diffeoprobe.data.idx import FASHION_MNIST_DIR, IDX_FILES, MD5, URLS
from diffeoprobe.errors import DiffeoProbeError

_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding of ``array``: magic, big-endian dims, big-endian payload."""
    code = _CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_split(directory: Path, split: str, n: int, *, compress: bool, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if compress else ""
    image_name, label_name = IDX_FILES[split]
    write_idx(directory / f"{image_name}{suffix}", images, compress=compress)
    write_idx(directory / f"{label_name}{suffix}", labels, compress=compress)
    return images, labels


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-3, 0, 7], dtype=np.int8),
        np.array([[-300, 2], [5, 30000]], dtype=np.int16),
        np.array([-(2**31), 2**31 - 1], dtype=np.int32),
        np.array([1.5, -2.25], dtype=np.float32),
        np.array([[np.pi]], dtype=np.float64),
        np.zeros((0, 28, 28), dtype=np.uint8),
    ],
    ids=["ubyte", "byte", "short", "int", "float", "double", "empty"],
)
def test_read_idx_round_trips_every_type(tmp_path, array, compress):
    out = read_idx(write_idx(tmp_path / "file-idx", array, compress=compress))
    assert out.shape == array.shape
    assert out.dtype == array.dtype
    np.testing.assert_array_equal(out, array)


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8)
    path = tmp_path / "no-suffix"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "over-long"),
        (lambda b: b[:6], "truncated"),
        (lambda b: b"\x01" + b[1:], "not an idx file"),
        (lambda b: b[:2] + b"\x0a" + b[3:], "not an idx file"),
        (lambda b: b"", "not an idx file"),
    ],
    ids=["truncated", "over-long", "truncated-header", "bad-magic", "bad-type-code", "empty"],
)
def test_read_idx_refuses_malformed_files_naming_the_path(tmp_path, edit, message, compress):
    data = edit(idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4)))
    path = tmp_path / "bad-idx"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DiffeoProbeError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_size_error_states_expected_and_actual_bytes(tmp_path):
    path = tmp_path / "short-idx"
    path.write_bytes(idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))[:-2])
    with pytest.raises(DiffeoProbeError, match=r"need 12 payload bytes, the file has 10"):
        read_idx(path)


def test_read_idx_refuses_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))
    path = tmp_path / "corrupt.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DiffeoProbeError, match="corrupt gzip") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_refuses_missing_file(tmp_path):
    with pytest.raises(DiffeoProbeError, match="nowhere-idx"):
        read_idx(tmp_path / "nowhere-idx")


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_idx_dataset_returns_scaled_float_images_and_int64_labels(tmp_path, split, compress):
    images, labels = write_split(tmp_path, split, 7, compress=compress)
    x, y = load_idx_dataset(tmp_path, split)[:]
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (7,) and y.dtype == torch.int64
    torch.testing.assert_close(x[:, 0] * 255, torch.from_numpy(images).float())
    assert y.tolist() == labels.tolist()


def test_load_idx_dataset_refuses_count_mismatch(tmp_path):
    write_split(tmp_path, "test", 5, compress=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8), compress=False)
    with pytest.raises(DiffeoProbeError, match="one label per image") as err:
        load_idx_dataset(tmp_path, "test")
    assert "t10k-labels-idx1-ubyte" in str(err.value)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((3, 27, 28), np.uint8), np.zeros(3, np.uint8), "shape"),
        (np.zeros((3, 28, 28), np.float32), np.zeros(3, np.uint8), "ubyte"),
        (np.zeros((3, 28, 28), np.uint8), np.array([0, 10, 1], np.uint8), r"0\.\.9"),
        (np.zeros((3, 28, 28), np.uint8), np.zeros((3, 1), np.uint8), "one label per image"),
    ],
    ids=["wrong-side", "not-ubyte", "label-out-of-range", "labels-2d"],
)
def test_load_idx_dataset_refuses_bad_contents(tmp_path, images, labels, message):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images, compress=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, compress=False)
    with pytest.raises(DiffeoProbeError, match=message):
        load_idx_dataset(tmp_path, "test")


def test_missing_file_error_says_which_where_and_how_to_get(tmp_path):
    write_split(tmp_path, "train", 3, compress=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DiffeoProbeError) as err:
        build("fashionmnist", split="train", data_dir=tmp_path)
    message = str(err.value)
    assert "train-labels-idx1-ubyte" in message
    assert str(tmp_path) in message
    assert "apt-get install dataset-fashion-mnist" in message


@pytest.mark.parametrize("name", ["fashionmnist", "mnist"])
def test_missing_directory_error_names_the_directory(tmp_path, name):
    missing = tmp_path / "absent"
    with pytest.raises(DiffeoProbeError, match="does not exist") as err:
        build(name, data_dir=missing)
    assert str(missing) in str(err.value)
    assert URLS[name]["t10k-images-idx3-ubyte.gz"].rsplit("/", 1)[0] in str(err.value)


def test_mnist_without_data_dir_says_where_to_get_it():
    with pytest.raises(DiffeoProbeError, match="needs data_dir"):
        build("mnist")


def test_idx_datasets_refuse_unknown_options_and_bad_split(tmp_path):
    with pytest.raises(DiffeoProbeError, match="does not take 'd'"):
        build("mnist", data_dir=tmp_path, d=3)
    with pytest.raises(DiffeoProbeError, match="split"):
        build("mnist", split="valid", data_dir=tmp_path)


def test_checksum_table_covers_the_download_table():
    for name, urls in URLS.items():
        assert set(MD5[name]) == set(urls)
        assert all(len(md5) == 32 for md5 in MD5[name].values())


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_installed_fashion_mnist_loads_60000_train_and_10000_test():
    counts = {}
    for split in ("train", "test"):
        x, y = build("fashionmnist", split=split)[:]
        assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert y.bincount().tolist() == [len(y) // 10] * 10  # both splits are balanced
        counts[split] = len(y)
    assert counts == {"train": 60000, "test": 10000}
