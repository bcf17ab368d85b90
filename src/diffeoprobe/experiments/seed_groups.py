"""The runs of ``reproduce`` on one machine: the seeds of one configuration trained together, the
other runs one by one, in one local process pool.

At the papers' batch of 8 a small net spends most of each step in per-call overhead, so the seeds
of one configuration (same net, task, noise, recipe) are trained as one batched model by
:func:`diffeoprobe.ensemble.train_together`. Groups go first (they are the longest jobs), then the
other runs through :func:`diffeoprobe.sweep.execute_run`, all in one pool so that no worker waits
for another. Each run gets its own directory, exactly as ``train()`` writes it; the sweep that
follows finds the runs finished and records them, and retries any that failed here. Groups the
ensemble cannot train (Adam, augmentation, BatchNorm, ...) are trained seed by seed, and
``--executor dask`` leaves everything to the sweep (a cluster has the workers to train seeds one by
one). ``serial`` trains the groups in this process and leaves the rest to the (serial) sweep.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

from diffeoprobe.config import MeasureConfig, TrainConfig
from diffeoprobe.experiments.common import run_id
from diffeoprobe.experiments.spec import Run
from diffeoprobe.sweep import RunSpec

__all__ = ["seed_groups", "train_seed_groups"]


def seed_groups(runs: Sequence[Run], root: Path) -> list[list[Run]]:
    """The unfinished runs of ``runs`` that differ only in their seed and can be trained together
    (:func:`diffeoprobe.ensemble.batchable`), in groups of two or more, in the order given.
    """
    from diffeoprobe.ensemble import batchable

    groups: dict[str, list[Run]] = {}
    for run in runs:
        if (root / "runs" / run_id(run.config, run.measure) / "done.json").is_file():
            continue
        key = run_id(replace(run.config, seed=0), run.measure)
        groups.setdefault(key, []).append(run)
    out = []
    for members in groups.values():
        if len(members) > 1 and batchable([r.config for r in members]) is None:
            out.append(members)
    return out


def train_seed_groups(
    groups: Sequence[Sequence[Run]],
    root: Path,
    *,
    workers: int,
    threads: int | None,
    singles: Sequence[RunSpec] = (),
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, str]:
    """Train each group together and each of ``singles`` alone, in a pool of ``workers``
    processes (``workers=0``: the groups in this process, no single); returns run id -> error for
    the runs that failed or were busy (the sweep then trains those one by one).
    """
    from diffeoprobe.processes import start_method
    from diffeoprobe.sweep import execute_run

    if not groups:
        return {}
    failed: dict[str, str] = {}
    if workers == 0:
        for group in groups:
            failed.update(_settle(group, _train_group(*_group_args(group, root), threads), log))
        return failed
    context = multiprocessing.get_context(start_method())
    jobs = len(groups) + len(singles)
    with ProcessPoolExecutor(max_workers=min(workers, jobs), mp_context=context) as pool:
        futures: dict[Future[dict[str, Any]], Sequence[Run] | RunSpec] = {
            pool.submit(_train_group, *_group_args(group, root), threads): group for group in groups
        }
        futures |= {
            pool.submit(execute_run, spec, str(root), threads=threads): spec for spec in singles
        }
        for future in as_completed(futures):
            job = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # a dead worker: the sweep retries these runs
                outcome = dict(status="failed", error=f"{type(exc).__name__}: {exc}", seconds=0)
            if isinstance(job, RunSpec):
                log(f"{job.id} {outcome['status']} in {outcome['seconds']:.0f} s")
                if outcome["status"] not in ("trained", "skipped"):
                    failed[job.id] = outcome.get("error", "")
            else:
                failed.update(_settle(job, outcome, log))
    return failed


def _group_args(group: Sequence[Run], root: Path) -> tuple[list, list[str], MeasureConfig]:
    dirs = [str(root / "runs" / run_id(r.config, r.measure)) for r in group]
    return [r.config for r in group], dirs, group[0].measure


def _settle(
    group: Sequence[Run], outcome: dict[str, Any], log: Callable[[str], None]
) -> dict[str, str]:
    label = f"{group[0].describe()} x {len(group)} seeds"
    if outcome["status"] == "done":
        log(f"trained together in {outcome['seconds']:.0f} s: {label}")
        return {}
    log(f"not trained together ({outcome['status']}: {outcome['error']}): {label}")
    return {run_id(r.config, r.measure): outcome["error"] for r in group}


def _train_group(
    configs: list[TrainConfig], dirs: list[str], measure: MeasureConfig, threads: int | None
) -> dict[str, Any]:
    """Worker side: take every member's run lock, train the group, release the locks."""
    import torch

    from diffeoprobe.ensemble import train_together
    from diffeoprobe.runs import LOCK_NAME, RunLock

    if threads:
        torch.set_num_threads(threads)
    locks = []
    try:
        for directory in dirs:
            Path(directory).mkdir(parents=True, exist_ok=True)
            lock = RunLock(Path(directory) / LOCK_NAME)
            if not lock.acquire():
                return dict(status="busy", error=f"{directory} is locked by {lock.owner()}")
            lock.mark_owner()
            locks.append(lock)
        start = time.perf_counter()
        train_together(configs, dirs, measure=measure)
        return dict(status="done", error="", seconds=time.perf_counter() - start)
    except Exception as exc:  # reported to the driver, which leaves these runs to the sweep
        return dict(status="failed", error=f"{type(exc).__name__}: {exc}", seconds=0)
    finally:
        for lock in locks:
            lock.release()
