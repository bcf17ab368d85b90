"""Atomic files: written to a temporary name in the same directory, then renamed into place.

A crash leaves either the old file or the new one, never a partial one. A leaf module (no torch),
so that the data sets' downloads and the run directories (:mod:`diffeoprobe.runs`) share it.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path

from diffeoprobe.errors import DiffeoProbeError

__all__ = [
    "atomic_write_bytes",
    "check_out_dir",
    "check_out_file",
    "create_temporary",
    "write_or_keep",
]


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


# ---- where a command writes: checked before the work, the result kept when the write fails ----


def check_out_file(path: str | Path, *, flag: str = "--out", suffixes: Sequence[str] = ()) -> Path:
    """A file a command will write at the end (``--out table.parquet``), checked before any work.

    Raises:
        DiffeoProbeError: a suffix not in ``suffixes``, an existing directory, a path under a
            file, or a location this process cannot write in (one line naming ``flag``).
    """
    path = Path(path)
    if path.is_dir():
        example = path / f"out{suffixes[0] if suffixes else ''}"
        raise DiffeoProbeError(
            f"{flag} {str(path)!r} is a directory, where a file is expected; give a file name "
            f"such as {str(example)!r}"
        )
    if suffixes and path.suffix.lower() not in suffixes:
        raise DiffeoProbeError(f"{flag} must end in {' or '.join(suffixes)}, got {str(path)!r}")
    _check_writable(path, flag, "file")
    return path


def check_out_dir(path: str | Path, *, flag: str = "--out") -> Path:
    """A directory a command will write into (created when absent), checked before any work.

    Raises:
        DiffeoProbeError: an existing file, a path under a file, or a location this process cannot
            write in (one line naming ``flag``).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DiffeoProbeError(
            f"{flag} {str(path)!r} is an existing file, where a directory is expected; give a "
            "new or an existing directory"
        )
    _check_writable(path, flag, "directory")
    return path


def _check_writable(path: Path, flag: str, kind: str) -> None:
    """The nearest existing ancestor of ``path`` (``path`` itself for a directory) is a
    directory in which this process can create a file (tried: permissions, read-only mounts,
    root's special file systems).
    """
    target = path if kind == "directory" and path.is_dir() else path.parent
    ancestor = target
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DiffeoProbeError(
            f"{flag} {str(path)!r}: {str(ancestor)!r} is a file, not a directory, so no {kind} "
            "can be made under it"
        )
    if kind == "file" and path.exists() and not os.access(path, os.W_OK):
        raise DiffeoProbeError(f"{flag} {str(path)!r}: the file exists and is not writable")
    try:
        fd, probe = create_temporary(ancestor / "diffeoprobe", ".probe")
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DiffeoProbeError(
            f"{flag} {str(path)!r}: cannot write in {str(ancestor)!r} ({reason})"
        ) from None


def write_or_keep(path: str | Path, data: bytes, *, flag: str = "--out") -> Path:
    """:func:`atomic_write_bytes`, but a failed write (a full disk, a lost mount) keeps ``data``.

    Raises:
        DiffeoProbeError: the write failed; ``data`` was saved to a new file in the system's
            temporary directory, named in the message (or, when that fails too, the message says
            the result is lost).
    """
    path = Path(path)
    try:
        return atomic_write_bytes(path, data)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        try:
            fd, kept = tempfile.mkstemp(prefix=f"diffeoprobe-{path.stem}-", suffix=path.suffix)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except OSError as second:
            raise DiffeoProbeError(
                f"{flag} {str(path)!r}: the result could not be written ({reason}) nor kept in "
                f"the temporary directory ({second.strerror or second}); it is lost"
            ) from None
        raise DiffeoProbeError(
            f"{flag} {str(path)!r}: the result could not be written ({reason}); it is kept in "
            f"{kept}: move it where it belongs"
        ) from None
