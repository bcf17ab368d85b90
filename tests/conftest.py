"""Shared pytest fixtures."""

from __future__ import annotations

import os

import pytest
import torch

# no test reaches the network: a data set that must be downloaded counts as absent
os.environ.setdefault("DIFFEOPROBE_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _native_cache(tmp_path_factory):
    """Native kernels built by this session go to its own folder: the suite builds them itself
    (and so tests the build) instead of finding them in the user's cache."""
    saved = os.environ.get("DIFFEOPROBE_CACHE_DIR")
    os.environ["DIFFEOPROBE_CACHE_DIR"] = str(tmp_path_factory.mktemp("native-cache"))
    yield
    if saved is None:
        os.environ.pop("DIFFEOPROBE_CACHE_DIR", None)
    else:
        os.environ["DIFFEOPROBE_CACHE_DIR"] = saved


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device under test: ``DIFFEOPROBE_TEST_DEVICE`` (default ``cpu``)."""
    return torch.device(os.environ.get("DIFFEOPROBE_TEST_DEVICE", "cpu"))


@pytest.fixture(params=["native", "torch"])
def gaussian_path(request, monkeypatch) -> str:
    """Run a Gaussian-remap test on the native kernel and on the PyTorch formulation.

    The native kernel must build wherever a C compiler is found (CI has one): no silent skip.
    """
    from diffeoprobe.perturb import native

    if request.param == "torch":
        monkeypatch.setattr(native, "gaussian_remap", lambda x, displacement: None)
    elif native._compiler() is None:
        pytest.skip("no C compiler: the native Gaussian kernel cannot be built here")
    else:
        assert native.available(), native.status()
    return request.param
