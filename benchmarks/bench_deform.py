"""Speed of the batched max-entropy deformation against the published reference and kornia.

Each row times a candidate and its baseline in the same process (median of several repeats after a
warm-up, seeds pinned, the default number of torch threads) and reports the speed-up
``baseline_s / candidate_s``. The gaussian row compares times per image (see its note). Run
``python benchmarks/bench_deform.py [--quick]``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

from diffeoprobe.perturb import deform, native, remap, sample_displacement, temperature_for
from diffeoprobe.perturb.diffeo import GAUSSIAN_SIGMA

BATCH, CHANNELS, SIDE, CUT = 256, 3, 32, 3  # the measurement setting: CIFAR-sized batch, c = 3
DENSE_BATCH = 4  # the dense Gaussian kernel holds n^4 weights per image: keep its batch small
DELTA = 1.0  # typical displacement in pixels (docs/science.md section 2 default)


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: caches, allocator, lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- the published reference algorithm, one image per call (re-implemented here) ------------------


@functools.lru_cache
def _reference_modes(n: int, cut: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(0, 1, n)
    k = torch.arange(1, cut + 1, dtype=torch.float32)
    i, j = torch.meshgrid(k, k, indexing="ij")
    r = (i.pow(2) + j.pow(2)).sqrt()
    e = (r < cut + 0.5) / r
    s = torch.sin(math.pi * x[:, None] * k[None, :])
    return e, s


def _reference_field(n: int, cut: int) -> torch.Tensor:
    e, s = _reference_modes(n, cut)
    c = torch.randn(cut, cut) * e
    return torch.einsum("ij,xi,yj->yx", c, s, s)


def _reference_source(n: int, temperature: float, cut: int) -> tuple[torch.Tensor, torch.Tensor]:
    dx = temperature**0.5 * _reference_field(n, cut) * n
    dy = temperature**0.5 * _reference_field(n, cut) * n
    y, x = torch.meshgrid(
        torch.arange(n, dtype=dx.dtype), torch.arange(n, dtype=dx.dtype), indexing="ij"
    )
    return (x - dx).clamp(0, n - 1), (y - dy).clamp(0, n - 1)


def _reference_bilinear(a: torch.Tensor, xn: torch.Tensor, yn: torch.Tensor) -> torch.Tensor:
    xf, yf = xn.floor().long(), yn.floor().long()
    xc, yc = xn.ceil().long(), yn.ceil().long()
    xv, yv = xn - xf, yn - yf
    return (
        (1 - yv) * (1 - xv) * a[..., yf, xf]
        + (1 - yv) * xv * a[..., yf, xc]
        + yv * (1 - xv) * a[..., yc, xf]
        + yv * xv * a[..., yc, xc]
    )


def _reference_dense_gaussian(a: torch.Tensor, xn: torch.Tensor, yn: torch.Tensor) -> torch.Tensor:
    n = a.shape[-1]
    y, x = torch.meshgrid(
        torch.arange(n, dtype=a.dtype), torch.arange(n, dtype=a.dtype), indexing="ij"
    )
    dx = xn[:, :, None, None] - x
    dy = yn[:, :, None, None] - y
    c = (-(dx**2) - dy**2).div(2 * GAUSSIAN_SIGMA**2).exp()
    c = c / c.sum([2, 3], keepdim=True)
    return (c * a[..., None, None, :, :]).sum([-1, -2])


def _reference_deform_batch(images: torch.Tensor, temperature: float, cut: int) -> torch.Tensor:
    n = images.shape[-1]
    return torch.stack(
        [_reference_bilinear(a, *_reference_source(n, temperature, cut)) for a in images]
    )


# --- rows -----------------------------------------------------------------------------------------


def _row(benchmark, baseline, candidate_s, baseline_s, target, ok, note) -> dict:
    return {
        "benchmark": benchmark,
        "baseline": baseline,
        "candidate_s": candidate_s,
        "baseline_s": baseline_s,
        "ratio": baseline_s / candidate_s if candidate_s else float("nan"),
        "target": target,
        "ok": ok,
        "note": note,
    }


def bench_deform_vs_reference(repeats: int) -> dict:
    """The row of ``deform`` against the published reference, median of ``repeats``."""
    torch.manual_seed(0)
    images = torch.rand(BATCH, CHANNELS, SIDE, SIDE)
    temperature = temperature_for(DELTA, SIDE, CUT)
    g = torch.Generator().manual_seed(0)
    cand = _median_seconds(lambda: deform(images, temperature, CUT, generator=g), repeats)
    base = _median_seconds(lambda: _reference_deform_batch(images, temperature, CUT), repeats)
    return _row(
        f"deform {BATCH}x{CHANNELS}x{SIDE}x{SIDE} bilinear c={CUT} delta={DELTA}px",
        "reference algorithm, loop over samples",
        cand,
        base,
        ">= 50x",
        base / cand >= 50,
        "whole batch each side; fields drawn and images remapped in one batched call",
    )


def bench_gaussian_vs_dense(repeats: int) -> dict:
    """Per image: the candidate on the full batch, the dense kernel on a small one (n^4 memory)."""
    torch.manual_seed(0)
    images = torch.rand(BATCH, CHANNELS, SIDE, SIDE)
    temperature = temperature_for(DELTA, SIDE, CUT)
    u = sample_displacement(
        BATCH, (SIDE, SIDE), temperature, CUT, generator=torch.Generator().manual_seed(0)
    )
    p = torch.arange(SIDE, dtype=u.dtype)
    sources = [
        ((p[None, :] - u[b, 1]).clamp(0, SIDE - 1), (p[:, None] - u[b, 0]).clamp(0, SIDE - 1))
        for b in range(DENSE_BATCH)
    ]

    def dense() -> torch.Tensor:
        return torch.stack(
            [_reference_dense_gaussian(a, *s) for a, s in zip(images, sources, strict=False)]
        )

    cand = _median_seconds(lambda: remap(images, u, "gaussian"), repeats) / BATCH
    base = _median_seconds(dense, max(3, repeats // 3)) / DENSE_BATCH
    error = (remap(images, u, "gaussian")[:DENSE_BATCH] - dense()).abs().max().item()
    # The PyTorch formulation (what runs on CUDA, under autograd, or without a C compiler).
    with _torch_gaussian_only():
        formulation = _median_seconds(lambda: remap(images, u, "gaussian"), repeats) / BATCH
    path = "native kernel" if native.available() else f"PyTorch path ({native.status()})"
    return _row(
        f"gaussian remap {BATCH}x{CHANNELS}x{SIDE}x{SIDE}, per image",
        "dense n^2 x n^2 Gaussian kernel per image (reference)",
        cand,
        base,
        ">= 1000x",
        base / cand >= 1000,
        f"per image: candidate ({path}) timed on a batch of {BATCH}, dense kernel on a batch of "
        f"{DENSE_BATCH} ({SIDE**4 * 4 / 2**20:.0f} MiB of weights per image); "
        f"max abs difference {error:.1e} (float32); the PyTorch formulation alone: "
        f"{formulation * 1e6:.0f} us per image, {base / formulation:.0f}x",
    )


@contextlib.contextmanager
def _torch_gaussian_only():
    saved = native.gaussian_remap
    native.gaussian_remap = lambda x, displacement: None
    try:
        yield
    finally:
        native.gaussian_remap = saved


def bench_vs_kornia(repeats: int) -> dict:
    """The row of ``deform`` against kornia's elastic transform (a note when it is absent)."""
    name = f"deform {BATCH}x{CHANNELS}x{SIDE}x{SIDE} bilinear"
    baseline = "kornia.augmentation.RandomElasticTransform (defaults, p=1)"
    try:
        import kornia.augmentation as K
    except Exception as exc:  # an optional extra: report, never crash
        return _row(
            name,
            baseline,
            float("nan"),
            float("nan"),
            "faster",
            False,
            f"kornia unavailable: {exc}",
        )
    torch.manual_seed(0)
    images = torch.rand(BATCH, CHANNELS, SIDE, SIDE)
    temperature = temperature_for(DELTA, SIDE, CUT)
    g = torch.Generator().manual_seed(0)
    elastic = K.RandomElasticTransform(p=1.0)
    cand = _median_seconds(lambda: deform(images, temperature, CUT, generator=g), repeats)
    base = _median_seconds(lambda: elastic(images), repeats)
    return _row(
        name,
        baseline,
        cand,
        base,
        "faster",
        base > cand,
        "kornia smooths white noise with a 63x63 Gaussian; different ensemble, same output shape",
    )


def run(quick: bool = False) -> list[dict]:
    """All rows; ``quick`` uses fewer repeats (seconds in total)."""
    repeats = 5 if quick else 21
    return [
        bench_deform_vs_reference(repeats),
        bench_gaussian_vs_dense(repeats),
        bench_vs_kornia(repeats),
    ]


def _machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, load average {load:.2f}"
    )


if __name__ == "__main__":
    rows = run(quick="--quick" in sys.argv)
    print(_machine())
    print(f"{'benchmark':48} {'candidate':>11} {'baseline':>11} {'speed-up':>9} {'target':>9}  ok")
    for r in rows:
        print(
            f"{r['benchmark']:48} {r['candidate_s'] * 1e3:9.3f}ms {r['baseline_s'] * 1e3:9.3f}ms "
            f"{r['ratio']:8.1f}x {r['target']:>9}  {'yes' if r['ok'] else 'NO'}"
        )
        print(f"    vs {r['baseline']}; {r['note']}")
