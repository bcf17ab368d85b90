"""The native Gaussian remap (perturb/native.py, gaussian_remap.c): build, agreement, fallbacks."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.perturb import deform, native, remap, temperature_for

needs_compiler = pytest.mark.skipif(
    native._compiler() is None, reason="no C compiler: the native kernel cannot be built"
)


def _torch_gaussian(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``remap(x, u, "gaussian")`` by the PyTorch formulation."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(native, "gaussian_remap", lambda x, displacement: None)
        return remap(x, u, "gaussian")


def _case(batch, channels, size, dtype, scale=2.0, shared=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, *size, generator=g, dtype=dtype)
    u = scale * torch.randn(1 if shared else batch, len(size), *size, generator=g, dtype=dtype)
    return x, u


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """A native module that loads again (own cache folder); the real state comes back after."""
    saved = dict(native._state)
    native._state.clear()
    monkeypatch.setenv("DIFFEOPROBE_CACHE_DIR", str(tmp_path))
    yield native
    native._state.clear()
    native._state.update(saved)


@needs_compiler
def test_the_kernel_builds_and_loads_where_a_compiler_exists():
    assert native.available(), native.status()
    assert native.status().startswith("loaded ")
    x, u = _case(2, 3, (12, 14), torch.float32)
    assert native.gaussian_remap(x, u) is not None


@needs_compiler
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 2e-6), (torch.float64, 1e-13)])
@pytest.mark.parametrize(
    "batch,channels,size,shared",
    [
        (5, 3, (16, 16), False),  # the vector path (<= 4 channels, padded)
        (3, 1, (12, 20), False),
        (2, 4, (31, 10), True),  # one field for the batch (stride 0)
        (3, 7, (11, 13), False),  # the scalar path (> 4 channels)
        (1, 3, (40, 33), False),  # fewer images than threads: the rows are shared
        (4, 2, (50,), False),  # 1D
        (2, 9, (64,), True),
    ],
)
def test_native_equals_the_torch_formulation(batch, channels, size, shared, dtype, atol):
    x, u = _case(batch, channels, size, dtype, shared=shared)
    out = native.gaussian_remap(x, u)
    assert out is not None and out.shape == x.shape and out.dtype == dtype
    torch.testing.assert_close(out, _torch_gaussian(x, u), rtol=0, atol=atol)


@needs_compiler
@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 4),
    channels=st.integers(1, 6),
    height=st.integers(10, 24),
    width=st.integers(10, 24),
    scale=st.sampled_from([0.0, 0.5, 3.0, 50.0]),
    seed=st.integers(0, 2**16),
)
def test_native_equals_torch_property(batch, channels, height, width, scale, seed):
    x, u = _case(batch, channels, (height, width), torch.float64, scale=scale, seed=seed)
    out = native.gaussian_remap(x, u)
    assert out is not None
    torch.testing.assert_close(out, _torch_gaussian(x, u), rtol=0, atol=1e-13)


@needs_compiler
def test_native_is_bit_identical_for_any_number_of_threads():
    x, u = _case(9, 3, (20, 24), torch.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.gaussian_remap(x, u)
        torch.set_num_threads(2)
        two = native.gaussian_remap(x, u)
        again = native.gaussian_remap(x, u)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two) and torch.equal(two, again)


@needs_compiler
def test_deform_with_a_generator_is_reproducible_on_the_native_path():
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = temperature_for(1.0, 32)
    a = deform(x, t, interp="gaussian", generator=torch.Generator().manual_seed(4))
    b = deform(x, t, interp="gaussian", generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_calls_outside_the_kernel_take_the_torch_path():
    x, u = _case(2, 3, (5, 12), torch.float32)  # an axis shorter than the 6-tap window
    assert native.gaussian_remap(x, u) is None
    x, u = _case(2, 3, (12, 12), torch.float32)
    assert native.gaussian_remap(x.requires_grad_(), u) is None  # autograd
    x, u = _case(2, 200, (12, 12), torch.float32)  # more channels than the kernel holds
    assert native.gaussian_remap(x, u) is None
    # ... and remap still gives the Gaussian interpolation there.
    out = remap(x, u, "gaussian")
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("interp", ["gaussian", "bilinear"])
def test_a_non_finite_displacement_is_refused(bad, interp):
    x, u = _case(2, 3, (12, 12), torch.float32)
    u[1, 0, 3, 4] = bad
    with pytest.raises(DiffeoProbeError, match="displacement must be finite"):
        remap(x, u, interp)


def test_a_huge_finite_displacement_is_accepted():
    """remap checks finiteness through the sum of the field; a sum that overflows is not an error."""
    x, u = _case(2, 3, (12, 12), torch.float32)
    u.fill_(3e38)  # every source point clamped to pixel (0, 0)
    out = remap(x, u, "gaussian")
    torch.testing.assert_close(out, _torch_gaussian(x, u), rtol=0, atol=2e-6)
    assert torch.equal(out, out[..., :1, :1].expand_as(out))


@needs_compiler
def test_the_kernel_itself_counts_non_finite_displacements():
    x, u = _case(2, 3, (12, 12), torch.float64)
    u[0, 1, 2, 2] = float("nan")
    with pytest.raises(DiffeoProbeError, match="1 values are NaN or infinite"):
        native.gaussian_remap(x, u)


def test_disabled_by_the_environment(fresh_native, monkeypatch):
    monkeypatch.setenv("DIFFEOPROBE_NATIVE", "0")
    assert not fresh_native.available()
    assert "DIFFEOPROBE_NATIVE" in fresh_native.status()
    x, u = _case(2, 3, (12, 12), torch.float32)
    assert fresh_native.gaussian_remap(x, u) is None


def test_no_compiler_means_the_torch_path(fresh_native, monkeypatch):
    monkeypatch.setattr(fresh_native, "_compiler", lambda: None)
    assert not fresh_native.available()
    assert "no C compiler" in fresh_native.status()
    x, u = _case(2, 3, (12, 12), torch.float32)
    reference = _torch_gaussian(x, u)
    assert torch.equal(remap(x, u, "gaussian"), reference)


@needs_compiler
def test_a_failed_build_is_reported_and_falls_back(fresh_native, monkeypatch):
    monkeypatch.setattr(fresh_native, "_COMPILE_FLAGS", ("--no-such-compiler-flag",))
    assert not fresh_native.available()
    assert fresh_native.status().startswith("build failed")
    x, u = _case(2, 3, (12, 12), torch.float32)
    assert remap(x, u, "gaussian").shape == x.shape


def _status_in_a_new_process(cache) -> str:
    script = "from diffeoprobe.perturb import native; print(native.status())"
    env = {**os.environ, "DIFFEOPROBE_CACHE_DIR": str(cache)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    return result.stdout.strip()


@needs_compiler
def test_the_cache_is_reused_and_a_damaged_library_rebuilt(tmp_path):
    # New processes: a process that has loaded a library keeps it mapped (dlopen by path).
    assert _status_in_a_new_process(tmp_path).startswith("loaded ")
    (library,) = tmp_path.glob("gaussian-*/gaussian_remap.so")
    built = library.stat().st_mtime_ns
    assert _status_in_a_new_process(tmp_path).startswith("loaded ")
    assert library.stat().st_mtime_ns == built  # found in the cache, not built again
    library.unlink()
    library.write_bytes(b"not a shared library")
    status = _status_in_a_new_process(tmp_path)
    assert status.startswith("loaded ") and str(library) in status
    assert library.stat().st_size > 1000  # built again


@needs_compiler
def test_without_openmp_python_threads_split_the_batch(fresh_native, monkeypatch):
    x, u = _case(7, 3, (20, 18), torch.float32)
    with_openmp = fresh_native.gaussian_remap(x, u)
    fresh_native._state.clear()
    monkeypatch.setattr(fresh_native, "_VARIANTS", (("-march=native",), ()))
    assert fresh_native.available(), fresh_native.status()
    assert fresh_native._load().diffeoprobe_gaussian_openmp() == 0
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        threaded = fresh_native.gaussian_remap(x, u)  # two slices of the batch, two threads
    finally:
        torch.set_num_threads(before)
    assert torch.equal(threaded, with_openmp)


@needs_compiler
def test_an_unwritable_cache_falls_back_to_the_temporary_directory(
    fresh_native, monkeypatch, tmp_path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DIFFEOPROBE_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    assert fresh_native.available(), fresh_native.status()
    assert str(tmp_path / "tmp" / "diffeoprobe-") in fresh_native.status()


def test_loading_leaves_denormals_alone():
    """The kernel is compiled with -ffast-math but not linked with it: loading it must not
    switch the process to flush-to-zero (which would change every float op of torch)."""
    script = (
        "import torch; from diffeoprobe.perturb import native; native.available(); "
        "x = torch.tensor([1e-40], dtype=torch.float32); print(float(x * 1.0) > 0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=os.environ
    )
    assert out.stdout.strip() == "True"


def _remap_in_child(queue) -> None:
    torch.set_num_threads(1)  # as DataLoader workers do
    x, u = _case(4, 3, (16, 16), torch.float32)
    queue.put(remap(x, u, "gaussian").sum().item())


@needs_compiler
@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_a_forked_child_can_use_the_kernel_after_its_parent():
    x, u = _case(4, 3, (16, 16), torch.float32)
    expected = remap(x, u, "gaussian").sum().item()  # the parent has loaded and used it
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_remap_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == pytest.approx(expected, rel=1e-6)
