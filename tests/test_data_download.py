"""Downloads through file:// and unreachable URLs: checksums, atomicity, mirrors, error messages."""

from __future__ import annotations

import gzip
import hashlib
import socket

import numpy as np
import pytest
import torch

from diffeoprobe.data import build, download
from diffeoprobe.data import idx as idx_module
from diffeoprobe.data.download import RemoteFile, missing_files_error
from diffeoprobe.errors import DiffeoProbeError

PAYLOAD = bytes(range(256)) * 4097  # a little over 1 MiB: more than one streamed chunk


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "source.bin"
    path.write_bytes(PAYLOAD)
    return path


def closed_port_url() -> str:
    """An http URL on localhost where nothing listens (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.bin"


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


@pytest.mark.parametrize(
    "checksums",
    [
        {},
        {"md5": hashlib.md5(PAYLOAD).hexdigest()},
        {"sha256": hashlib.sha256(PAYLOAD).hexdigest().upper()},
        {"md5": hashlib.md5(PAYLOAD).hexdigest(), "sha256": hashlib.sha256(PAYLOAD).hexdigest()},
    ],
    ids=["none", "md5", "sha256-upper-case", "both"],
)
def test_download_copies_the_file_into_a_new_directory(tmp_path, source, checksums):
    target = tmp_path / "new" / "dir" / "out.bin"
    assert download(source.as_uri(), target, **checksums) == target
    assert target.read_bytes() == PAYLOAD
    assert leftovers(target.parent) == []


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_checksum_mismatch_keeps_nothing_and_leaves_an_old_file_alone(tmp_path, source, algorithm):
    target = tmp_path / "out.bin"
    with pytest.raises(DiffeoProbeError, match=f"checksum mismatch.*{algorithm}") as err:
        download(source.as_uri(), target, **{algorithm: "0" * 8})
    assert not target.exists() and leftovers(tmp_path) == []
    assert str(target) in str(err.value)

    target.write_bytes(b"previous")
    with pytest.raises(DiffeoProbeError, match="checksum mismatch"):
        download(source.as_uri(), target, **{algorithm: "0" * 8})
    assert target.read_bytes() == b"previous" and leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["missing-file", "connection-refused", "unknown-scheme"])
def test_unreachable_url_says_where_to_put_the_file_by_hand(tmp_path, kind):
    url = {
        "missing-file": (tmp_path / "nowhere.bin").as_uri(),
        "connection-refused": closed_port_url(),
        "unknown-scheme": "nosuchscheme://host/file.bin",
    }[kind]
    target = tmp_path / "out" / "file.bin"
    with pytest.raises(DiffeoProbeError, match="cannot download file.bin") as err:
        download(url, target, md5="0" * 32)
    message = str(err.value)
    assert url in message and "by hand" in message and str(target) in message
    assert not target.exists() and leftovers(target.parent) == []


def test_mirrors_are_tried_in_order(tmp_path, source):
    target = tmp_path / "out.bin"
    urls = [closed_port_url(), source.as_uri()]
    download(urls, target, md5=hashlib.md5(PAYLOAD).hexdigest())
    assert target.read_bytes() == PAYLOAD


def test_missing_files_error_lists_name_url_checksum_and_download_flag(tmp_path):
    remote = RemoteFile("a.bin", ("https://example.org/a.bin", "https://mirror/a.bin"), "ab" * 16)
    message = str(missing_files_error("demo", tmp_path, [remote]))
    for part in ("'demo'", str(tmp_path), "a.bin from https://example.org/a.bin", "ab" * 16):
        assert part in message
    assert "download=True" in message and "-d download=true" in message


def idx_gz(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.tobytes())


@pytest.fixture
def mnist_site(tmp_path, monkeypatch):
    """A local copy of the MNIST site (test split), its checksums patched into the tables."""
    site = tmp_path / "site"
    site.mkdir()
    rng = np.random.default_rng(0)
    files = {
        "t10k-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte.gz": idx_gz(rng.integers(0, 10, 5, dtype=np.uint8)),
    }
    for name, raw in files.items():
        (site / name).write_bytes(raw)
    md5 = {name: hashlib.md5(raw).hexdigest() for name, raw in files.items()}
    monkeypatch.setattr(idx_module, "BASE_URLS", {"mnist": closed_port_url() + "/"})
    monkeypatch.setattr(idx_module, "MIRRORS", {"mnist": (site.as_uri() + "/",)})
    monkeypatch.setattr(idx_module, "MD5", {"mnist": md5})
    return site


def test_mnist_download_falls_back_to_a_mirror(tmp_path, mnist_site):
    data_dir = tmp_path / "mnist"
    x, y = build("mnist", data_dir=data_dir, download=True)[:]
    assert x.shape == (5, 1, 28, 28) and y.shape == (5,)
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(
        p.name for p in mnist_site.iterdir()
    )
    torch.testing.assert_close(build("mnist", data_dir=data_dir).tensors[0], x)


def test_mnist_download_skips_files_already_there_plain_or_gz(tmp_path, mnist_site):
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    labels = gzip.decompress((mnist_site / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (data_dir / "t10k-labels-idx1-ubyte").write_bytes(labels)
    build("mnist", data_dir=data_dir, download=True)
    assert sorted(p.name for p in data_dir.iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte",
    ]


def test_mnist_default_directory_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DiffeoProbeError) as err:
        build("mnist", split="train")
    message = str(err.value)
    assert "needs data_dir" in message
    assert str(tmp_path / ".cache" / "diffeoprobe" / "mnist") in message
    assert "train-images-idx3-ubyte.gz" in message and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in message
    assert "download=True" in message


def test_data_set_without_files_refuses_download():
    with pytest.raises(DiffeoProbeError, match="does not take 'download' .it reads no files."):
        build("scale-detection", download=True)
