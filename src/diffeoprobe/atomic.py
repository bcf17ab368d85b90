"""Atomic files: written to a temporary name in the same directory, then renamed into place.

A crash leaves either the old file or the new one, never a partial one. A leaf module (no torch),
so that the data sets' downloads and the run directories (:mod:`diffeoprobe.runs`) share it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["atomic_write_bytes", "create_temporary"]


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
