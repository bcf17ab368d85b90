"""Corrupt and malicious files of every format the project reads: one DiffeoProbeError naming the
file, no code run from a pickle or a YAML tag, the file itself left as it was.

``FILES`` lists each hostile file once: how to make it and which reader gets it. A malicious file
would create ``MARKER`` if it were unpickled (or its YAML tag constructed).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from hostile.promise import (
    assert_api_refuses,
    assert_cli_refuses,
    fake_sweep,
    run_cli,
    xfail_if,
)

MARKER = "pwned"  # the file a payload would create in the test's folder


class Payload:
    """Unpickled, this would call ``open(marker, "w")``: the marker proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def evil_pickle(tmp: Path) -> bytes:
    return pickle.dumps({"weight": Payload(tmp / MARKER)}, protocol=2)


def evil_torch(tmp: Path, path: Path) -> None:
    torch.save({"weight": Payload(tmp / MARKER)}, path)


def net() -> nn.Module:
    return nn.Linear(2, 2)


def safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in net().state_dict().items()})


def idx(header: bytes, payload: bytes) -> bytes:
    return header + payload


IDX_IMAGES = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 2, 28, 28)


def cifar_batch(tmp: Path, kind: str) -> bytes:
    if kind == "foreign":
        return evil_pickle(tmp)
    if kind == "os.system":
        return b"cos\nsystem\n(S'touch " + str(tmp / MARKER).encode() + b"'\ntR."
    if kind == "missing keys":
        return pickle.dumps({b"nothing": 1}, protocol=2)
    if kind == "wrong shape":
        return pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}, protocol=2)
    return pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})[:40]


def mat_file(kind: str) -> bytes:
    import scipy.io

    buffer = io.BytesIO()
    if kind == "missing X":
        scipy.io.savemat(buffer, {"y": np.ones((2, 1))})
        return buffer.getvalue()
    scipy.io.savemat(buffer, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((2, 1))})
    data = buffer.getvalue()
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "wrong shape":
        buffer = io.BytesIO()
        scipy.io.savemat(buffer, {"X": np.zeros((5, 5), np.uint8), "y": np.ones((2, 1))})
        return buffer.getvalue()
    return b"MATLAB 5.0 MAT-file" + b"\x00" * 20 + b"garbage" * 10


def read_weights(path: Path) -> object:
    from diffeoprobe.runs import load_weights

    return load_weights(net(), path)


def read_state(path: Path) -> object:
    from diffeoprobe.runs import load_training_state

    return load_training_state(path)


def read_idx(path: Path) -> object:
    from diffeoprobe.data.idx import read_idx as read

    return read(path)


def read_cifar(path: Path) -> object:
    from diffeoprobe.data.cifar import read_cifar_batch

    return read_cifar_batch(path.read_bytes(), path)


def read_mat(path: Path) -> object:
    from diffeoprobe.data.svhn import read_svhn_mat

    return read_svhn_mat(path)


def read_grid(path: Path) -> object:
    from diffeoprobe.sweep import load_grid

    return load_grid(path)


def read_json(path: Path) -> object:
    from diffeoprobe.runs import read_json as read

    return read(path)


def read_table(path: Path) -> object:
    from diffeoprobe.runs import read_table as read

    return read(path)


def read_results(path: Path) -> object:
    from diffeoprobe.sweep.results import query

    return query(path.parents[2])


Maker = Callable[[Path, Path], None]


def raw(make: Callable[[Path], bytes]) -> Maker:
    return lambda tmp, path: path.write_bytes(make(tmp)) and None


def const(data: bytes) -> Maker:
    return raw(lambda _: data)


