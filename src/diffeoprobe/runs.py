"""A run directory: its files, written atomically (tables, weights, JSON), and its lock.

Every file is written to a temporary name in the same directory and renamed into place, so a crash
leaves either the old file or the new one, never a partial one; it gets the permissions a plain
``open()`` gives (``0o666`` less the umask), not ``mkstemp``'s 0600. Weights are read with
``safetensors`` (or ``torch.load(weights_only=True)`` for ``.pt``/``.pth``): no arbitrary pickle.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from diffeoprobe.atomic import atomic_write_bytes, write_or_keep
from diffeoprobe.errors import DiffeoProbeError, first_line

__all__ = [
    "LOCK_NAME",
    "TABLE_FORMATS",
    "RunLock",
    "check_table_path",
    "checkpoint_path",
    "completed_checkpoints",
    "load_training_state",
    "load_weights",
    "read_json",
    "read_table",
    "save_training_state",
    "save_weights",
    "versions",
    "write_json",
    "write_table",
]

TABLE_FORMATS = (".parquet", ".csv")
LOCK_NAME = ".lock"  # a run directory's lock file (see RunLock)


def check_table_path(path: str | Path) -> Path:
    """A path ending in .parquet or .csv (checked before any work starts)."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_FORMATS:
        raise DiffeoProbeError(f"--out must end in {' or '.join(TABLE_FORMATS)}, got {str(path)!r}")
    return path


