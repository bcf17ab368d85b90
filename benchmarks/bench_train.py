"""Training throughput of ``dp.train`` against a minimal hand-written PyTorch loop.

Same model (SimpleCNN, seeded), same data (Fashion-MNIST when installed, else random images of
the same shape), same batch size and optimiser; images per second of the training steps, the
loop of ``dp.train`` timed by itself (``RunSummary.loop_seconds``: evaluation at checkpoints is
not training). Target (issue 4): within 1.15x.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from diffeoprobe import data, models
from diffeoprobe.config import TrainConfig
from diffeoprobe.data.idx import FASHION_MNIST_DIR
from diffeoprobe.training import train

BATCH = 128


def minimal_loop(x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    """The loop a researcher writes by hand; returns images per second."""
    torch.manual_seed(0)
    model = models.build("simplecnn", 1, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], BATCH):
            idx = order[i : i + BATCH]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return epochs * x.shape[0] / (time.perf_counter() - start)


def library_loop(n: int, epochs: int, dataset: str, options: dict) -> float:
    """Training throughput of ``dp.train`` (images per second of its loop) on ``n`` images."""
    config = TrainConfig(
        model="simplecnn",
        dataset=dataset,
        dataset_options=options,
        train_size=n,
        test_size=512,
        epochs=epochs,
        batch_size=BATCH,
        optimizer="sgd",
        lr=0.05,
        checkpoints=0,
    )
    summary = train(config)
    return summary.images / summary.loop_seconds


def run(quick: bool = False) -> list[dict]:
    """This benchmark's rows for ``benchmarks/run.py`` (``quick``: smaller sizes)."""
    n, epochs, repeats = (1024, 1, 2) if quick else (4096, 1, 3)
    if Path(FASHION_MNIST_DIR).is_dir():
        dataset, options = "fashionmnist", {}
        x, y = data.build("fashionmnist", split="train")[:n]
    else:  # the same shapes from the synthetic task, so the comparison still runs
        dataset, options = (
            "scale-detection",
            {"dim": 2, "d": 28, "xi": 14, "gap": 2, "train_size": n, "test_size": 512},
        )
        x, y = data.build(dataset, split="train", **options)[:n]
    ours, theirs = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        theirs.append(minimal_loop(x, y, epochs))
        ours.append(library_loop(n, epochs, dataset, options))
    ours_ips, theirs_ips = statistics.median(ours), statistics.median(theirs)
    return [
        dict(
            benchmark=f"train simplecnn on {dataset}, {n} images x {epochs} epoch, batch {BATCH}",
            baseline="minimal hand-written loop",
            candidate_s=n * epochs / ours_ips,
            baseline_s=n * epochs / theirs_ips,
            ratio=theirs_ips / ours_ips,
            target="<= 1.15x (cost)",
            ok=theirs_ips / ours_ips <= 1.15,
            note=f"median {ours_ips:.0f} images/s (dp.train) vs {theirs_ips:.0f} images/s (minimal "
            f"loop); each repeat: {', '.join(f'{v:.0f}' for v in ours)} vs "
            f"{', '.join(f'{v:.0f}' for v in theirs)}",
        )
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
