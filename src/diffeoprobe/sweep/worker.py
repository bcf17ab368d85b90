"""One run of a sweep, in a worker process: trained under its lock, its record kept in run.json."""

from __future__ import annotations

import os
import signal
import socket
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffeoprobe import runs
from diffeoprobe.config import to_dict
from diffeoprobe.runs import LOCK_NAME, RunLock
from diffeoprobe.sweep.grid import RunSpec
from diffeoprobe.sweep.rundirs import is_complete, run_dir

__all__ = ["execute_run", "now"]

_WORKER_SLOT: int | None = None  # this pool worker's index (set by init_pool_worker)


def init_pool_worker(slots: Any) -> None:
    global _WORKER_SLOT
    _WORKER_SLOT = slots.get()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker inherits the CLI's handler


def _worker_slot() -> int | None:
    """The index of this worker: from the local pool's initializer, or a LocalCluster's name."""
    if _WORKER_SLOT is not None:
        return _WORKER_SLOT
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return None
    return int(name) if str(name).isdigit() else None


def _assign_gpu(spec: RunSpec, gpus: Sequence[str]) -> str:
    """One GPU per worker: ``CUDA_VISIBLE_DEVICES`` set from the worker's index, before CUDA starts.

    Only for cuda runs and only when the driver listed the GPUs (a pool or cluster it started);
    workers of an existing cluster keep the devices their launcher gave them.
    """
    import torch

    slot = _worker_slot()
    if (
        gpus
        and slot is not None
        and str(spec.train.device).startswith("cuda")
        and not torch.cuda.is_initialized()
    ):
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus[slot % len(gpus)])
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def execute_run(
    spec: RunSpec,
    out: str,
    *,
    wait: bool = False,
    threads: int | None = None,
    gpus: Sequence[str] = (),
) -> dict[str, Any]:
    """Train one run under its lock; never raises for a failing run (the outcome says ``failed``).

    Returns a dict with ``id``, ``status`` (``trained``, ``skipped`` when already done, ``busy``
    when another process holds the lock and ``wait`` is false, ``failed``), ``seconds``, ``error``.
    """
    directory = run_dir(out, spec)
    lock = RunLock(directory / LOCK_NAME)
    if not lock.acquire(wait=wait):
        return dict(id=spec.id, status="busy", owner=lock.owner(), seconds=0.0, error="")
    try:
        if is_complete(directory):
            return dict(id=spec.id, status="skipped", seconds=0.0, error="")
        lock.mark_owner()
        for stale in directory.rglob(".*.tmp"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
        return _train_locked(spec, directory, threads, gpus)
    finally:
        lock.release()


def _train_locked(
    spec: RunSpec, directory: Path, threads: int | None, gpus: Sequence[str]
) -> dict[str, Any]:
    import torch

    from diffeoprobe.training import train

    record = _run_record(spec, directory)
    visible = _assign_gpu(spec, gpus)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    attempt = dict(
        host=socket.gethostname(),
        pid=os.getpid(),
        started=now(),
        threads=torch.get_num_threads(),
        cuda_visible_devices=visible,
        resumed_from=next(reversed(runs.completed_checkpoints(directory)), None),
    )
    record["attempts"].append(attempt)
    record["status"] = "running"
    runs.write_json(directory / "run.json", record)
    start = time.perf_counter()
    with open(directory / "log.txt", "a", buffering=1) as log_file:

        def log(message: str) -> None:
            log_file.write(f"{now()} {message}\n")

        log(
            f"attempt {len(record['attempts'])} on {attempt['host']} pid {attempt['pid']}, "
            f"{attempt['threads']} threads, device {spec.train.device}"
            + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible else "")
        )
        try:
            summary = train(spec.train, directory, measure=spec.measure, log=log)
        except Exception as exc:
            seconds = time.perf_counter() - start
            text = traceback.format_exc()
            log(f"failed after {seconds:.1f} s:\n{text}")
            attempt.update(finished=now(), seconds=seconds, status="failed")
            record.update(status="failed", seconds=_total(record))
            runs.write_json(directory / "run.json", record)
            runs.write_json(
                directory / "error.json",
                dict(
                    id=spec.id,
                    type=type(exc).__name__,
                    message=str(exc),
                    traceback=text,
                    attempt=len(record["attempts"]),
                    host=attempt["host"],
                    pid=attempt["pid"],
                    time=now(),
                ),
            )
            return dict(
                id=spec.id, status="failed", seconds=seconds, error=f"{type(exc).__name__}: {exc}"
            )
        finally:
            torch.set_num_threads(previous_threads)
        seconds = time.perf_counter() - start
        log(f"done in {seconds:.1f} s: test error {summary.test_error:.4f}")
    attempt.update(finished=now(), seconds=seconds, status="done")
    record.update(status="done", seconds=_total(record), test_error=summary.test_error)
    runs.write_json(directory / "run.json", record)
    (directory / "error.json").unlink(missing_ok=True)
    return dict(id=spec.id, status="trained", seconds=seconds, error="")


def _run_record(spec: RunSpec, directory: Path) -> dict[str, Any]:
    path = directory / "run.json"
    previous = runs.read_json(path) if path.is_file() else {}
    return dict(
        id=spec.id,
        grid=spec.grid,
        axes=spec.axes,
        config={"train": to_dict(spec.train), "measure": to_dict(spec.measure)},
        versions=runs.versions(),
        status="todo",
        attempts=previous.get("attempts", []),
    )


def _total(record: dict[str, Any]) -> float:
    return float(sum(a.get("seconds", 0.0) for a in record["attempts"]))


def now() -> str:
    """The local time with its offset, as the run records and the journal write it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
