"""Where a sweep's runs execute: this process, a local process pool, or a Dask cluster.

A back-end wraps a :class:`concurrent.futures.Executor` with what the driver needs around it: how
many runs it takes at once, and how to replace a pool that a dying worker broke.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

from diffeoprobe import processes
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.sweep.worker import init_pool_worker

__all__ = ["EXECUTORS", "Backend", "SerialExecutor", "local_gpus", "open_executor"]

EXECUTORS = ("local", "dask", "serial")


class SerialExecutor(Executor):
    """Runs each call at once in this process (``--executor serial``: debugging, profiling)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Call ``fn`` now; the returned future holds its result or exception."""
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


class Backend:
    """An executor plus what the driver needs around it: capacity and recovery from a broken pool."""

    generation = 0

    def __init__(self, executor: Executor, capacity: float) -> None:
        self.executor, self._capacity = executor, capacity

    def capacity(self) -> float:
        """How many runs may be in flight at once (``inf``: the scheduler queues them)."""
        return self._capacity

    def running(self, in_flight: int) -> int:
        """How many of the ``in_flight`` runs are executing now (for the progress bar)."""
        return int(min(in_flight, self._capacity))

    def describe(self) -> str:
        """What runs the runs, for the sweep's log."""
        return type(self.executor).__name__

    def broken(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the executor itself broke (a worker died), not the run."""
        return False

    def recover(self) -> set[int] | None:
        """Replace a broken executor; the pids of the workers that broke it, None if unknown."""
        return None

    def close(self, *, abort: bool) -> None:
        """Release what the back-end started; ``abort``: the sweep was interrupted, stop runs."""
        return None


class _LocalPool(Backend):
    """``ProcessPoolExecutor`` rebuilt when a worker dies (a BrokenProcessPool)."""

    def __init__(self, workers: int, start_method: str | None = None) -> None:
        self.workers, self.start_method, self.method = workers, start_method, ""
        super().__init__(self._make(), workers)

    def describe(self) -> str:
        return f"a local pool of {self.workers} workers ({self.method})"

    def _make(self) -> Executor:
        from concurrent.futures import ProcessPoolExecutor

        method = self.method = processes.start_method(self.start_method)
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            context.set_forkserver_preload(list(processes.PRELOAD))
        slots = context.SimpleQueue()  # no feeder thread: nothing running while we fork
        for index in range(self.workers):
            slots.put(index)
        executor = ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=init_pool_worker, initargs=(slots,)
        )
        if method == "fork":  # fork every worker now, while this process has one Python thread
            sys.stdout.flush()  # (a copy would write out what is still buffered)
            sys.stderr.flush()
            executor.submit(int)  # with fork, the first submit starts all the workers
        return executor

    def broken(self, exc: BaseException) -> bool:
        from concurrent.futures.process import BrokenProcessPool

        return isinstance(exc, BrokenProcessPool)

    def recover(self) -> set[int] | None:
        """A new pool. The broken one SIGTERMs its other workers, so the workers that died of
        anything else (SIGKILL, the OOM killer, a crash) are the ones that broke it.
        """
        workers = dict(getattr(self.executor, "_processes", None) or {})
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.executor = self._make()
        self.generation += 1
        culprits = {pid for pid, p in workers.items() if p.exitcode != -signal.SIGTERM}
        return culprits or None

    def close(self, *, abort: bool) -> None:
        if abort:  # an interrupted sweep must not wait hours for its runs: they resume later
            terminate = getattr(self.executor, "terminate_workers", None)  # Python >= 3.14
            if terminate is not None:
                terminate()
            for process in list(getattr(self.executor, "_processes", {}).values()):
                process.terminate()
        self.executor.shutdown(wait=True, cancel_futures=True)


class _Dask(Backend):
    """A ``distributed.Client``'s executor: every run submitted at once, the scheduler queues."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._threads, self._checked = 1, 0.0
        super().__init__(client.get_executor(pure=False), math.inf)

    def describe(self) -> str:
        workers = len(self.client.nthreads())
        return f"the Dask cluster at {self.client.scheduler.address} ({workers} workers now)"

    def running(self, in_flight: int) -> int:
        if time.monotonic() - self._checked > 1.0:
            self._threads = sum(self.client.nthreads().values())
            self._checked = time.monotonic()
        return min(in_flight, self._threads)

    def close(self, *, abort: bool) -> None:
        if abort:  # queued runs are dropped; a run already started finishes and records itself
            self.executor.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def open_executor(
    kind: str | Executor,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    capacity: int | None = None,
    start_method: str | None = None,
) -> Iterator[Backend]:
    """The execution back-end for a sweep, closed (cluster, pool and all) on exit.

    Args:
        kind: ``"local"`` (a process pool of ``workers``), ``"dask"`` (the cluster at ``scheduler``,
            or a ``distributed.LocalCluster`` of ``workers`` processes on 127.0.0.1 when
            ``scheduler`` is None), ``"serial"`` (in this process), or any
            :class:`concurrent.futures.Executor` (used as given).
        workers: processes of the local pool or of the LocalCluster (default: one per core).
        scheduler: a Dask scheduler address (``tcp://host:8786``), only with ``"dask"``.
        capacity: runs in flight at once on an executor passed as ``kind`` (default: no limit).
        start_method: how the local pool starts its workers (see
            :func:`~diffeoprobe.sweep.driver.run_sweep`).
    """
    if isinstance(kind, Executor):
        with _closing(Backend(kind, capacity or math.inf)) as backend:
            yield backend
        return
    if kind not in EXECUTORS:
        raise DiffeoProbeError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if scheduler is not None and kind != "dask":
        raise DiffeoProbeError("scheduler: an address is only used with executor 'dask'")
    if kind == "serial":
        yield Backend(SerialExecutor(), 1)
        return
    if kind == "local":
        with _closing(_LocalPool(workers or os.cpu_count() or 1, start_method)) as backend:
            yield backend
        return
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise DiffeoProbeError(
            "executor 'dask' needs dask.distributed: pip install 'diffeoprobe[dask]'"
        ) from None
    with contextlib.ExitStack() as stack:
        if scheduler is None:
            # A fork server already running (the sweep command starts one before it imports
            # torch, see processes.py) is used as it is. Otherwise distributed replaces this
            # preload list with its own (numpy, pandas, ...) when it starts the server, and its
            # workers import torch themselves, in parallel: measured, starting the server here
            # with torch preloaded was slower (5.1 s vs 4.1 s), its one import not overlapping.
            method = processes.start_method()
            if method == "forkserver":
                multiprocessing.get_context(method).set_forkserver_preload(
                    [*processes.PRELOAD, "distributed"]
                )
            stack.enter_context(
                dask.config.set({"distributed.worker.multiprocessing-method": method})
            )
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers or os.cpu_count() or 1,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
            )
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout="30s"))
            except OSError as exc:
                raise DiffeoProbeError(
                    f"scheduler: cannot reach a Dask scheduler at {scheduler!r} ({exc})"
                ) from None
        with _closing(_Dask(client)) as backend:
            yield backend


@contextlib.contextmanager
def _closing(backend: Backend) -> Iterator[Backend]:
    try:
        yield backend
    except BaseException:
        backend.close(abort=True)
        raise
    backend.close(abort=False)


def local_gpus() -> tuple[str, ...]:
    """The GPUs this machine's workers may use: ``CUDA_VISIBLE_DEVICES`` if set, else all."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(d.strip() for d in visible.split(",") if d.strip())
    import torch

    return tuple(str(i) for i in range(torch.cuda.device_count()))
