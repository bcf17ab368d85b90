"""Fetching data set files: a streamed, checksum-verified, atomic download with urllib.

Nothing is downloaded unless asked for (``download=True`` on a data set, ``-d download=true``
on the command line); a data set whose files are missing says which files to put where instead.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from diffeoprobe import __version__
from diffeoprobe.errors import DiffeoProbeError

__all__ = ["DATA_CACHE", "RemoteFile", "download", "fetch", "missing_files_error"]

#: Default home of downloaded data sets; each lives in ``DATA_CACHE / <name>``.
DATA_CACHE = Path("~/.cache/diffeoprobe")

_CHUNK = 1 << 20  # bytes read per network call
_TIMEOUT = 60.0  # seconds without progress before a download is abandoned
# Some dataset hosts refuse urllib's default agent; say who we are instead.
_HEADERS = {"User-Agent": f"diffeoprobe/{__version__} (+urllib)"}


@dataclass(frozen=True)
class RemoteFile:
    """One official file of a data set: its name in ``data_dir``, where to get it, its md5.

    ``urls`` lists the official address first and mirrors after it; :func:`fetch` tries them in order.
    """

    name: str
    urls: tuple[str, ...]
    md5: str


def download(
    url: str | Sequence[str],
    path: str | Path,
    md5: str | None = None,
    sha256: str | None = None,
) -> Path:
    """Download ``url`` to ``path``, verifying its checksum, so that ``path`` never holds a partial file.

    The body is streamed to a temporary file in the directory of ``path`` while being hashed, flushed
    to disk, checked against ``md5`` / ``sha256`` and only then renamed onto ``path``; on any failure
    the temporary file is removed and ``path`` is left as it was.

    Args:
        url: the address (``https://``, ``http://``, ``file://``, ...), or a sequence of addresses
            tried in order until one succeeds (an official site and its mirrors).
        path: where the file ends up; its directory is created if needed.
        md5: expected hex md5 of the file, or ``None`` not to check it.
        sha256: expected hex sha256 of the file, or ``None`` not to check it.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DiffeoProbeError: every address failed (the message gives each reason and says to put the file
            at ``path`` by hand), or the download does not match a checksum (expected and actual).

    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     source = pathlib.Path(tmp) / "source.bin"
    ...     _ = source.write_bytes(b"abc")
    ...     out = download(source.as_uri(), pathlib.Path(tmp) / "copy.bin",
    ...                    md5="900150983cd24fb0d6963f7d28e17f72")
    ...     out.read_bytes()
    b'abc'
    """
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise DiffeoProbeError(f"download of {path}: url must name at least one address, got none")
    path = Path(path).expanduser()
    expected = {name: value.lower() for name, value in (("md5", md5), ("sha256", sha256)) if value}
    failures = []
    for address in urls:
        try:
            return _download_one(address, path, expected)
        except DiffeoProbeError:
            raise
        except (OSError, ValueError) as err:  # URLError is an OSError; a bad scheme a ValueError
            failures.append(f"{address}: {_reason(err)}")
    raise DiffeoProbeError(
        f"cannot download {path.name} ({'; '.join(failures)}); download it by hand (from any of "
        f"these addresses) and put it at {path}"
    )


def _download_one(url: str, path: Path, expected: dict[str, str]) -> Path:
    """Stream one address into a temporary file next to ``path``; rename it once it checks out."""
    from diffeoprobe.atomic import create_temporary

    request = urllib.request.Request(url, headers=_HEADERS)
    path.parent.mkdir(parents=True, exist_ok=True)
    digests = {name: hashlib.new(name) for name in expected}
    fd, tmp = create_temporary(path, ".part")  # the mode open() gives, not mkstemp's 0600
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=_TIMEOUT) as body:
            while chunk := body.read(_CHUNK):
                out.write(chunk)
                for digest in digests.values():
                    digest.update(chunk)
            out.flush()
            os.fsync(out.fileno())
        for name, digest in digests.items():
            if digest.hexdigest() != expected[name]:
                raise DiffeoProbeError(
                    f"checksum mismatch for {url}: {name} should be {expected[name]}, the download "
                    f"has {digest.hexdigest()}; it was not kept. Retry, or download the file by hand "
                    f"and put it at {path}"
                )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _reason(err: BaseException) -> str:
    """The useful part of a urllib error (``HTTP Error 404: Not Found``, ``Connection refused``)."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP error {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def missing_files_error(
    dataset: str, directory: Path, files: Sequence[RemoteFile], *, note: str = ""
) -> DiffeoProbeError:
    """The error for absent files: which to put where, from where, and that download fetches them."""
    wanted = "; ".join(f"{f.name} from {f.urls[0]} (md5 {f.md5})" for f in files)
    where = "" if directory.is_dir() else f" (the directory {directory} does not exist)"
    extra = f"; {note}" if note else ""
    return DiffeoProbeError(
        f"dataset {dataset!r}: missing file(s) in {directory}{where}: put there {wanted}, or pass "
        f"download=True (command line: -d download=true) to fetch them{extra}"
    )


def fetch(directory: Path, files: Sequence[RemoteFile]) -> None:
    """Download each of ``files`` into ``directory``, trying its official address then mirrors."""
    for remote in files:
        download(remote.urls, directory / remote.name, md5=remote.md5)