def write_table(table: pd.DataFrame, path: str | Path, *, keep: bool = False) -> Path:
    """Write a result table as Parquet (with ``table.attrs`` as JSON metadata) or CSV, atomically.

    ``keep``: a failed write (full disk) saves the table to a temporary file and raises a
    DiffeoProbeError naming it (:func:`~diffeoprobe.atomic.write_or_keep`), for commands that
    computed it at length.
    """
    path = check_table_path(path)
    buffer = io.BytesIO()
    if path.suffix.lower() == ".csv":
        table.to_csv(buffer, index=False)
    else:
        out = table.copy()
        out.attrs = json.loads(json.dumps(table.attrs, default=str))
        out.to_parquet(buffer, index=False)
    if keep:
        return write_or_keep(path, buffer.getvalue())
    return atomic_write_bytes(path, buffer.getvalue())


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_table`."""
    path = Path(path)
    if not path.is_file():
        raise DiffeoProbeError(f"table {str(path)!r} does not exist")
    try:
        return pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pyarrow / pandas raise many types for a corrupt file
        first = first_line(exc)
        raise DiffeoProbeError(
            f"table {str(path)!r} could not be read ({type(exc).__name__}: {first})"
        ) from None


def save_weights(
    model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Save ``model.state_dict()`` as safetensors, atomically."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return atomic_write_bytes(path, save(state, metadata=metadata))


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights into ``model`` from a ``.safetensors`` file (or ``.pt`` via ``weights_only``).

    Raises:
        DiffeoProbeError: missing or unreadable file, or a state dict that does not fit the model
            (the message names the missing, unexpected and mis-shaped keys).
    """
    path = Path(path)
    if not path.is_file():
        raise DiffeoProbeError(f"checkpoint {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            loaded = _load_tensors(path)
            if isinstance(loaded, dict) and "state_dict" in loaded:
                loaded = loaded["state_dict"]
            state = loaded
    except Exception as exc:
        raise DiffeoProbeError(
            f"checkpoint {str(path)!r} could not be read ({_unreadable(exc)})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DiffeoProbeError(
            f"checkpoint {str(path)!r} does not hold a state dict (names -> tensors)"
        )
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = [
            f"missing keys {_few(missing)}" if missing else "",
            f"unexpected keys {_few(unexpected)}" if unexpected else "",
            f"shape mismatches (checkpoint vs model) {_few(shapes)}" if shapes else "",
        ]
        raise DiffeoProbeError(
            f"checkpoint {str(path)!r} does not fit the model: " + "; ".join(p for p in parts if p)
        )
    model.load_state_dict(state)
    return model


def _load_tensors(path: Path) -> Any:
    """``torch.load(weights_only=True)`` without torch's warnings about the pickle protocol."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def _unreadable(exc: BaseException) -> str:
    """One line on why a weights file could not be read; never torch's advice to load it with
    ``weights_only=False`` (that runs whatever code the file holds).
    """
    import pickle

    if isinstance(exc, pickle.UnpicklingError):
        return (
            "it holds Python objects besides tensors, which are not loaded since unpickling them "
            "can run code; save plain weights: safetensors, or torch.save(model.state_dict())"
        )
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _few(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)} in all)"


# ---- run directories -------------------------------------------------------------------------
# A run directory holds:
#   config.json                      the TrainConfig that made it (a different config is refused)
#   checkpoints/step_XXXXXXXX.safetensors   model weights
#   checkpoints/step_XXXXXXXX.json   metadata: step, epoch, errors, loss, config, versions; written
#                                    LAST, so a checkpoint without its JSON is incomplete and ignored
#   checkpoints/step_XXXXXXXX.resume.pt  optimizer, scheduler and RNG state (newest checkpoint only)
#   measure/step_XXXXXXXX.parquet    the layer-wise table at that checkpoint (with --measure)
#   table.parquet                    all checkpoints' tables, one tidy table (written at the end)
#   done.json                        final metrics; a run with done.json is complete


def versions() -> dict[str, str]:
    """Versions that produced a result (recorded in every metadata file)."""
    import platform

    import numpy

    from diffeoprobe import __version__

    return {
        "diffeoprobe": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def write_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    return atomic_write_bytes(path, (json.dumps(payload, indent=2, default=str) + "\n").encode())


def read_json(path: str | Path) -> dict:
    """Read a JSON file written by :func:`write_json`; a corrupt one is a DiffeoProbeError."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DiffeoProbeError(f"{str(path)!r} could not be read as JSON ({exc})") from exc


def checkpoint_path(run_dir: str | Path, step: int, suffix: str) -> Path:
    """``run_dir/checkpoints/step_00000123<suffix>``."""
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}{suffix}"


def completed_checkpoints(run_dir: str | Path) -> list[int]:
    """Steps whose checkpoint is complete (weights and metadata both written), ascending."""
    folder = Path(run_dir) / "checkpoints"
    steps = []
    for meta in folder.glob("step_*.json") if folder.is_dir() else []:
        step = int(meta.stem.split("_")[1])
        if checkpoint_path(run_dir, step, ".safetensors").is_file():
            steps.append(step)
    return sorted(steps)


def save_training_state(path: str | Path, state: dict) -> Path:
    """Optimizer/scheduler/RNG state (plain tensors and numbers) for resuming, atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_training_state(path: str | Path) -> dict:
    """Read a state written by :func:`save_training_state` with ``weights_only=True``."""
    try:
        state = _load_tensors(Path(path))
    except Exception as exc:
        raise DiffeoProbeError(
            f"training state {str(path)!r} could not be read ({_unreadable(exc)})"
        ) from None
    if not isinstance(state, dict):
        raise DiffeoProbeError(f"training state {str(path)!r} does not hold a dict")
    return state


_HELD: dict[tuple[int, int], tuple[int, int]] = {}  # (st_dev, st_ino) -> (pid, thread) holding it
_HELD_GUARD = threading.Lock()


class RunLock:
    """An exclusive ``fcntl.flock`` on ``runs/<id>/.lock``, held by the process training the run.

    The kernel drops the lock when the process dies, SIGKILL included, so there is no stale lock to
    clean up and no timeout to guess. The file keeps ``host pid`` of the last holder, for messages.
    ``flock`` locks belong to an open file, so a second ``RunLock`` on the same file, in the same
    process, cannot take it: :meth:`held_here` tells code called under the lock (``train()`` in a
    sweep) that its caller, in this thread, holds it already.
    Limits: on NFS, Linux maps ``flock`` to NFS byte-range locks (NFSv4, or NFSv3 with lockd),
    and a client that dies holds its lock until the server's lease expires (~90 s); file systems
    mounted with local-only locks (``nolock``, Lustre ``localflock``, some FUSE/SMB mounts) lock
    per machine only: there, do not start two sweeps on one directory from different machines.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._key: tuple[int, int] = (-1, -1)  # (st_dev, st_ino) of the file, once acquired

    def acquire(self, *, wait: bool = False) -> bool:
        """Take the lock; ``False`` if another process holds it (``wait`` blocks until it is free)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = os.fstat(fd)
        self._key = (info.st_dev, info.st_ino)
        with _HELD_GUARD:
            _HELD[self._key] = (os.getpid(), threading.get_ident())
        return True

    def held_here(self) -> bool:
        """Whether this thread of this process holds the lock (through any ``RunLock`` object).

        A forked child inherits the registry but is another process: it does not count as holding.
        """
        try:
            info = os.stat(self.path)
        except OSError:
            return False
        with _HELD_GUARD:
            holder = _HELD.get((info.st_dev, info.st_ino))
        return holder == (os.getpid(), threading.get_ident())

    def mark_owner(self) -> None:
        """Write ``host pid`` of this process into the lock file (for ``sweep --dry-run``)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)

    def owner(self) -> str:
        """``host pid`` of the last process that trained under this lock ('' if none)."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        """Drop the lock (nothing if not held)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with _HELD_GUARD:  # one holder per file and process: the kernel sees to that
                if _HELD.get(self._key, (None, None))[0] == os.getpid():
                    del _HELD[self._key]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now (takes and drops it when free)."""
        if not self.path.is_file():
            return False
        if self.acquire():
            self.release()
            return False
        return True

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
