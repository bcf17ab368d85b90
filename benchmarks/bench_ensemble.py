"""Seeds of one configuration trained together (``train_together``) against one after another.

The paper's recipe for the scale-detection CNN at a small width: scalecnn1d (width 64, depth 7) on
task 1 (d = 128, xi = 32), 1024 training points, batch 8, plain SGD at lr 0.64 (0.01 x width),
hinge loss, constant schedule, no measurement, checkpoints only at initialisation and at the end.
8 seeds trained by ``train_together`` (one batched model) against the same 8 trained by ``train``
one after the other, in the same process, one thread, after a warm-up of both. Target: the
together time at most a third of the sequential time.

The evaluation at the two checkpoints (errors on 1024 training and 512 test points per seed) is
the same computation together or alone (about 0.8 s for all 8 seeds), so
``--quick`` (one epoch) reads about 0.38: a smoke test, not the measurement.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from diffeoprobe.config import TrainConfig
from diffeoprobe.ensemble import train_together
from diffeoprobe.training import train

SEEDS = 8
TARGET = 1 / 3


def configs(epochs: int, train_size: int = 1024) -> list[TrainConfig]:
    """The configurations trained, one per seed."""
    return [
        TrainConfig(
            model="scalecnn1d",
            model_options=dict(depth=7, width=64),
            dataset="scale-detection",
            dataset_options=dict(dim=1, task=1, d=128, xi=32, train_size=train_size),
            test_size=512,
            epochs=epochs,
            batch_size=8,
            optimizer="sgd",
            lr=0.64,
            momentum=0.0,
            weight_decay=0.0,
            schedule="constant",
            loss="hinge",
            stop_at_zero_error=False,
            checkpoints=0,
            measure=False,
            seed=seed,
        )
        for seed in range(SEEDS)
    ]


def timed(function, *args) -> tuple[float, list]:
    """Seconds taken by ``function(*args)``, and its result."""
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def run(quick: bool = False) -> list[dict]:
    """This benchmark's rows for ``benchmarks/run.py`` (``quick``: smaller sizes)."""
    epochs, repeats = (1, 1) if quick else (3, 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            warm = configs(1, train_size=64)[:2]  # imports, first calls
            train_together(warm, [root / "warm-t0", root / "warm-t1"])
            train(warm[0], root / "warm-s0")
            together, alone, step_together, step_alone = [], [], [], []
            for r in range(repeats):  # interleaved, so both see the same machine load
                runs = configs(epochs)
                seconds, solo = timed(
                    lambda: [train(c, root / f"s{r}-{c.seed}") for c in runs]  # noqa: B023
                )
                alone.append(seconds)
                step_alone.append(sum(s.loop_seconds for s in solo) / sum(s.steps for s in solo))
                seconds, summaries = timed(
                    train_together, runs, [root / f"t{r}-{c.seed}" for c in runs]
                )
                together.append(seconds)
                step_together.append(summaries[0].loop_seconds / summaries[0].steps)
    finally:
        torch.set_num_threads(threads)
    best_together, best_alone = min(together), min(alone)
    ratio = best_together / best_alone
    return [
        dict(
            benchmark=f"train {SEEDS} seeds of scalecnn1d (width 64, depth 7, d 128, 1024 points, "
            f"batch 8, plain SGD) x {epochs} epochs together",
            baseline=f"the {SEEDS} seeds one after another with train()",
            candidate_s=best_together,
            baseline_s=best_alone,
            ratio=ratio,
            target="<= 0.333 (cost)",
            ok=ratio <= TARGET,
            note=f"best of {repeats}, 1 thread; one batched step of all {SEEDS} seeds "
            f"{1e3 * min(step_together):.2f} ms vs {1e3 * min(step_alone):.2f} ms a step alone "
            f"({min(step_together) / min(step_alone):.2f} solo steps); each repeat: together "
            f"{', '.join(f'{v:.2f}' for v in together)} s, alone "
            f"{', '.join(f'{v:.2f}' for v in alone)} s",
        )
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
