"""Shared pytest fixtures."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device under test: ``DIFFEOPROBE_TEST_DEVICE`` (default ``cpu``)."""
    return torch.device(os.environ.get("DIFFEOPROBE_TEST_DEVICE", "cpu"))
