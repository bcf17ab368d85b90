"""CIFAR-10 from small batches written in the real format: directory, archive, malicious and broken files."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from diffeoprobe.data import build, load_cifar10
from diffeoprobe.data import cifar as cifar_module
from diffeoprobe.data.cifar import CIFAR10_DIR, RestrictedUnpickler, read_cifar_batch
from diffeoprobe.data.download import RemoteFile
from diffeoprobe.data.transforms import NORMALIZATION
from diffeoprobe.errors import DiffeoProbeError

BATCH = 4  # images per test batch (the real files hold 10000)


class Py2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle did when it wrote the official batches (protocol 2): ``bytes``
    and ``str`` as 8-bit strings, so that the only globals are the three of a numpy array."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def dumps(obj: object, writer: str) -> bytes:
    if writer == "python2":
        buffer = io.BytesIO()
        Py2Pickler(buffer, protocol=2).dump(obj)
        # Python 2's numpy lived at numpy.core; GLOBAL opcodes are text lines, so rename in place.
        return buffer.getvalue().replace(
            b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n"
        )
    return pickle.dumps(obj, protocol=int(writer.removeprefix("protocol")))


def make_batch(seed: int, n: int = BATCH) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": f"batch {seed}".encode(),
        b"labels": rng.integers(0, 10, size=n).tolist(),
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }


def batches_for(split: str) -> dict[str, dict]:
    names = cifar_module.CIFAR10_BATCHES[split]
    return {name: make_batch(seed) for seed, name in enumerate(names)}


def write_directory(directory: Path, batches: dict[str, dict], writer: str = "python2") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        (directory / name).write_bytes(dumps(batch, writer))
    (directory / "batches.meta").write_bytes(
        dumps({b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": BATCH}, writer)
    )
    return directory


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def archive_members(batches: dict[str, dict]) -> dict[str, bytes]:
    return {f"{CIFAR10_DIR}/{name}": dumps(batch, "python2") for name, batch in batches.items()}


def expected(batches: dict[str, dict]) -> tuple[torch.Tensor, list[int]]:
    data = np.concatenate([b[b"data"] for b in batches.values()])
    # Each row is the red, green, blue 32 x 32 planes, row-major.
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 255
    return x, [label for b in batches.values() for label in b[b"labels"]]


@pytest.mark.parametrize("writer", ["python2", "protocol2", "protocol4"])
def test_batch_written_like_the_official_files_needs_only_numpy_globals(writer):
    raw = dumps(make_batch(0), writer)
    data, labels = read_cifar_batch(raw, "batch")
    np.testing.assert_array_equal(data, make_batch(0)[b"data"])
    assert labels.tolist() == make_batch(0)[b"labels"]


@pytest.mark.parametrize("layout", ["extracted", "data-dir-is-batches-dir", "archive"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_loads_scaled_rgb_images_from_each_layout(tmp_path, split, layout):
    batches = batches_for(split)
    if layout == "extracted":
        write_directory(tmp_path / CIFAR10_DIR, batches)
        data_dir = tmp_path
    elif layout == "data-dir-is-batches-dir":
        data_dir = write_directory(tmp_path / "anywhere", batches)
    else:
        write_archive(tmp_path / "cifar-10-python.tar.gz", archive_members(batches))
        data_dir = tmp_path
    x, y = load_cifar10(data_dir, split)[:]
    want_x, want_y = expected(batches)
    assert x.shape == (BATCH * len(batches), 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == want_y
    torch.testing.assert_close(x, want_x, rtol=0, atol=0)


def test_cifar10_is_registered_with_its_options(tmp_path):
    batches = batches_for("test")
    write_directory(tmp_path / CIFAR10_DIR, batches)
    plain = build("cifar10", data_dir=tmp_path)
    normalized = build("cifar10", data_dir=tmp_path, normalize=True)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in NORMALIZATION["cifar10"])
    torch.testing.assert_close(normalized.tensors[0], (plain.tensors[0] - mean) / std)
    with pytest.raises(DiffeoProbeError, match="does not take 'd'; it takes: download"):
        build("cifar10", data_dir=tmp_path, d=3)


class Evil:
    """Unpickling this runs ``function(*args)``: what a malicious batch file would do."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(
    ("payload", "forbidden"),
    [
        (lambda marker: Evil(os.system, f"touch {marker}"), "system"),
        (lambda marker: Evil(eval, f"open({str(marker)!r}, 'w').close()"), "eval"),
        (lambda marker: Evil(Path.touch, marker), "(getattr|Path)"),
    ],
    ids=["os.system", "eval", "pathlib"],
)
@pytest.mark.parametrize("writer", ["protocol2", "protocol4"])
def test_malicious_batch_is_refused_without_running_it(tmp_path, payload, forbidden, writer):
    marker = tmp_path / "pwned"
    batch = make_batch(0)
    batch[b"labels"] = payload(marker)
    directory = tmp_path / CIFAR10_DIR
    directory.mkdir()
    (directory / "test_batch").write_bytes(dumps(batch, writer))
    with pytest.raises(DiffeoProbeError, match=f"forbidden global .*{forbidden}") as err:
        load_cifar10(tmp_path, "test")
    assert str(directory / "test_batch") in str(err.value)
    assert not marker.exists()


