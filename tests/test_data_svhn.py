"""SVHN from small ``.mat`` files written with scipy in the official MATLAB v5 layout."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from diffeoprobe.data import build, load_svhn
from diffeoprobe.data import svhn as svhn_module
from diffeoprobe.data.download import RemoteFile
from diffeoprobe.errors import DiffeoProbeError

N = 6


def svhn_arrays(n: int = N, seed: int = 0, label_dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """``X`` (32, 32, 3, n) uint8 and ``y`` (n, 1) in 1..10, as in the official files."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    labels = np.concatenate([[10, 1], rng.integers(1, 11, size=n - 2)]).astype(label_dtype)
    return images, labels.reshape(n, 1)


def write_mat(path: Path, **variables: np.ndarray) -> Path:
    scipy.io.savemat(path, variables, format="5")
    return path


@pytest.mark.parametrize("label_dtype", [np.uint8, np.float64], ids=["uint8", "double"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_svhn_round_trip_maps_label_10_to_digit_0(tmp_path, split, label_dtype):
    images, labels = svhn_arrays(label_dtype=label_dtype)
    write_mat(tmp_path / f"{split}_32x32.mat", X=images, y=labels)
    x, y = load_svhn(tmp_path, split)[:]
    assert x.shape == (N, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y[:2].tolist() == [0, 1]
    assert y.tolist() == (labels[:, 0].astype(int) % 10).tolist()
    # X is (height, width, channel, image): pixel (h, w) of channel c of image n.
    want = torch.from_numpy(images).permute(3, 2, 0, 1).float() / 255
    torch.testing.assert_close(x, want, rtol=0, atol=0)
    assert x[3, 1, 5, 7] * 255 == images[5, 7, 1, 3]


def test_svhn_is_registered_with_a_default_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    default = tmp_path / ".cache" / "diffeoprobe" / "svhn"
    default.mkdir(parents=True)
    images, labels = svhn_arrays()
    write_mat(default / "test_32x32.mat", X=images, y=labels)
    x, y = build("svhn", normalize=True, noise_norm=1.0)[:]
    assert x.shape == (N, 3, 32, 32) and y.shape == (N,)


@pytest.mark.parametrize("keep", [0, 10, 100, 127, 128, 200, 0.5], ids=str)
def test_truncated_mat_is_an_error_naming_it(tmp_path, keep):
    images, labels = svhn_arrays()
    path = write_mat(tmp_path / "test_32x32.mat", X=images, y=labels)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(DiffeoProbeError) as err:
        load_svhn(tmp_path, "test")
    assert str(path) in str(err.value)


def test_garbage_mat_is_an_error_naming_it(tmp_path):
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(b"not a MATLAB file " * 20)
    with pytest.raises(DiffeoProbeError, match="corrupt or truncated SVHN file") as err:
        load_svhn(tmp_path, "train")
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (lambda x, y: {"X": x[:, :, :1], "y": y}, r"X must be uint8 of shape \(32, 32, 3, N\)"),
        (lambda x, y: {"X": x.astype(np.float32), "y": y}, "X must be uint8"),
        (lambda x, y: {"X": x, "y": y[:-1]}, r"y must be numbers of shape \(6, 1\)"),
        (lambda x, y: {"X": x, "y": np.zeros_like(y)}, r"integers in 1\.\.10"),
        (lambda x, y: {"X": x, "y": y + 0.5}, r"integers in 1\.\.10"),
        (lambda x, y: {"X": x, "labels": y}, "must hold variables X and y"),
    ],
    ids=["one-channel", "float-images", "label-count", "label-0", "fractional-label", "no-y"],
)
def test_svhn_with_wrong_contents_is_refused(tmp_path, variables, message):
    path = write_mat(tmp_path / "test_32x32.mat", **variables(*svhn_arrays()))
    with pytest.raises(DiffeoProbeError, match=message) as err:
        load_svhn(tmp_path, "test")
    assert str(path) in str(err.value)


def test_missing_svhn_says_what_to_put_where_and_how_to_download(tmp_path):
    with pytest.raises(DiffeoProbeError) as err:
        build("svhn", split="train", data_dir=tmp_path / "absent")
    message = str(err.value)
    for part in (
        str(tmp_path / "absent"),
        "does not exist",
        "train_32x32.mat",
        "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
        "e26dedcc434d2e4c54c9b2d4a06d8373",
        "download=True",
        "-d download=true",
    ):
        assert part in message


def test_download_true_fetches_the_split_file(tmp_path, monkeypatch):
    source = write_mat(tmp_path / "source.mat", X=svhn_arrays()[0], y=svhn_arrays()[1])
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    remotes = {"test": RemoteFile("test_32x32.mat", (source.as_uri(),), md5)}
    monkeypatch.setattr(svhn_module, "SVHN_REMOTE", remotes)
    x, y = build("svhn", data_dir=tmp_path / "data", download=True)[:]
    assert (tmp_path / "data" / "test_32x32.mat").is_file()
    assert x.shape == (N, 3, 32, 32) and y[0] == 0
