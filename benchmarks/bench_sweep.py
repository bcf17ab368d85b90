"""Overhead and scaling of ``diffeoprobe sweep`` against the same training calls in plain loops.

A *trivial run* is a real ``dp.train`` call: SimpleCNN-1D (depth 2, width 8) on 128 points of the
1D scale-detection task (d = 32), 1 epoch of batch 32, measured (P = 32) at its 3 checkpoints, its
run directory written (weights, resume state, tables, JSON): about 0.2 s of work once warm.

- Overhead: 32 trivial runs through the sweep command (a real ``python`` process: grid file
  parsing and validation, the pool or LocalCluster start-up, locks, run records, logs, shutdown)
  against the same 32 ``train`` calls in plain ``for`` loops, one fresh ``python`` process per
  worker started at once with its share of the runs (process start-up, imports and exit counted
  on both sides), at the same parallelism and torch threads. Targets (issue 6): local pool within
  1.2x, 2-worker LocalCluster within 1.5x.
- Scaling: 8 CPU-bound runs (SimpleCNN-1D depth 4, width 64, 1024 points of d = 64, 24 epochs:
  about 3 s each on one thread) on the local pool with 2 workers against 1 worker; about 0.5 on an
  idle machine with 2 free cores.

Timings are medians of interleaved repeats (both sides see the same machine load).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from diffeoprobe.config import to_dict
from diffeoprobe.sweep import expand_grid

PLAIN_LOOP = """
import json, sys, torch
from diffeoprobe.config import MeasureConfig, TrainConfig
from diffeoprobe.training import train
torch.set_num_threads(int(sys.argv[2]))
for item in json.load(open(sys.argv[1])):
    train(TrainConfig(**item["train"]), item["out"], measure=MeasureConfig(**item["measure"]))
"""
TRIVIAL = {
    "model": "simplecnn1d",
    "model_options": {"depth": 2, "width": 8},
    "dataset": "scale-detection",
    "dataset_options": {"d": 32, "xi": 8, "train_size": 128, "test_size": 64},
    "epochs": 1,
    "batch_size": 32,
    "optimizer": "adam",
    "lr": 0.01,
    "weight_decay": 0.0,
    "loss": "hinge",
    "checkpoints": 2,
    "measure": True,
}
CPU_BOUND = {  # about 3 s of training on one thread
    **TRIVIAL,
    "model_options": {"depth": 4, "width": 64},
    "dataset_options": {"d": 64, "xi": 16, "train_size": 1024, "test_size": 64},
    "epochs": 24,
    "checkpoints": 0,
    "measure": False,
}


def grid(train: dict, runs: int) -> dict:
    """A grid file's contents: ``train`` fixed, ``runs`` seeds."""
    return {"train": train, "measure": {"probe_size": 32}, "axes": {"seed": list(range(runs))}}


def timed(command: list[str]) -> float:
    """Wall seconds of a command run to its end (an error if it fails)."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def sweep_seconds(grid_file: Path, out: Path, executor: str, workers: int, threads: int) -> float:
    """Wall seconds of ``python -m diffeoprobe sweep`` on a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "diffeoprobe", "sweep", str(grid_file), "--out", str(out)]
    command += ["--executor", executor, "--workers", str(workers), "--threads", str(threads)]
    return timed(command)


def plain_seconds(specs: list, out: Path, workers: int, threads: int) -> float:
    """``workers`` fresh processes started at once, each looping over its share of the runs."""
    shutil.rmtree(out, ignore_errors=True)
    shares = []
    for index in range(workers):
        items = [
            {"train": to_dict(s.train), "measure": to_dict(s.measure), "out": str(out / s.id)}
            for s in specs[index::workers]
        ]
        path = out.parent / f"{out.name}-share{index}.json"
        path.write_text(json.dumps(items))
        shares.append(path)
    start = time.perf_counter()
    processes = [
        subprocess.Popen([sys.executable, "-c", PLAIN_LOOP, str(p), str(threads)]) for p in shares
    ]
    if any(p.wait() != 0 for p in processes):
        raise RuntimeError("a plain loop failed")
    return time.perf_counter() - start


def compare(
    folder: Path, train: dict, runs: int, executor: str, workers: int, repeats: int
) -> tuple[float, float, list[float], list[float]]:
    """Median sweep and plain-loop seconds over ``repeats`` interleaved tries, and every try."""
    grid_file = folder / f"grid-{runs}.yaml"
    grid_file.write_text(yaml.safe_dump(grid(train, runs)))
    specs = expand_grid(grid(train, runs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    ours, theirs = [], []
    for _ in range(repeats):  # interleaved, so both sides see the same load
        theirs.append(plain_seconds(specs, folder / "plain", workers, threads))
        ours.append(sweep_seconds(grid_file, folder / "sweep", executor, workers, threads))
    return statistics.median(ours), statistics.median(theirs), ours, theirs


def spread(values: list[float]) -> str:
    """``min-max s`` of repeated timings."""
    return f"{min(values):.1f}-{max(values):.1f} s"


def run(quick: bool = False) -> list[dict]:
    """Rows for ``benchmarks/run.py``: the three overhead comparisons, then scaling."""
    runs, repeats = (16, 1) if quick else (32, 3)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for executor, workers, target in (("local", 1, 1.2), ("local", 2, 1.2), ("dask", 2, 1.5)):
            ours, theirs, all_ours, all_theirs = compare(
                folder, TRIVIAL, runs, executor, workers, repeats
            )
            name = "local pool" if executor == "local" else "dask LocalCluster"
            rows.append(
                dict(
                    benchmark=f"sweep of {runs} trivial runs, {name}, {workers} worker(s)",
                    baseline=f"{workers} plain-loop process(es) doing the same train() calls",
                    candidate_s=ours,
                    baseline_s=theirs,
                    ratio=ours / theirs,
                    target=f"<= {target}x (cost)",
                    ok=ours / theirs <= target,
                    note=f"median of {repeats}; sweep {spread(all_ours)}, plain {spread(all_theirs)}",
                )
            )
        n = 4 if quick else 8
        grid_file = folder / "cpu.yaml"
        grid_file.write_text(yaml.safe_dump(grid(CPU_BOUND, n)))
        specs = expand_grid(grid(CPU_BOUND, n))
        one, two, plain_one, plain_two = [], [], [], []
        for _ in range(1 if quick else 2):
            one.append(sweep_seconds(grid_file, folder / "one", "local", 1, 1))
            two.append(sweep_seconds(grid_file, folder / "two", "local", 2, 1))
            plain_one.append(plain_seconds(specs, folder / "plain-one", 1, 1))
            plain_two.append(plain_seconds(specs, folder / "plain-two", 2, 1))
        t1, t2 = statistics.median(one), statistics.median(two)
        machine = statistics.median(plain_two) / statistics.median(plain_one)
        rows.append(
            dict(
                benchmark=f"scaling: {n} CPU-bound runs (1 thread each), local pool, 2 workers",
                baseline="the same sweep on 1 worker",
                candidate_s=t2,
                baseline_s=t1,
                ratio=t2 / t1,
                target="~0.5 (time ratio; report)",
                ok=t2 / t1 <= 0.65,
                note=f"{os.cpu_count()} cores; 1 worker {spread(one)}, 2 workers {spread(two)}; "
                f"the machine itself: 2 plain processes / 1 = {machine:.2f}; "
                f"load average {os.getloadavg()[0]:.1f} at the end",
            )
        )
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
