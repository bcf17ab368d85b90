"""How a sweep's worker processes start: the start method and multiprocessing's fork server.

This module imports nothing heavy (no torch), so the ``sweep`` command can start the fork server
before it imports torch itself: the server's import of torch and the training code then runs on
another core at the same time as the command's, and every worker forked from it starts with all
of that loaded (measured on 2 cores: a 32-run sweep on a 2-worker LocalCluster, 12.9 s -> 9.1 s).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import threading

from diffeoprobe.errors import DiffeoProbeError

__all__ = [
    "PRELOAD",
    "START_METHODS",
    "start_forkserver",
    "start_method",
]

START_METHODS = ("fork", "forkserver", "spawn")
# what a worker needs before its first run: torch._dynamo is what the first optimizer imports
# lazily (~2 s), pyarrow what the first table write does
PRELOAD = (
    "diffeoprobe.sweep.worker",
    "diffeoprobe.training",
    "diffeoprobe.data",
    "diffeoprobe.models",
    "diffeoprobe.measurement",
    "torch._dynamo",
    "pyarrow.parquet",
)


def start_method(requested: str | None = None) -> str:
    """How worker processes start: ``requested`` where it is available and safe, else
    ``forkserver`` where there is one (a clean server process imports torch and the training code
    once, then forks each worker), else ``spawn``.

    ``fork`` copies this process, imports and all (no start-up cost), but a copy of a process that
    has run multi-threaded torch code hangs in its first parallel region (the OpenMP pool's
    threads are not copied), and a copy made while another Python thread holds a lock inherits it
    held: only a caller that knows its process has run no torch work asks for it (the ``sweep``
    command), and it is refused while this process runs other Python threads.

    Raises:
        DiffeoProbeError: ``requested`` is not one of :data:`START_METHODS`.
    """
    available = multiprocessing.get_all_start_methods()
    if requested is not None and requested not in START_METHODS:
        raise DiffeoProbeError(
            f"start_method must be one of {', '.join(START_METHODS)}, got {requested!r}"
        )
    if requested in available and (requested != "fork" or threading.active_count() == 1):
        return requested
    return "forkserver" if "forkserver" in available else "spawn"


def start_forkserver(extra: tuple[str, ...] = ()) -> bool:
    """Start multiprocessing's fork server now, preloading :data:`PRELOAD` and ``extra`` modules.

    The server imports them in its own process while the caller goes on; workers later started
    with the ``forkserver`` method (a process pool's, or a Dask LocalCluster's nannies') are
    forked from it, loaded. Once running, later preload lists do not change it (Dask's own list
    included). Returns False where the platform has no fork server.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    multiprocessing.get_context("forkserver").set_forkserver_preload([*PRELOAD, *extra])
    multiprocessing.forkserver.ensure_running()
    return True
