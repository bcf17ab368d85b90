"""The native Gaussian remap: ``gaussian_remap.c`` built with the machine's C compiler, on first use.

The PyTorch formulation of the exact Gaussian interpolation (``diffeo._gaussian``) gathers and
reduces in separate operations; fused into one C loop it runs 3-20 times faster on a CPU (9x on
batches of 3x32x32 images, 1240-1590x the dense kernel; ``benchmarks/RESULTS.md``). The C source is plain C99 with no Python or torch headers, so building
takes about a second. The library is cached under ``$DIFFEOPROBE_CACHE_DIR`` (default
``$XDG_CACHE_HOME/diffeoprobe`` or ``~/.cache/diffeoprobe``) in a folder named by a hash of the
source, the flags, the compiler and the CPU's features, so a home directory shared by different
machines never loads a library built for another CPU; where that folder cannot be written, in
``diffeoprobe-<uid>`` of the temporary directory. Written under a temporary name and then renamed:
concurrent processes never see half a library.

When there is no compiler, the build fails, ``DIFFEOPROBE_NATIVE=0`` is set, or a call is outside
what the kernel covers (CUDA, autograd, an axis shorter than the window, too many channels),
:func:`gaussian_remap` returns ``None`` and the caller uses the PyTorch path: results agree to the
dtype's precision either way (tests/test_native.py). :func:`status` says which applies.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import math
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.perturb.diffeo import GAUSSIAN_SIGMA, GAUSSIAN_WINDOW

__all__ = [
    "available",
    "cache_dir",
    "gaussian_remap",
    "status",
]

_HERE = Path(__file__).parent
_SOURCES = ("gaussian_remap.c", "gaussian_remap.h")
# Compiled with -ffast-math (vectorised expf from libmvec); linked *without* it, so that the
# library does not switch the whole process to flush-denormals-to-zero when it is loaded.
_COMPILE_FLAGS = ("-O3", "-ffast-math", "-fPIC", "-std=gnu99")
# Tried in this order: the CPU's own instructions and OpenMP (torch's runtime), then without
# either where the compiler or the machine refuses (Apple's clang has no -fopenmp).
_VARIANTS = (("-march=native", "-fopenmp"), ("-march=native",), ("-fopenmp",), ())
# Below this many output values a call runs on one thread (threads cost more than they save).
_THREAD_MIN_VALUES = 1 << 15

_lock = threading.Lock()
_state: dict[str, object] = {}


def _defines() -> list[str]:
    (lo32, hi32), (lo64, hi64) = GAUSSIAN_WINDOW[torch.float32], GAUSSIAN_WINDOW[torch.float64]
    return [
        f"-DTAPS32={hi32 - lo32 + 1}",
        f"-DLO32={lo32}",
        f"-DTAPS64={hi64 - lo64 + 1}",
        f"-DLO64={lo64}",
    ]


def _compiler() -> str | None:
    """``$CC``, else the compiler Python was built with, else ``cc``: a path, or ``None``."""
    for candidate in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc"):
        if candidate:
            found = shutil.which(candidate.split()[0])
            if found:
                return found
    return None


def _cpu_features() -> str:
    """The CPU's feature flags (``-march=native`` depends on them), best effort."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def cache_dir() -> Path:
    """Where built libraries are kept (see the module docstring)."""
    if os.environ.get("DIFFEOPROBE_CACHE_DIR"):
        return Path(os.environ["DIFFEOPROBE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "diffeoprobe"


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()[-2000:]}")


def _build(compiler: str, variant: tuple[str, ...]) -> Path:
    """Build (or find in the cache) the library with the flags ``variant``; its path."""
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, timeout=60
    ).stdout
    key = hashlib.sha256()
    for name in _SOURCES:
        key.update((_HERE / name).read_bytes())
    for part in (
        compiler,
        version,
        *_COMPILE_FLAGS,
        *variant,
        *_defines(),
        _cpu_features(),
        platform.machine(),
        sys.platform,
    ):
        key.update(part.encode() + b"\0")
    name = f"gaussian-{key.hexdigest()[:20]}"
    folder = cache_dir() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # an unwritable cache: a folder of this user's in the temporary directory
        uid = os.getuid() if hasattr(os, "getuid") else 0
        folder = Path(tempfile.gettempdir()) / f"diffeoprobe-{uid}" / name
        folder.mkdir(parents=True, exist_ok=True)
    library = folder / "gaussian_remap.so"
    if library.exists():
        return library
    with tempfile.TemporaryDirectory(dir=folder) as work:
        obj = Path(work) / "gaussian_remap.o"
        built = Path(work) / "gaussian_remap.so"
        _run(
            [
                compiler,
                *_COMPILE_FLAGS,
                *variant,
                *_defines(),
                f"-I{_HERE}",
                "-c",
                str(_HERE / "gaussian_remap.c"),
                "-o",
                str(obj),
            ]
        )
        openmp = [flag for flag in variant if flag == "-fopenmp"]
        _run([compiler, "-shared", *openmp, str(obj), "-o", str(built), "-lm"])
        os.replace(built, library)  # atomic: another process sees all of it or nothing
    return library


