"""A sweep whose results live at an fsspec URL: runs are staged on a file system, then published.

Training needs what object stores do not give (a lock per run, renames, checkpoints rewritten as
a run goes), so a sweep with ``out`` a URL (``s3://bucket/sweep``, ``gcs://...``, ``file:///...``)
trains in a *stage* directory on a local or shared file system exactly as a plain sweep does, and
its driver copies each finished run to ``URL/runs/<id>/`` (:class:`Destination`). The copy writes
every file of the run (checkpoints, tables, logs; not the lock) under a temporary name and moves
it into place, ``done.json`` and then ``run.json`` last: a run at the URL with a ``run.json`` is
complete, and a reader (``diffeoprobe results URL``) never sees half a run as finished. Runs
complete at the URL are skipped by a later sweep even from an empty stage; runs interrupted
before they finished continue from the checkpoints in the stage.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.sweep import RUNS_DIR

__all__ = [
    "LAST",
    "SKIPPED",
    "Destination",
    "default_stage",
    "is_url",
]

LAST = ("done.json", "run.json")  # written last, in this order: run.json marks a published run
SKIPPED = (".lock",)  # the lock belongs to the stage


def is_url(out: str | Path) -> bool:
    """Whether ``out`` names an fsspec URL (``scheme://...``) rather than a path."""
    return "://" in str(out)


def default_stage(url: str) -> Path:
    """Where runs for ``url`` are trained when no stage is given: a directory of this user's
    cache named after the URL (``$XDG_CACHE_HOME`` or ``~/.cache``, ``diffeoprobe/stage/<hash>``).
    Workers on other machines need a shared stage (``--stage``).
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "diffeoprobe" / "stage" / hashlib.sha256(url.encode()).hexdigest()[:16]


class Destination:
    """The URL a sweep publishes its finished runs to.

    Raises:
        DiffeoProbeError: fsspec or the URL's file-system driver is missing, or the URL is not
            one fsspec understands (the message names ``out``).
    """

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError:
            raise DiffeoProbeError(
                f"out: {url!r}: writing a sweep to a URL needs fsspec: pip install fsspec"
            ) from None
        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise DiffeoProbeError(f"out: {url!r}: no fsspec file system for it ({exc})") from None
        self.url, self.root = url, root.rstrip("/")

    def complete_runs(self) -> set[str]:
        """Ids of the runs published completely (their ``run.json`` is there)."""
        found = self.fs.glob(f"{self.root}/{RUNS_DIR}/*/run.json")
        return {PurePosixPath(path).parent.name for path in found}

    def publish(self, run_directory: Path) -> int:
        """Copy a finished run's directory to ``URL/runs/<id>/``; returns the number of files.

        Files go up in name order with ``done.json`` and ``run.json`` last; each is written under
        a temporary name and moved into place, so a file at the URL is never partial.
        """
        last = [run_directory / name for name in LAST]
        files = sorted(
            p for p in run_directory.rglob("*") if p.is_file() and _kept(p) and p not in last
        ) + [p for p in last if p.is_file()]
        target = f"{self.root}/{RUNS_DIR}/{run_directory.name}"
        for path in files:
            self._put(path, f"{target}/{path.relative_to(run_directory).as_posix()}")
        return len(files)

    def put_file(self, path: Path, name: str) -> None:
        """Copy one local file to ``URL/name`` (atomically, as :meth:`publish` does)."""
        self._put(path, f"{self.root}/{name}")

    def _put(self, path: Path, remote: str) -> None:
        parent = remote.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        temporary = f"{parent}/.{remote.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            self.fs.put_file(str(path), temporary)
            self.fs.mv(temporary, remote)
        except Exception:
            _remove_quietly(self.fs, temporary)
            raise


def _kept(path: Path) -> bool:
    return path.name not in SKIPPED and not path.name.endswith(".tmp")


def _remove_quietly(fs: Any, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm(path)
    except Exception:
        pass
