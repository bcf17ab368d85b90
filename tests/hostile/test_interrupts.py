"""Interrupted writes: a write stopped mid-way leaves the old file whole and no temporary file.

``WRITERS`` lists every function that writes a file the project reads back; ``STOPS`` the ways a
write can be stopped (an error in the middle of writing, a failing rename, Ctrl-C). Each pair is
one case. The slow case kills a real process with SIGKILL in the middle of a large write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

from hostile.promise import snapshot


def _table() -> pd.DataFrame:
    return pd.DataFrame({"layer": ["input", "output"], "D": [1.0, 0.5]})


def _figure() -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    return fig


def _write_table(path: Path) -> None:
    from diffeoprobe.runs import write_table

    write_table(_table(), path)


def _export(path: Path) -> None:
    from diffeoprobe.sweep.results import export

    export(_table(), path)


def _save_weights(path: Path) -> None:
    from diffeoprobe.runs import save_weights

    save_weights(nn.Linear(3, 3), path)


def _write_json(path: Path) -> None:
    from diffeoprobe.runs import write_json

    write_json(path, {"new": True})


def _save_state(path: Path) -> None:
    from diffeoprobe.runs import save_training_state

    save_training_state(path, {"step": torch.tensor(3)})


def _save_figure(path: Path) -> None:
    from diffeoprobe.plots import save_figure

    save_figure(_figure(), path)


def _atomic_bytes(path: Path) -> None:
    from diffeoprobe.atomic import atomic_write_bytes

    atomic_write_bytes(path, b"new contents" * 1000)


def _download(path: Path) -> None:
    from diffeoprobe.data.download import download

    source = path.parent / "source.bin"
    source.write_bytes(b"new download" * 1000)
    try:
        download(source.as_uri(), path)
    finally:
        source.unlink()


# (id, file name, writer)
WRITERS: list[tuple[str, str, Callable[[Path], None]]] = [
    ("write_table-parquet", "table.parquet", _write_table),
    ("write_table-csv", "table.csv", _write_table),
    ("results.export", "rows.parquet", _export),
    ("save_weights", "step_1.safetensors", _save_weights),
    ("write_json", "config.json", _write_json),
    ("save_training_state", "state.pt", _save_state),
    ("save_figure", "figure.png", _save_figure),
    ("atomic_write_bytes", "file.bin", _atomic_bytes),
    ("download", "archive.tar.gz", _download),
]


class Stop(Exception):
    """The simulated crash."""


def _fail_in_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up half-way: the temporary file gets some bytes, then the write fails."""
    real = os.fdopen

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = real(fd, *args, **kwargs)
        write = handle.write

        def partial(data: Any) -> int:
            write(data[: max(1, len(data) // 2)])
            raise Stop("no space left on device (simulated)")

        handle.write = partial
        return handle

    monkeypatch.setattr(os, "fdopen", fdopen)


def _fail_in_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    def replace(*args: Any, **kwargs: Any) -> None:
        raise Stop("rename failed (simulated)")

    monkeypatch.setattr(os, "replace", replace)


def _ctrl_c_in_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    def fsync(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", fsync)


STOPS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], type[BaseException]]] = {
    "error-mid-write": (_fail_in_write, Stop),
    "rename-fails": (_fail_in_rename, Stop),
    "ctrl-c-before-rename": (_ctrl_c_in_fsync, KeyboardInterrupt),
}


@pytest.mark.parametrize("stop", sorted(STOPS))
@pytest.mark.parametrize(("name", "writer"), [pytest.param(n, w, id=i) for i, n, w in WRITERS])
def test_an_interrupted_write_leaves_the_old_file(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    name: str,
    writer: Callable[[Path], None],
    stop: str,
) -> None:
    path = tmp_path / name
    writer(path)  # a first, complete version
    (tmp_path / "other.txt").write_text("untouched")
    before = snapshot(tmp_path)
    interrupt, raised = STOPS[stop]
    with monkeypatch.context() as patch:
        interrupt(patch)
        with pytest.raises(raised):
            writer(path)
    assert snapshot(tmp_path) == before, "the old file changed or a temporary file was left"


def test_an_interrupted_first_write_leaves_no_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without an old file, a stopped write leaves nothing (not an empty or partial file)."""
    for _, name, writer in WRITERS:
        with monkeypatch.context() as patch:
            _fail_in_rename(patch)
            with pytest.raises(Stop):
                writer(tmp_path / name)
    assert snapshot(tmp_path) == {}


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from diffeoprobe import atomic

    real = atomic.os.fsync

    def slow_fsync(fd):
        print("writing", flush=True)
        import time
        time.sleep(60)  # killed here: the new bytes are written, not yet renamed
        real(fd)

    atomic.os.fsync = slow_fsync
    atomic.atomic_write_bytes(sys.argv[1], b"new" * 10_000_000)
    """
)


@pytest.mark.slow
def test_a_process_killed_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    """SIGKILL (no cleanup runs) between writing and renaming: the old file is whole; only a
    hidden ``.NAME.*.tmp`` may remain, never a partial file under the real name."""
    path = tmp_path / "table.parquet"
    _write_table(path)
    old = path.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    deadline = time.monotonic() + 60
    assert child.stdout.readline().strip() == b"writing"
    assert time.monotonic() < deadline
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert path.read_bytes() == old
    leftovers = [p.name for p in tmp_path.iterdir() if p != path]
    assert all(n.startswith(".table.parquet.") and n.endswith(".tmp") for n in leftovers)
