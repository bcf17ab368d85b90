"""Files: atomic writes, result tables, model weights. With cli.py, the only module that writes.

Every file is written to a temporary name in the same directory and renamed into place, so a crash
leaves either the old file or the new one, never a partial one; it gets the permissions a plain
``open()`` gives (``0o666`` less the umask), not ``mkstemp``'s 0600. Weights are read with
``safetensors`` (or ``torch.load(weights_only=True)`` for ``.pt``/``.pth``): no arbitrary pickle.
"""

from __future__ import annotations

import io
import json
import os
import secrets
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from diffeoprobe.errors import DiffeoProbeError

TABLE_FORMATS = (".parquet", ".csv")


def create_temporary(path: str | Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new, empty file ``.NAME.XXXXXXXX<suffix>`` next to ``path``, open for writing.

    Unlike :func:`tempfile.mkstemp` (always 0600), the file is created with mode ``0o666`` and the
    kernel applies the process umask (and a default ACL), so once renamed over ``path`` it has the
    permissions a plain ``open(path, "w")`` would have given it: a sweep on a shared file system
    stays readable to the group when the umask says so. ``O_EXCL``: never an existing file or link.

    Returns:
        The file descriptor (the caller closes it) and the file's path.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {str(path)!r}")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename).

    The file gets the mode a plain ``open()`` gives a new file (``0o666`` less the umask), also
    when it replaces an existing one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temporary(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_table_path(path: str | Path) -> Path:
    """A path ending in .parquet or .csv (checked before any work starts)."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_FORMATS:
        raise DiffeoProbeError(f"--out must end in {' or '.join(TABLE_FORMATS)}, got {str(path)!r}")
    return path


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a result table as Parquet (with ``table.attrs`` as JSON metadata) or CSV, atomically."""
    path = check_table_path(path)
    buffer = io.BytesIO()
    if path.suffix.lower() == ".csv":
        table.to_csv(buffer, index=False)
    else:
        out = table.copy()
        out.attrs = json.loads(json.dumps(table.attrs, default=str))
        out.to_parquet(buffer, index=False)
    return atomic_write_bytes(path, buffer.getvalue())


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_table`."""
    path = Path(path)
    if not path.is_file():
        raise DiffeoProbeError(f"table {str(path)!r} does not exist")
    return pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)


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
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
    except Exception as exc:
        raise DiffeoProbeError(
            f"checkpoint {str(path)!r} could not be read ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(state, dict):
        raise DiffeoProbeError(f"checkpoint {str(path)!r} does not hold a state dict")
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
    except (OSError, json.JSONDecodeError) as exc:
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
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DiffeoProbeError(f"training state {str(path)!r} could not be read ({exc})") from exc
