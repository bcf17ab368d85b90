"""Atomic writes: files get the permissions a plain open() gives (the umask), not mkstemp's 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from torch import nn

from diffeoprobe import atomic, runs
from diffeoprobe.data import download

WRITERS: dict[str, Callable[[Path], Path]] = {
    "write_json": lambda path: runs.write_json(path / "a.json", {"x": 1}),
    "write_table": lambda path: runs.write_table(pd.DataFrame({"x": [1]}), path / "t.parquet"),
    "write_table_csv": lambda path: runs.write_table(pd.DataFrame({"x": [1]}), path / "t.csv"),
    "save_weights": lambda path: runs.save_weights(nn.Linear(2, 1), path / "w.safetensors"),
    "save_training_state": lambda path: runs.save_training_state(path / "s.pt", {"step": 1}),
    "atomic_write_bytes": lambda path: atomic.atomic_write_bytes(path / "b.bin", b"abc"),
}


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for the test; the old one comes back afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("writer", WRITERS, ids=list(WRITERS))
def test_atomic_writes_follow_the_umask(
    writer: str, umask: Callable[[int], None], tmp_path: Path
) -> None:
    umask(0o022)
    path = WRITERS[writer](tmp_path)
    assert mode(path) == 0o644  # new file: 0o666 & ~umask, as open() gives
    path = WRITERS[writer](tmp_path)
    assert mode(path) == 0o644  # overwriting a 0644 file keeps it 0644
    umask(0o077)
    private = WRITERS[writer](tmp_path / "private")
    assert mode(private) == 0o600
    umask(0o002)
    assert mode(WRITERS[writer](tmp_path)) == 0o664  # a group-writable umask is honoured too
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_download_follows_the_umask(umask: Callable[[int], None], tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    umask(0o022)
    assert mode(download(source.as_uri(), tmp_path / "copy.bin")) == 0o644
    umask(0o077)
    assert mode(download(source.as_uri(), tmp_path / "private.bin")) == 0o600


def test_temporary_files_never_reuse_an_existing_name(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    made = set()
    for _ in range(20):
        fd, tmp = atomic.create_temporary(target)
        os.close(fd)
        assert tmp.parent == tmp_path and tmp.name.startswith(".x.json.")
        assert tmp.name.endswith(".tmp")
        made.add(tmp)
    assert len(made) == 20
