"""The sweep's driver: hands the runs that are not done to a back-end, settles each outcome.

Failures are recorded, not raised; a run whose worker process died is handled by
:class:`WorkerDeaths`; ``OUT/sweep.log`` keeps one line per event.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffeoprobe import processes, runs
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.runs import LOCK_NAME, RunLock
from diffeoprobe.sweep import RUNS_DIR
from diffeoprobe.sweep.executors import EXECUTORS, local_gpus, open_executor
from diffeoprobe.sweep.grid import RunSpec, describe
from diffeoprobe.sweep.publish import Destination
from diffeoprobe.sweep.rundirs import is_complete, resolve_out, run_dir
from diffeoprobe.sweep.worker import execute_run, now

__all__ = ["MAX_LOST", "SweepResult", "WorkerDeaths", "run_sweep"]

POLL_SECONDS = 0.2  # how often the driver wakes up to refresh the progress bar
MAX_LOST = 3  # a run whose worker process dies this many times is recorded as failed
_IDLE_DEATHS = (
    "the pool's worker processes died {n} times in a row before any of them started a run "
    "(their error output is above). From a Python script, call run_sweep / reproduce under "
    "`if __name__ == '__main__':` (workers import the script's module); the sweep resumes "
    "where it stopped"
)


@dataclass
class SweepResult:
    """What a sweep did: ids trained now, already done (before or by another sweep), failed."""

    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # id -> last error
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No run failed."""
        return not self.failed