# (id, file name, how to make it, reader)
FILES: list[tuple[str, str, Maker, Callable[[Path], object]]] = [
    ("safetensors-empty", "w.safetensors", const(b""), read_weights),
    ("safetensors-garbage", "w.safetensors", const(b"\x00\xff" * 64), read_weights),
    (
        "safetensors-truncated",
        "w.safetensors",
        raw(lambda _: safetensors_bytes()[:-7]),
        read_weights,
    ),
    (
        "safetensors-huge-header",
        "w.safetensors",
        const(struct.pack("<Q", 2**62) + b"{}"),
        read_weights,
    ),
    (
        "safetensors-bad-json",
        "w.safetensors",
        const(struct.pack("<Q", 8) + b"{not js}"),
        read_weights,
    ),
    ("pt-malicious-torch-save", "w.pt", lambda tmp, p: evil_torch(tmp, p), read_weights),
    ("pt-malicious-plain-pickle", "w.pt", raw(evil_pickle), read_weights),
    ("pt-garbage", "w.pt", const(b"PK\x03\x04garbage"), read_weights),
    ("pt-not-a-state-dict", "w.pt", lambda _, p: torch.save([1, 2], p), read_weights),
    ("state-malicious", "state.pt", lambda tmp, p: evil_torch(tmp, p), read_state),
    ("state-truncated", "state.pt", const(b"PK\x03\x04"), read_state),
    ("idx-empty", "images-idx3-ubyte", const(b""), read_idx),
    ("idx-wrong-magic", "images-idx3-ubyte", const(b"\x12\x34\x08\x03" + b"\x00" * 20), read_idx),
    ("idx-truncated-header", "images-idx3-ubyte", const(IDX_IMAGES[:9]), read_idx),
    ("idx-truncated-payload", "images-idx3-ubyte", const(idx(IDX_IMAGES, b"\x00" * 100)), read_idx),
    ("idx-over-long", "images-idx3-ubyte", const(IDX_IMAGES + b"\x00" * (2 * 784 + 1)), read_idx),
    (
        "idx-huge-dims",
        "images-idx3-ubyte",
        const(bytes([0, 0, 0x08, 3]) + struct.pack(">III", 2**32 - 1, 2**32 - 1, 2**32 - 1)),
        read_idx,
    ),
    ("idx-corrupt-gzip", "images-idx3-ubyte.gz", const(b"\x1f\x8b" + b"\x00" * 30), read_idx),
    (
        "idx-truncated-gzip",
        "images-idx3-ubyte.gz",
        const(gzip.compress(IDX_IMAGES + b"\x00" * 2 * 784)[:-10]),
        read_idx,
    ),
    ("cifar-foreign-class", "data_batch_1", raw(lambda t: cifar_batch(t, "foreign")), read_cifar),
    ("cifar-os-system", "data_batch_1", raw(lambda t: cifar_batch(t, "os.system")), read_cifar),
    (
        "cifar-missing-keys",
        "data_batch_1",
        raw(lambda t: cifar_batch(t, "missing keys")),
        read_cifar,
    ),
    ("cifar-wrong-shape", "data_batch_1", raw(lambda t: cifar_batch(t, "wrong shape")), read_cifar),
    ("cifar-truncated", "data_batch_1", raw(lambda t: cifar_batch(t, "truncated")), read_cifar),
    ("cifar-garbage", "data_batch_1", const(b"\x80\x05garbage"), read_cifar),
    ("mat-garbage", "test_32x32.mat", const(b"garbage"), read_mat),
    ("mat-empty", "test_32x32.mat", const(b""), read_mat),
    ("mat-bad-header", "test_32x32.mat", raw(lambda _: mat_file("bad")), read_mat),
    ("mat-truncated", "test_32x32.mat", raw(lambda _: mat_file("truncated")), read_mat),
    ("mat-missing-X", "test_32x32.mat", raw(lambda _: mat_file("missing X")), read_mat),
    ("mat-wrong-shape", "test_32x32.mat", raw(lambda _: mat_file("wrong shape")), read_mat),
    (
        "grid-python-object",
        "grid.yaml",
        raw(
            lambda t: f"train: !!python/object/apply:builtins.open ['{t / MARKER}', 'w']\n".encode()
        ),
        read_grid,
    ),
    (
        "grid-python-name",
        "grid.yaml",
        const(b"train:\n  model: !!python/name:os.system\n"),
        read_grid,
    ),
    ("grid-list", "grid.yaml", const(b"- train: {}\n- train: {}\n"), read_grid),
    ("grid-scalar", "grid.yaml", const(b"42\n"), read_grid),
    ("grid-empty", "grid.yaml", const(b""), read_grid),
    ("grid-not-yaml", "grid.yaml", const(b"train: [unclosed\n"), read_grid),
    ("grid-binary", "grid.yaml", const(b"\xff\xfe\x00\x01garbage"), read_grid),
    ("json-garbage", "config.json", const(b"{not json"), read_json),
    ("json-binary", "config.json", const(b"\xff\xfe\x00"), read_json),
    ("json-empty", "config.json", const(b""), read_json),
    ("parquet-garbage", "table.parquet", const(b"PAR1garbagePAR1"), read_table),
    ("parquet-truncated", "table.parquet", const(b"PAR1" + b"\x00" * 50), read_table),
    ("run-config-garbage", "sweep/runs/r0/config.json", const(b"{not json"), read_results),
    ("run-done-garbage", "sweep/runs/r0/done.json", const(b"[1, 2"), read_results),
]

