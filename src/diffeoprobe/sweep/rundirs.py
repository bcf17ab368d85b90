"""Run directories of a sweep: where a run lives, whether it is done, what a dry run shows.

Each run lives in ``OUT/runs/<id>/``: the directory of :func:`diffeoprobe.training.train` (checkpoints,
tables, ``done.json``) plus ``run.json`` (sub-grid, axis values, configs, versions, attempts and
timings), ``log.txt`` and, after a failure, ``error.json``. The run's lock is
:class:`diffeoprobe.runs.RunLock` on ``runs/<id>/.lock``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffeoprobe import runs
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.runs import LOCK_NAME, RunLock
from diffeoprobe.sweep import RUNS_DIR
from diffeoprobe.sweep.grid import RunSpec, describe
from diffeoprobe.sweep.publish import Destination, default_stage, is_url

__all__ = [
    "check_out",
    "is_complete",
    "is_done",
    "plan",
    "resolve_out",
    "run_dir",
    "run_status",
]


def run_dir(out: str | Path, spec_or_id: RunSpec | str) -> Path:
    """``OUT/runs/<id>``."""
    key = spec_or_id.id if isinstance(spec_or_id, RunSpec) else spec_or_id
    return Path(out) / RUNS_DIR / key


def is_done(directory: Path) -> bool:
    """A run's results are final when train() has written its ``done.json`` (its last file)."""
    return (directory / "done.json").is_file()


def is_complete(directory: Path) -> bool:
    """Done, and its ``run.json`` says so (written after ``done.json``): nothing left to do.

    A sweep killed between the two files leaves a run that is done but not complete; the next
    sweep completes it (train() returns at once, the record is written) without training.
    """
    path = directory / "run.json"
    return is_done(directory) and path.is_file() and runs.read_json(path).get("status") == "done"


def run_status(directory: Path) -> str:
    """``done``, ``running`` (locked by a live process), ``failed``, ``partial`` or ``todo``."""
    if is_done(directory):
        return "done"
    if RunLock(directory / LOCK_NAME).held_elsewhere():
        return "running"
    if (directory / "error.json").is_file():
        return "failed"
    return "partial" if runs.completed_checkpoints(directory) else "todo"


def check_out(out: str | Path) -> Path:
    """``out`` as a Path, refused when it is a URL or an existing file (a sweep needs a directory
    on a local or shared file system: locks, renames).
    """
    if "://" in str(out):
        raise DiffeoProbeError(
            f"out: {str(out)!r}: a sweep runs on a local or shared file system, not a URL "
            "(copy the finished directory there; `results` and `report` read URLs)"
        )
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise DiffeoProbeError(f"out: {str(root)!r} exists and is not a directory")
    return root


def resolve_out(
    out: str | Path, stage: str | Path | None = None
) -> tuple[Path, Destination | None]:
    """The directory runs are trained in, and where they are published when ``out`` is a URL.

    ``out`` a path: runs live there (``stage`` must be None). ``out`` an fsspec URL: runs are
    trained in ``stage`` (default :func:`diffeoprobe.sweep.publish.default_stage`) and published to the
    URL when they finish (:mod:`diffeoprobe.sweep.publish`).
    """
    if not is_url(out):
        if stage is not None:
            raise DiffeoProbeError(
                f"stage: {str(stage)!r}: a stage is only used when out is a URL "
                f"(out is the path {str(out)!r}, where runs are trained)"
            )
        return check_out(out), None
    destination = Destination(str(out))
    if stage is not None and is_url(stage):
        raise DiffeoProbeError(
            f"stage: {str(stage)!r} must be a directory on a local or shared file system"
        )
    return check_out(stage if stage is not None else default_stage(str(out))), destination


def plan(
    specs: Sequence[RunSpec], out: str | Path, stage: str | Path | None = None
) -> list[dict[str, Any]]:
    """One row per run: id, sub-grid, axis values, status and last checkpoint (for --dry-run).

    With ``out`` a URL, a run published there is ``done``; the others are looked up in the stage.
    """
    root, destination = resolve_out(out, stage)
    published = destination.complete_runs() if destination is not None else set()
    rows = []
    for spec in specs:
        directory = run_dir(root, spec)
        if spec.id in published:
            status = "done"
        else:
            status = run_status(directory) if directory.is_dir() else "todo"
        steps = runs.completed_checkpoints(directory) if status != "todo" else []
        rows.append(
            dict(
                id=spec.id,
                grid=spec.grid,
                axes=describe(spec.axes),
                status=status,
                checkpoint=steps[-1] if steps else None,
            )
        )
    return rows