def _load() -> ctypes.CDLL | None:
    """The loaded library, or ``None`` with the reason in ``_state["reason"]``. Once per process."""
    with _lock:
        if "library" in _state:
            return _state["library"]  # type: ignore[return-value]
        library, reason = None, ""
        if os.environ.get("DIFFEOPROBE_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
            reason = "disabled by DIFFEOPROBE_NATIVE"
        elif (compiler := _compiler()) is None:
            reason = "no C compiler found ($CC, Python's CC or cc)"
        else:
            errors = []
            for variant in _VARIANTS:
                try:
                    path = _build(compiler, variant)
                    try:
                        library = ctypes.CDLL(str(path))
                    except OSError:  # a damaged library in the cache: build it again
                        path.unlink(missing_ok=True)
                        path = _build(compiler, variant)
                        library = ctypes.CDLL(str(path))
                    _check(library)
                    reason = f"loaded {path} (flags: {' '.join(variant) or 'none'})"
                    break
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    library = None
                    errors.append(str(exc))
            if library is None:
                reason = "build failed: " + " | ".join(errors)
        _state["library"], _state["reason"] = library, reason
        return library


def _check(library: ctypes.CDLL) -> None:
    library.diffeoprobe_gaussian_taps.restype = ctypes.c_int64
    library.diffeoprobe_gaussian_max_span.restype = ctypes.c_int64
    library.diffeoprobe_gaussian_openmp.restype = ctypes.c_int64
    for dtype, bits in ((torch.float32, 32), (torch.float64, 64)):
        lo, hi = GAUSSIAN_WINDOW[dtype]
        if library.diffeoprobe_gaussian_taps(bits) != hi - lo + 1:
            raise RuntimeError("the cached library's window does not match GAUSSIAN_WINDOW")
    int64 = ctypes.c_int64
    for name in _kernel_names():
        getattr(library, name).argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            int64,
            ctypes.c_void_p,
            int64,
            int64,
            int64,
            int64,
            ctypes.c_double,
            int64,
        ]
        getattr(library, name).restype = int64


def _kernel_names() -> list[str]:
    return [
        f"diffeoprobe_gaussian_{bits}_{dim}_c_{c}"
        for bits in ("f32", "f64")
        for dim in ("1d", "2d")
        for c in (0, 4)
    ]


def status() -> str:
    """Whether the native kernel is in use on this machine, and why not when it is not."""
    _load()
    return str(_state["reason"])


def available() -> bool:
    """True when the native kernel is built and loaded (building it on the first call)."""
    return _load() is not None


@functools.lru_cache(maxsize=1)
def _executor(threads: int, pid: int) -> ThreadPoolExecutor:
    """A pool per process (``pid``): a forked child (a DataLoader worker) must not inherit a pool
    whose threads did not survive the fork.
    """
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="diffeoprobe-gaussian")


def gaussian_remap(x: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor | None:
    """``diffeo._gaussian(x, displacement)`` by the native kernel, or ``None`` when it does not apply.

    Args:
        x: ``(B, C, L)`` or ``(B, C, H, W)``, float32 or float64 (the working dtype), CPU.
        displacement: ``(B or 1, ndim, *size)`` of ``x``'s dtype, in pixels.

    Returns:
        ``(B, C, *size)`` contiguous, or ``None`` (CUDA, autograd, an axis shorter than the
        window, more channels than the kernel holds, or no native library): use the PyTorch path.

    Raises:
        DiffeoProbeError: a displacement is NaN or infinite.
    """
    if x.device.type != "cpu" or x.dtype not in GAUSSIAN_WINDOW:
        return None
    if torch.is_grad_enabled() and (x.requires_grad or displacement.requires_grad):
        return None
    lo, hi = GAUSSIAN_WINDOW[x.dtype]
    taps = hi - lo + 1
    size = tuple(x.shape[2:])
    if min(size) < taps:
        return None
    library = _load()
    channels = x.shape[1]
    stride = 4 if channels <= 4 else channels  # values per pixel in the kernel's scratch image
    if (
        library is None
        or taps * stride > library.diffeoprobe_gaussian_max_span()
        or math.prod(size) * stride >= 2**31  # the kernel indexes an image with int32
    ):
        return None
    b, c = x.shape[:2]
    height, width = (1, size[0]) if len(size) == 1 else size
    x = x.contiguous()
    field = displacement.to(x.dtype).contiguous()
    field_stride = 0 if field.shape[0] == 1 else field[0].numel()
    out = torch.empty(x.shape, dtype=x.dtype)
    bits = "f32" if x.dtype == torch.float32 else "f64"
    kernel = getattr(library, f"diffeoprobe_gaussian_{bits}_{len(size)}d_c_{4 if c <= 4 else 0}")
    item, values = x.element_size(), x[0].numel()
    threads = torch.get_num_threads() if out.numel() >= _THREAD_MIN_VALUES else 1

    def run(begin: int, end: int, threads: int) -> int:
        """Images ``begin .. end - 1`` (``threads``: OpenMP threads inside the call)."""
        return int(
            kernel(
                x.data_ptr() + begin * values * item,
                field.data_ptr() + begin * field_stride * item,
                field_stride,
                out.data_ptr() + begin * values * item,
                end - begin,
                c,
                height,
                width,
                GAUSSIAN_SIGMA,
                threads,
            )
        )

    if library.diffeoprobe_gaussian_openmp() or threads == 1 or b < threads:
        results = [run(0, b, threads)]
    else:
        # ctypes releases the GIL during the call: the slices run in parallel.
        bounds = [b * k // threads for k in range(threads + 1)]
        pool = _executor(threads, os.getpid())
        futures = [pool.submit(run, lo, hi, 1) for lo, hi in itertools.pairwise(bounds)]
        results = [future.result() for future in futures]
    if any(r < 0 for r in results):
        raise MemoryError("the native Gaussian remap could not allocate its scratch images")
    if sum(results):
        raise DiffeoProbeError(
            f"displacement must be finite: {sum(results)} values are NaN or infinite"
        )
    return out
