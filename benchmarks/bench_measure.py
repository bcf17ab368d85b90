"""dp.measure: cost against plain forward passes and against one network run per layer; memory.

Targets (issue 3): all layers of a 6-conv CNN on 1024 images in at most 1.3x the time of three
plain forward passes; at least (number of layers / 2) times faster than re-running the network
once per layer; peak memory with 8192 probe images at most 1.2x that with 1024.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

import diffeoprobe as dp

BATCH = 256  # images per forward pass, for the baseline and for measure (stacked copies)


def six_conv_cnn() -> nn.Sequential:
    """The 6-conv CNN of the targets, seeded."""
    torch.manual_seed(0)
    widths = [3, 32, 32, 64, 64, 128, 128]
    layers: list[nn.Module] = []
    for i in range(6):
        layers += [nn.Conv2d(widths[i], widths[i + 1], 3, padding=1), nn.ReLU()]
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10)]
    return nn.Sequential(*layers).eval()


def paired_times(candidate, baseline, repeats: int) -> tuple[float, float, float]:
    """Median times of ``candidate`` and ``baseline`` run alternately, and the median of the
    per-pair ratios ``candidate / baseline``: load from other jobs hits both sides alike.
    """
    candidate(), baseline()  # warm-up
    pairs = []
    for _ in range(repeats):
        start = time.perf_counter()
        candidate()
        middle = time.perf_counter()
        baseline()
        pairs.append((middle - start, time.perf_counter() - middle))
    cand, base = (statistics.median(p[i] for p in pairs) for i in (0, 1))
    return cand, base, statistics.median(c / b for c, b in pairs)


def plain_forwards(model: nn.Module, x: torch.Tensor, passes: int = 3) -> None:
    """``passes`` plain forward passes of ``model`` over ``x``, in batches."""
    with torch.inference_mode():
        for _ in range(passes):
            for i in range(0, x.shape[0], BATCH):
                model(x[i : i + BATCH])


def once_per_layer(model: nn.Sequential, x: torch.Tensor, *, prefix: bool) -> None:
    """One network run per layer and input kind (clean, deformed, noisy).

    ``prefix=False``: the whole network each time, the layer's output taken by a forward hook
    (what the lab scripts do). ``prefix=True``: only the first k modules for layer k, the
    cheapest per-layer scheme (about half the network on average here).
    """
    gen = torch.Generator().manual_seed(0)
    t = dp.temperature_for(1.0, (32, 32), 3)
    taken: list[torch.Tensor] = []
    with torch.inference_mode():
        xt = dp.deform(x, t, 3, generator=gen)
        xn = x + dp.matched_noise(x, xt, generator=gen)
        for k in range(1, len(model) + 1):
            net = model[:k] if prefix else model
            hook = (
                None
                if prefix
                else model[k - 1].register_forward_hook(
                    lambda module, args, output: taken.append(output)
                )
            )
            for batch in (x, xt, xn):
                for i in range(0, batch.shape[0], BATCH):
                    net(batch[i : i + BATCH])
                    taken.clear()
            if hook is not None:
                hook.remove()


class LazyImages(torch.utils.data.Dataset):
    """Images made on demand from their index: the probe set itself takes no memory."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i))


MEMORY_CHILD = """
import resource, sys, torch
sys.path.insert(0, {here!r})
import bench_measure as b, diffeoprobe as dp
model = b.six_conv_cnn()
loader = torch.utils.data.DataLoader(b.LazyImages({n}), batch_size=256)
dp.measure(model, loader, batch_size=b.BATCH, seed=0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kib(n: int) -> int:
    """Peak resident memory (KiB) of a fresh process measuring ``n`` images."""
    from pathlib import Path

    code = MEMORY_CHILD.format(here=str(Path(__file__).resolve().parent), n=n)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    """This benchmark's rows for ``benchmarks/run.py`` (``quick``: smaller sizes)."""
    torch.manual_seed(0)
    n = 256 if quick else 1024
    repeats = 2 if quick else 5
    model = six_conv_cnn()
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    n_layers = len(dp.measure(model, x[:8], capture="hooks")) - 1  # all layers but the input

    def measure_all() -> None:
        dp.measure(model, x, batch_size=BATCH, seed=0)

    t_measure, t_plain, cost = paired_times(measure_all, lambda: plain_forwards(model, x), repeats)
    few = max(1, repeats // 2)
    per_layer = {
        prefix: paired_times(
            measure_all, lambda prefix=prefix: once_per_layer(model, x, prefix=prefix), few
        )
        for prefix in (False, True)
    }
    note = f"median of {{}} alternating pairs (ratio of each pair); load average {os.getloadavg()[0]:.1f}"
    rows = [
        dict(
            benchmark=f"measure, all {n_layers} layers of a 6-conv CNN, {n} images 3x32x32",
            baseline="3 plain forward passes",
            candidate_s=t_measure,
            baseline_s=t_plain,
            ratio=cost,
            target="<= 1.3x (cost)",
            ok=cost <= 1.3,
            note=f"batch {BATCH} images per forward in both; " + note.format(repeats),
        ),
    ]
    for prefix, baseline in (
        (False, "whole network re-run once per layer (the lab scripts)"),
        (True, "first k modules re-run for layer k (cheapest per-layer scheme)"),
    ):
        t_measure2, t_per_layer, inverse = per_layer[prefix]
        rows.append(
            dict(
                benchmark=f"measure, all {n_layers} layers of a 6-conv CNN, {n} images",
                baseline=baseline,
                candidate_s=t_measure2,
                baseline_s=t_per_layer,
                ratio=1 / inverse,
                target=f">= {n_layers / 2:g}x (layers/2)",
                ok=1 / inverse >= n_layers / 2,
                note="speed-up; " + note.format(few),
            )
        )
    small, large = (256, 2048) if quick else (1024, 8192)
    rss_small, rss_large = peak_rss_kib(small), peak_rss_kib(large)
    rows.append(
        dict(
            benchmark=f"measure peak memory, {large} vs {small} probe images (streamed DataLoader)",
            baseline=f"{small} images",
            candidate_s=rss_large / 1024,
            baseline_s=rss_small / 1024,
            ratio=rss_large / rss_small,
            target="<= 1.2x (memory)",
            ok=rss_large / rss_small <= 1.2,
            note="peak RSS in MiB of a fresh process (columns hold MiB, not s)",
        )
    )
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
