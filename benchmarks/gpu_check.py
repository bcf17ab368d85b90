"""A device check: correctness of the perturbations and the measurement on a device, and speed.

    python benchmarks/gpu_check.py --device cuda          # on a GPU machine
    python benchmarks/gpu_check.py --device cpu --quick   # what CI runs, so that it never rots

One line per check. Correctness (exit code 1 when one fails): the same seeded draws give the same
table on the device as on the CPU (TF32 off; relative tolerance 1e-3), the measured mean squared
displacement equals the exact mode sum within 4 standard errors, matched noise has the norm of
the deformation per image. Speed (reported as ratios measured in this process, never judged
here): ``deform`` against one ``grid_sample`` of the batch, ``measure`` against three forwards of a
ResNet-18, training images per second in fp32 and with bf16 autocast.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import diffeoprobe as dp


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _small_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return dp.models.build("simplecnn", 3, 10, depth=3, width=8).eval()


def check_same_table(device: torch.device) -> tuple[bool, str]:
    """The same seeded measurement on the CPU and on the device."""
    x = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cpu = dp.measure(_small_cnn(), x, seed=0, batch_size=96)
    other = dp.measure(_small_cnn(), x, seed=0, batch_size=96, device=device)
    worst = float(((other["R"] - cpu["R"]).abs() / cpu["R"].abs()).max())
    return worst <= 1e-3, f"max relative difference of R_k, device vs cpu: {worst:.2e} (<= 1e-3)"


def check_displacement(device: torch.device, draws: int) -> tuple[bool, str]:
    """Mean squared displacement of sampled 1D fields against the exact sum over their modes,
    ``L^2 T S_c / 2`` (docs/perturbations.md; the discrete grid biases it by about 1 / L).
    """
    size, cut, temperature = 256, 3, 1e-4
    generator = torch.Generator(device=device).manual_seed(0)
    fields = dp.sample_displacement(draws, (size,), temperature, cut, generator=generator)
    per_field = fields.to(torch.float64).pow(2).sum(dim=1).mean(dim=-1)  # <|tau|^2>, per draw
    mean, se = float(per_field.mean()), float(per_field.std() / draws**0.5)
    exact = dp.typical_displacement(temperature, (size,), cut) ** 2
    z = abs(mean - exact) / se
    return z <= 4, f"<|tau|^2> {mean:.4g} +- {se:.2g} against exact {exact:.4g} ({z:.1f} s.e.)"


def check_matched_noise(device: torch.device) -> tuple[bool, str]:
    """||eta|| = ||tau x - x|| image by image."""
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(32, 3, 16, 16, device=device, generator=generator)
    xt = dp.deform(x, temperature=0.01, cut=3, generator=generator)
    eta = dp.matched_noise(x, xt, generator=generator)
    want = (xt - x).flatten(1).norm(dim=1)
    worst = float(((eta.flatten(1).norm(dim=1) - want).abs() / want).max())
    return worst <= 1e-5, f"max relative norm error {worst:.1e} (<= 1e-5)"


def speed_deform(device: torch.device, side: int, batch: int, repeats: int) -> str:
    """``deform`` of a batch against one ``grid_sample`` of it (the floor of any resampling)."""
    x = torch.rand(batch, 3, side, side, device=device)
    theta = torch.eye(2, 3, device=device).expand(batch, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    generator = torch.Generator(device=device).manual_seed(0)
    ours = _median_time(lambda: dp.deform(x, 0.01, 3, generator=generator), device, repeats)
    base = _median_time(lambda: F.grid_sample(x, grid, align_corners=False), device, repeats)
    return (
        f"deform {batch} x {side}x{side}: {ours / base:.2f}x one grid_sample ({ours * 1e3:.1f} ms)"
    )


def speed_measure(device: torch.device, side: int, images: int, repeats: int) -> str:
    """``measure`` at every layer of a ResNet-18 against three plain forwards of the images."""
    torch.manual_seed(0)
    net = dp.models.build("resnet18", 3, 10).eval().to(device)
    x = torch.rand(images, 3, side, side, device=device)

    def three_forwards() -> None:
        with torch.no_grad():
            for _ in range(3):
                net(x)

    ours = _median_time(lambda: dp.measure(net, x, seed=0, batch_size=3 * images), device, repeats)
    base = _median_time(three_forwards, device, repeats)
    return f"measure ResNet-18, {images} x {side}x{side}: {ours / base:.2f}x three forwards"


def _training_rate(
    device: torch.device, precision: str, side: int, batch: int, steps: int
) -> float:
    """Images per second of SGD steps of a ResNet-18 (``bf16``: autocast)."""
    torch.manual_seed(0)
    net = dp.models.build("resnet18", 3, 10).to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, side, side, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return batch / _median_time(step, device, steps)


def speed_training(device: torch.device, side: int, batch: int, steps: int) -> str:
    """Training images per second in fp32 and with bf16 autocast."""
    fp32, bf16 = (_training_rate(device, p, side, batch, steps) for p in ("fp32", "bf16"))
    return (
        f"training ResNet-18 at {side}x{side}: fp32 {fp32:.0f} images/s, bf16 {bf16:.0f} "
        f"images/s ({bf16 / fp32:.2f}x)"
    )


def main(argv: list[str] | None = None) -> int:
    """Run every check on ``--device``; one line each; exit code 1 when a correctness check fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (CI, on CPU)")
    args = parser.parse_args(argv)
    try:
        device = torch.device(args.device)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as exc:
        print(f"error: --device {args.device!r} is not usable here ({exc})", file=sys.stderr)
        return 2
    if device.type == "cuda":  # the tolerance is stated with TF32 off
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}")
    failed = 0
    for label, check in [
        ("same table as on cpu", lambda: check_same_table(device)),
        ("displacement statistics", lambda: check_displacement(device, 128 if args.quick else 512)),
        ("matched noise norms", lambda: check_matched_noise(device)),
    ]:
        ok, detail = check()
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {label}: {detail}")
    repeats = 1 if args.quick else 10
    print("SPEED " + speed_deform(device, 32, 64 if args.quick else 256, repeats))
    if not args.quick:
        print("SPEED " + speed_deform(device, 224, 64, repeats))
    print("SPEED " + speed_measure(device, 32, 8 if args.quick else 256, repeats))
    if not args.quick:
        print("SPEED " + speed_measure(device, 224, 64, repeats))
    print("SPEED " + speed_training(device, 32, 4 if args.quick else 256, repeats))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
