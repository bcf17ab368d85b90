"""benchmarks/gpu_check.py runs on the CPU in CI, so that the device check never rots."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_device_check_passes_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert _module().main(["--device", "cpu", "--quick"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("PASS ") for line in lines) == 3, lines
    assert not any(line.startswith("FAIL ") for line in lines)
    assert sum(line.startswith("SPEED ") for line in lines) == 3  # deform, measure, training


def test_an_unusable_device_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert _module().main(["--device", "tpu"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