def run_sweep(
    specs: Sequence[RunSpec],
    out: str | Path,
    *,
    executor: str | Executor = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    retries: int = 0,
    progress: bool = False,
    log: Callable[[str], None] = lambda message: None,
    start_method: str | None = None,
    stage: str | Path | None = None,
) -> SweepResult:
    """Run every spec that is not done in ``out/runs/<id>/``; failures are recorded, not raised.

    Args:
        specs: the runs (:func:`load_grid`).
        out: the sweep directory (a local or shared file system path), or an fsspec URL
            (``s3://bucket/sweep``): runs are then trained in ``stage`` and each is copied to the
            URL when it finishes (:mod:`diffeoprobe.sweep.publish`).
        executor: ``"local"``, ``"dask"``, ``"serial"`` or a :class:`concurrent.futures.Executor`.
        scheduler: a Dask scheduler address (``tcp://host:8786``) for ``executor="dask"``.
        workers: processes of the local pool or of the LocalCluster started for ``"dask"``
            (default: one per GPU when the runs use CUDA and GPUs are visible, else one per core).
        threads: torch threads per run (default: cores / workers for the local pool; the worker's
            setting elsewhere). Float sums depend on it: equal threads give bit-identical tables.
        retries: a failing run is tried again this many times.
        progress: show a progress bar (done / failed / running, ETA) on stderr.
        log: called with one line per finished, failed or retried run.
        start_method: how the local pool starts its workers: ``"forkserver"`` (the default: a
            server process imports the training code once and forks each worker; safe from any
            process), ``"fork"`` (copies of this process: no start-up at all, but only for a
            process that has run no multi-threaded torch code, like the ``sweep`` command's),
            ``"spawn"``.
        stage: where runs are trained when ``out`` is a URL (a local or shared directory;
            default: this user's cache, see :func:`diffeoprobe.sweep.publish.default_stage`). Workers
            on other machines need a stage they all see.

    Raises:
        DiffeoProbeError: a bad executor, scheduler, ``workers``, ``threads``, ``retries``,
            ``out`` or ``stage``.
    """
    _check_arguments(executor, scheduler, workers, threads, retries, start_method)
    start = time.perf_counter()
    root, destination = resolve_out(out, stage)
    published = destination.complete_runs() if destination is not None else set()
    complete = {s.id for s in specs if s.id in published or is_complete(run_dir(root, s))}
    result = SweepResult(skipped=[s.id for s in specs if s.id in complete])
    todo = [s for s in specs if s.id not in complete]
    _check_satisfiable(todo, executor, scheduler)  # before anything is written
    try:
        (root / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = "stage" if destination is not None else "out"
        raise DiffeoProbeError(f"{where}: cannot create {str(root / RUNS_DIR)!r} ({exc})") from None
    gpus, workers, threads, start_method = _resources(
        todo, executor, scheduler, workers, threads, start_method
    )
    journal = _Journal(root / "sweep.log", log)
    journal(
        f"sweep of {len(specs)} runs: {len(result.skipped)} done already, {len(todo)} to run "
        f"(executor {executor if isinstance(executor, str) else type(executor).__name__})"
    )
    driver = _Driver(root, retries, journal, result, deque((s, False) for s in todo), destination)
    for spec in specs:  # finished in the stage by an earlier sweep, not yet at the URL
        if destination is not None and spec.id in complete and spec.id not in published:
            driver.publish(spec)
    if not todo:
        result.seconds = time.perf_counter() - start
        driver.publish_log()
        return result
    in_flight: dict[Future, tuple[RunSpec, bool, int]] = {}
    deaths = WorkerDeaths()
    with (
        open_executor(
            executor, workers=workers, scheduler=scheduler, start_method=start_method
        ) as backend,
        _SweepProgress(progress, len(todo)) as bar,
    ):
        journal(f"runs go to {backend.describe()}")
        try:
            while driver.queue or in_flight:
                while driver.queue and len(in_flight) < backend.capacity():
                    spec, wait_for_lock = driver.queue.popleft()
                    future = backend.executor.submit(
                        execute_run, spec, str(root), wait=wait_for_lock, threads=threads, gpus=gpus
                    )
                    in_flight[future] = (spec, wait_for_lock, backend.generation)
                finished, _ = wait(list(in_flight), POLL_SECONDS, FIRST_COMPLETED)
                for future in finished:
                    spec, wait_for_lock, generation = in_flight.pop(future)
                    try:
                        driver.settle(spec, future.result())
                        deaths.run_returned()
                    except Exception as exc:  # the worker died (SIGKILL, OOM, a lost node)
                        if backend.broken(exc) and generation == backend.generation:
                            journal(f"a worker process died ({exc!r}); restarting the pool")
                            deaths.pool_broke(generation, backend.recover())
                        holder = RunLock(run_dir(root, spec) / LOCK_NAME).owner().split()
                        pid = int(holder[-1]) if holder and holder[-1].isdigit() else None
                        charged = deaths.charge(spec.id, pid, generation)
                        driver.lost(spec, wait_for_lock, exc, charged, deaths.losses[spec.id])
                        pending = any(g == generation for _, _, g in in_flight.values())
                        deaths.accounted(generation, pending=pending)
                done = len(result.trained) + len(result.skipped) - (len(specs) - len(todo))
                bar.update(done, driver.settled_failures(), backend.running(len(in_flight)))
        except BaseException as exc:  # Ctrl-C, SIGTERM: queued runs are dropped
            for future in in_flight:
                future.cancel()
            journal(f"sweep interrupted ({type(exc).__name__}); a rerun resumes its runs")
            raise
    result.seconds = time.perf_counter() - start
    journal(
        f"sweep finished in {result.seconds:.1f} s: {len(result.trained)} trained, "
        f"{len(result.skipped)} already done, {len(result.failed)} failed"
    )
    driver.publish_log()
    return result


def _resources(
    todo: Sequence[RunSpec],
    executor: str | Executor,
    scheduler: str | None,
    workers: int | None,
    threads: int | None,
    start_method: str | None,
) -> tuple[tuple[str, ...], int | None, int | None, str | None]:
    """The GPUs the workers this driver starts share out, and the workers, threads and start
    method that follow: one worker per GPU for cuda runs, cores / workers threads each (local).
    """
    uses_cuda = any(str(s.train.device).startswith("cuda") for s in todo)
    starts_workers = executor in ("local", "dask") and scheduler is None  # on this machine
    gpus = local_gpus() if uses_cuda and starts_workers else ()
    if uses_cuda and start_method == "fork":
        start_method = None  # this process may have started CUDA (counting GPUs): no copies of it
    if workers is None and gpus:
        workers = len(gpus)
    if threads is None and executor == "local":
        threads = max(1, (os.cpu_count() or 1) // (workers or os.cpu_count() or 1))
    return gpus, workers, threads, start_method


def _check_satisfiable(
    todo: Sequence[RunSpec], executor: str | Executor, scheduler: str | None
) -> None:
    """Refuse, once and before any worker starts, settings none of the runs can have here: CUDA
    on a machine without it (when the workers are this machine's), a data set whose files are
    absent with ``download`` off. Otherwise each run would fail on its own, one by one.
    """
    local = executor in ("local", "serial") or (executor == "dask" and scheduler is None)
    cuda = [s for s in todo if str(s.train.device).startswith("cuda")]
    if cuda and local:
        import torch

        if not torch.cuda.is_available():
            raise DiffeoProbeError(
                f"device: {len(cuda)} of the {len(todo)} runs to do ask for "
                f"{str(cuda[0].train.device)!r} (e.g. run {cuda[0].id}), but CUDA is not "
                "available on this machine, where the workers run; set device: cpu in the grid, "
                "or use --executor dask --scheduler ADDRESS with GPU workers"
            )
    if not local:
        return  # other machines may hold the files
    from diffeoprobe.data import missing_files

    seen: set[tuple[str, str]] = set()
    for spec in todo:
        options = spec.train.dataset_options
        key = (spec.train.dataset, str(spec.train.data_dir))
        if options.get("download") is True or key in seen:
            continue
        seen.add(key)
        problem = missing_files(spec.train.dataset, spec.train.data_dir)
        if problem is not None:
            users = sum(
                1
                for s in todo
                if (s.train.dataset, str(s.train.data_dir)) == key
                and s.train.dataset_options.get("download") is not True
            )
            raise DiffeoProbeError(f"{problem} ({users} of the {len(todo)} runs to do need it)")


def _check_arguments(
    executor: str | Executor,
    scheduler: str | None,
    workers: int | None,
    threads: int | None,
    retries: int,
    start_method: str | None,
) -> None:
    """:func:`run_sweep`'s arguments, refused before anything is written."""
    from diffeoprobe.validate import check_int

    check_int(retries, "retries", minimum=0)
    if workers is not None:
        check_int(workers, "workers", minimum=1)
    if threads is not None:
        check_int(threads, "threads", minimum=1)
    processes.start_method(start_method)
    if isinstance(executor, str) and executor not in EXECUTORS:
        raise DiffeoProbeError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if scheduler is not None and executor != "dask":
        raise DiffeoProbeError("scheduler: an address is only used with executor 'dask'")


@dataclass
class _Driver:
    """The sweep's book-keeping: what to submit next and what each outcome means."""

    root: Path
    retries: int
    journal: Callable[[str], None]
    result: SweepResult
    queue: deque[tuple[RunSpec, bool]]  # (run, wait for its lock)
    destination: Destination | None = None  # the URL finished runs are copied to
    attempts: Counter[str] = field(default_factory=Counter)  # failed attempts per run

    def publish(self, spec: RunSpec) -> None:
        """Copy a finished run to the URL; a failed copy fails the run (a rerun copies it)."""
        if self.destination is None:
            return
        try:
            self.destination.publish(run_dir(self.root, spec))
        except Exception as exc:  # a network or permission error: the run stays in the stage
            message = f"publishing to {self.destination.url} failed: {exc!r}"
            self.result.failed[spec.id] = message
            for ids in (self.result.trained, self.result.skipped):
                if spec.id in ids:
                    ids.remove(spec.id)
            self.journal(f"{spec.id} {message}; a rerun publishes it from {self.root}")

    def publish_log(self) -> None:
        """Copy ``sweep.log`` next to the runs at the URL (best effort)."""
        if self.destination is not None:
            try:
                self.destination.put_file(self.root / "sweep.log", "sweep.log")
            except Exception as exc:
                self.journal(f"sweep.log not copied to {self.destination.url}: {exc!r}")

    def settle(self, spec: RunSpec, outcome: dict[str, Any]) -> None:
        status = outcome["status"]
        if status == "busy":  # another sweep trains it: come back at the end and wait
            self.journal(f"{spec.id} is being trained by {outcome['owner'] or 'another process'}")
            self.queue.append((spec, True))
        elif status == "skipped":
            self.result.skipped.append(spec.id)
            self.journal(f"{spec.id} was finished by another process")
            self.publish(spec)
        elif status == "trained":
            self.result.trained.append(spec.id)
            self.result.failed.pop(spec.id, None)
            self.journal(f"{spec.id} done in {outcome['seconds']:.1f} s ({describe(spec.axes)})")
            self.publish(spec)
        else:
            self.attempts[spec.id] += 1
            self.result.failed[spec.id] = outcome["error"]
            if self.attempts[spec.id] <= self.retries:
                self.journal(
                    f"{spec.id} failed ({outcome['error']}); retry {self.attempts[spec.id]} of {self.retries}"
                )
                self.queue.append((spec, False))
            else:
                where = run_dir(self.root, spec) / "error.json"
                self.journal(f"{spec.id} failed: {outcome['error']} (traceback in {where})")

    def lost(
        self, spec: RunSpec, wait_for_lock: bool, exc: Exception, charged: bool, deaths: int
    ) -> None:
        """The run's worker died (see :class:`WorkerDeaths`): tried again first, or recorded as
        failed once ``deaths`` charged to it reach MAX_LOST.
        """
        if not charged or deaths < MAX_LOST:
            self.queue.appendleft((spec, wait_for_lock))
            return
        message = f"its worker process died ({deaths} of {MAX_LOST} deaths allowed; last: {exc!r})"
        _record_lost(run_dir(self.root, spec), spec, message)
        self.result.failed[spec.id] = message
        self.journal(f"{spec.id} failed: {message}")

    def settled_failures(self) -> int:
        queued = {spec.id for spec, _ in self.queue}
        return sum(1 for key in self.result.failed if key not in queued)


@dataclass
class WorkerDeaths:
    """The rule for runs whose worker process died (SIGKILL, the OOM killer, a lost node).

    A death counts against a run when its worker is one of the culprits of the pool's break (the
    workers that did not exit by the broken pool's own SIGTERM), or when the culprits are unknown
    (a Dask worker lost, an executor that cannot tell). A run stopped only because another worker
    died is tried again for free. A run charged ``MAX_LOST`` deaths is recorded as failed; before
    that it goes back to the front of the queue. ``MAX_LOST`` pool breaks in a row that charge no
    run (workers dying as they start, a script without ``if __name__ == "__main__":``) stop the
    sweep with that explanation, rather than restarting the pool for ever.
    """

    losses: Counter[str] = field(default_factory=Counter)  # deaths charged to each run
    culprits: dict[int, set[int] | None] = field(default_factory=dict)  # broken pool -> pids
    charged: dict[int, bool] = field(default_factory=dict)  # broken pool -> charged to a run
    idle_breaks: int = 0  # pool breaks in a row that no run caused

    def pool_broke(self, generation: int, culprits: set[int] | None) -> None:
        """The pool of ``generation`` broke; ``culprits``: the pids that broke it (None: unknown)."""
        self.culprits[generation] = culprits

    def charge(self, run: str, pid: int | None, generation: int) -> bool:
        """Whether the death of ``run``'s worker (``pid``, from its lock file) counts against it;
        counted when it does.
        """
        culprits = self.culprits.get(generation)
        charged = culprits is None or pid in culprits
        if charged:
            self.losses[run] += 1
        self.charged[generation] = self.charged.get(generation, False) or charged
        return charged

    def accounted(self, generation: int, *, pending: bool) -> None:
        """After a lost run of ``generation``: once no run of that broken pool is ``pending``,
        count the break as idle if it charged no run; raise after ``MAX_LOST`` in a row.
        """
        if generation not in self.culprits or pending:
            return
        self.idle_breaks = 0 if self.charged.get(generation) else self.idle_breaks + 1
        if self.idle_breaks >= MAX_LOST:
            raise DiffeoProbeError(_IDLE_DEATHS.format(n=self.idle_breaks))

    def run_returned(self) -> None:
        """A run came back from its worker (whatever its outcome): workers do start."""
        self.idle_breaks = 0


def _record_lost(directory: Path, spec: RunSpec, message: str) -> None:
    runs.write_json(
        directory / "error.json",
        dict(id=spec.id, type="WorkerDied", message=message, traceback="", time=now()),
    )


class _Journal:
    """``OUT/sweep.log`` (appended, one line per event, safe for concurrent sweeps) and ``log``."""

    def __init__(self, path: Path, log: Callable[[str], None]) -> None:
        self.path, self.log = path, log
        self.tag = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, message: str) -> None:
        line = f"{now()} [{self.tag}] {message}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())  # one write with O_APPEND: lines of two sweeps don't mix
        finally:
            os.close(fd)
        self.log(message)


class _SweepProgress:
    """One rich progress bar: runs done of the total, failed, running, elapsed, ETA."""

    def __init__(self, enabled: bool, total: int) -> None:
        self._progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("sweep"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("failed {task.fields[failed]}  running {task.fields[running]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._task = self._progress.add_task("sweep", total=total, failed=0, running=0)

    def __enter__(self) -> _SweepProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, done: int, failed: int, running: int) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=done + failed, failed=failed, running=running
            )
