"""Sweeps: a grid file becomes runs with deterministic ids, executed on a pool, resumable.

One topic a module: :mod:`~diffeoprobe.sweep.grid` (grid files, run ids),
:mod:`~diffeoprobe.sweep.rundirs` (run directories, their state, the dry-run plan),
:mod:`~diffeoprobe.sweep.worker` (one run in a worker process), :mod:`~diffeoprobe.sweep.executors`
(process pool, Dask, serial), :mod:`~diffeoprobe.sweep.driver` (the loop, worker deaths, the
journal), :mod:`~diffeoprobe.sweep.publish` (copying finished runs to a URL),
:mod:`~diffeoprobe.sweep.results` (queries over finished runs) and
:mod:`~diffeoprobe.sweep.report` (the sweep's HTML report). The names below load on first use, so
that reading results does not import torch.

A grid file (YAML) describes a set of runs once::

    description: scale detection, 2 depths x 2 seeds
    train:                      # fixed TrainConfig values
      model: simplecnn1d
      dataset: scale-detection
      dataset_options: {d: 32, xi: 8, train_size: 128, test_size: 64}
      measure: true
    measure:                    # fixed MeasureConfig values
      probe_size: 32
    axes:                       # the product of these is taken
      model_options.depth: [2, 3]
      seed: [0, 1]
    grids:                      # named sub-grids (optional): each inherits the above, runs = union
      adam: {train: {optimizer: adam, lr: 0.01}}
      sgd:  {axes: {lr: [0.1, 0.05]}}

Keys are paths into the run's two configs: ``seed`` or ``train.seed`` (a TrainConfig field),
``model_options.depth`` (a key of a mapping field), ``measure.delta`` (a MeasureConfig field).
Deeper definitions win: a sub-grid's fixed value replaces an inherited axis on the same path and a
sub-grid's axis replaces an inherited value; mappings (``model_options``) are merged key by key.

Each run is identified by :func:`run_id`, a hash of its two configs, and lives in
``OUT/runs/<id>/``: the directory of :func:`diffeoprobe.training.train` (checkpoints, tables,
``done.json``) plus ``run.json`` (sub-grid, axis values, configs, versions, attempts and timings),
``log.txt`` and, after a failure, ``error.json`` with the traceback.

:func:`run_sweep` hands the runs that are not done to a :class:`concurrent.futures.Executor` (a
local process pool, a Dask cluster, or any executor you pass). A run is trained only by the process
holding its lock (:class:`~diffeoprobe.runs.RunLock`, ``fcntl.flock`` on ``runs/<id>/.lock``),
so sweeps started at once on the same directory never train a configuration twice, and a run whose process died is
resumed from its last checkpoint by whoever takes the lock next.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

RUNS_DIR = "runs"  # OUT/runs/<id>/: one directory per run

_LAZY = {
    "RunSpec": "grid",
    "expand_grid": "grid",
    "load_grid": "grid",
    "run_id": "grid",
    "check_out": "rundirs",
    "is_complete": "rundirs",
    "is_done": "rundirs",
    "plan": "rundirs",
    "resolve_out": "rundirs",
    "run_dir": "rundirs",
    "run_status": "rundirs",
    "execute_run": "worker",
    "EXECUTORS": "executors",
    "SerialExecutor": "executors",
    "open_executor": "executors",
    "SweepResult": "driver",
    "run_sweep": "driver",
}

if TYPE_CHECKING:
    from diffeoprobe.sweep.driver import SweepResult, run_sweep
    from diffeoprobe.sweep.executors import EXECUTORS, SerialExecutor, open_executor
    from diffeoprobe.sweep.grid import RunSpec, expand_grid, load_grid, run_id
    from diffeoprobe.sweep.rundirs import (
        check_out,
        is_complete,
        is_done,
        plan,
        resolve_out,
        run_dir,
        run_status,
    )
    from diffeoprobe.sweep.worker import execute_run


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'diffeoprobe.sweep' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "EXECUTORS",
    "RUNS_DIR",
    "RunSpec",
    "SerialExecutor",
    "SweepResult",
    "check_out",
    "execute_run",
    "expand_grid",
    "is_complete",
    "is_done",
    "load_grid",
    "open_executor",
    "plan",
    "resolve_out",
    "run_dir",
    "run_id",
    "run_status",
    "run_sweep",
]