# Cases that break the promise today (case id -> what happens); each is a strict xfail.
KNOWN: dict[str, str] = {}


@pytest.mark.parametrize(
    ("name", "make", "read"),
    [pytest.param(n, m, r, id=i, marks=xfail_if(KNOWN, i)) for i, n, m, r in FILES],
)
def test_a_hostile_file_is_one_error_and_runs_no_code(
    tmp_path: Path, name: str, make: Maker, read: Callable[[Path], object]
) -> None:
    if name.startswith("sweep/"):
        fake_sweep(tmp_path / "sweep")
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    make(tmp_path, path)
    (tmp_path / MARKER).unlink(missing_ok=True)  # torch.save's pickling does not run the payload
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert_api_refuses(lambda: read(path), (path.name, str(path), str(path.parent)))
    assert not (tmp_path / MARKER).exists(), "the file ran code"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before, "the reader changed the file"


# The same files through the command line: exit 2, one line, no code run.
CLI_FILES: list[tuple[str, str, Maker, list[str]]] = [
    ("measure-malicious-pt", "w.pt", lambda t, p: evil_torch(t, p), ["measure", "--checkpoint"]),
    (
        "measure-garbage-safetensors",
        "w.safetensors",
        const(b"\x00" * 9),
        ["measure", "--checkpoint"],
    ),
    (
        "sweep-python-tag",
        "grid.yaml",
        raw(
            lambda t: f"train: !!python/object/apply:builtins.open ['{t / MARKER}', 'w']\n".encode()
        ),
        ["sweep", "--out", "s", "--dry-run"],
    ),
    ("sweep-list-grid", "grid.yaml", const(b"- 1\n- 2\n"), ["sweep", "--out", "s", "--dry-run"]),
    ("plot-garbage-table", "run/table.parquet", const(b"garbage"), ["plot"]),
]
KNOWN_CLI: dict[str, str] = {}

SMALL = ["--probe-size", "40", "-d", "d=32", "-d", "xi=8", "-d", "train_size=100"]


@pytest.mark.parametrize(
    ("name", "make", "command"),
    [pytest.param(n, m, c, id=i, marks=xfail_if(KNOWN_CLI, i)) for i, n, m, c in CLI_FILES],
)
def test_a_hostile_file_at_the_command_line_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    name: str,
    make: Maker,
    command: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    make(tmp_path, path)
    (tmp_path / MARKER).unlink(missing_ok=True)
    before = path.read_bytes()
    if command[0] == "measure":
        args = [*command, name, *SMALL, "-d", "test_size=60", "-m", "depth=2"]
    elif command[0] == "plot":
        args = [*command, str(path.parent)]
    else:
        args = [command[0], name, *command[1:]]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_cli_refuses(code, err, (path.name, str(path), str(path.parent)))
    assert not (tmp_path / MARKER).exists(), "the file ran code"
    assert path.read_bytes() == before


def test_a_corrupt_run_table_is_skipped_with_a_warning_naming_the_run(tmp_path: Path) -> None:
    """The issue's rule for a sweep: one corrupt run must not break ``results`` for the others;
    it is skipped with a one-line warning naming it (here the only run: no rows, no error)."""
    import warnings

    from diffeoprobe.errors import DiffeoProbeWarning
    from diffeoprobe.sweep.results import query

    root = fake_sweep(tmp_path / "sweep")
    table = root / "runs" / "r0" / "table.parquet"
    table.write_bytes(b"garbage")
    before = table.read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DiffeoProbeWarning)
        rows = query(root)
    messages = [str(w.message) for w in caught if issubclass(w.category, DiffeoProbeWarning)]
    assert len(messages) == 1 and "r0" in messages[0] and "\n" not in messages[0]
    assert rows.empty and table.read_bytes() == before