def test_malicious_batch_in_archive_names_the_member(tmp_path):
    marker = tmp_path / "pwned"
    batch = make_batch(0)
    batch[b"data"] = Evil(os.system, f"touch {marker}")
    archive = write_archive(
        tmp_path / "cifar-10-python.tar.gz",
        {f"{CIFAR10_DIR}/test_batch": pickle.dumps(batch, protocol=2)},
    )
    with pytest.raises(DiffeoProbeError, match="forbidden global") as err:
        load_cifar10(tmp_path, "test")
    assert f"{archive}:{CIFAR10_DIR}/test_batch" in str(err.value)
    assert not marker.exists()


def test_only_the_globals_of_a_numpy_array_are_allowed():
    assert set(RestrictedUnpickler.ALLOWED) == {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # Python 3 protocol-2 bytes; served by a latin-1-only stand-in
    }


def test_codecs_stand_in_allows_only_latin1():
    unpickler = RestrictedUnpickler(io.BytesIO(b""))
    encode = unpickler.find_class("_codecs", "encode")
    assert encode("\xff", "latin1") == b"\xff"
    with pytest.raises(pickle.UnpicklingError, match="latin1"):
        encode("x", "zlib_codec")


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.97], ids=["header", "half", "tail"])
def test_truncated_archive_is_an_error_naming_it(tmp_path, keep):
    archive = write_archive(
        tmp_path / "cifar-10-python.tar.gz", archive_members(batches_for("test"))
    )
    raw = archive.read_bytes()
    archive.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(DiffeoProbeError, match="corrupt or truncated archive") as err:
        load_cifar10(tmp_path, "test")
    assert str(archive) in str(err.value)


def test_archive_that_is_not_gzip_is_an_error(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"this is not a gzip file" * 10)
    with pytest.raises(DiffeoProbeError, match="corrupt or truncated archive") as err:
        load_cifar10(tmp_path, "test")
    assert str(archive) in str(err.value)


def test_archive_without_the_split_says_what_it_lacks(tmp_path):
    write_archive(tmp_path / "cifar-10-python.tar.gz", archive_members(batches_for("test")))
    with pytest.raises(DiffeoProbeError, match="lacks cifar-10-batches-py/data_batch_1"):
        load_cifar10(tmp_path, "train")


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", f"{CIFAR10_DIR}/../../escape"])
def test_archive_members_escaping_it_are_refused(tmp_path, name):
    members = archive_members(batches_for("test")) | {name: b"x"}
    write_archive(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(DiffeoProbeError, match="escapes the archive"):
        load_cifar10(tmp_path, "test")


def test_archive_member_that_is_a_link_is_refused(tmp_path):
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo(f"{CIFAR10_DIR}/test_batch")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DiffeoProbeError, match="not a regular file"):
        load_cifar10(tmp_path, "test")


@pytest.mark.parametrize("keep", [0, 2, 100, -1], ids=["empty", "opcode", "middle", "last-byte"])
def test_truncated_batch_file_is_an_error_naming_it(tmp_path, keep):
    directory = write_directory(tmp_path / CIFAR10_DIR, batches_for("test"))
    path = directory / "test_batch"
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(DiffeoProbeError, match="corrupt CIFAR batch") as err:
        load_cifar10(tmp_path, "test")
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b.update({b"data": b[b"data"][:, :-1]}), r"shape \(N, 3072\)"),
        (lambda b: b.update({b"data": b[b"data"].astype(np.int16)}), "uint8"),
        (lambda b: b.update({b"labels": b[b"labels"][:-1]}), "one per image"),
        (lambda b: b.update({b"labels": [10] * BATCH}), r"0\.\.9"),
        (lambda b: b.pop(b"labels"), "keys b'data' and b'labels'"),
    ],
    ids=["wrong-width", "not-uint8", "label-count", "label-range", "no-labels"],
)
def test_batches_with_wrong_contents_are_refused(tmp_path, edit, message):
    batch = make_batch(0)
    edit(batch)
    write_directory(tmp_path, {"test_batch": batch}, writer="protocol2")
    with pytest.raises(DiffeoProbeError, match=message) as err:
        load_cifar10(tmp_path, "test")
    assert "test_batch" in str(err.value)


def test_missing_cifar10_says_what_to_put_where_and_how_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DiffeoProbeError) as err:
        build("cifar10")
    message = str(err.value)
    default = tmp_path / ".cache" / "diffeoprobe" / "cifar10"
    for part in (
        str(default),
        "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "download=True",
        "-d download=true",
        CIFAR10_DIR,
    ):
        assert part in message


def test_download_true_fetches_the_archive_once(tmp_path, monkeypatch):
    source = write_archive(tmp_path / "source.tar.gz", archive_members(batches_for("test")))
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    remote = RemoteFile("cifar-10-python.tar.gz", (source.as_uri(),), md5)
    monkeypatch.setattr(cifar_module, "CIFAR10_REMOTE", remote)
    data_dir = tmp_path / "data"
    x, _ = build("cifar10", data_dir=data_dir, download=True)[:]
    assert (data_dir / "cifar-10-python.tar.gz").read_bytes() == source.read_bytes()
    source.unlink()  # a second load reads the local copy, fetching nothing
    torch.testing.assert_close(build("cifar10", data_dir=data_dir).tensors[0], x)
